// dualpipe schedule: print a schedule (generated or read) as a grid, CSV or JSON.
#include <fmt/format.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/json_output.h"
#include "dualpipe/pictures/grid.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/lower.h"
#include "cli/words.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe::cli {

nlohmann::json schedule_json(const Schedule& s) {
  nlohmann::json j;
  j["method"] = s.method;
  j["ranks"] = s.ranks;
  j["stages"] = s.stages;
  j["micro_batches"] = s.micro_batches;
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& rank : s.actions) {
    nlohmann::json row = nlohmann::json::array();
    for (const Action& a : rank) row.push_back(to_string(a));
    rows.push_back(std::move(row));
  }
  j["actions"] = std::move(rows);
  return j;
}

namespace {

struct Opts {
  SourceOptions src;
  bool with_comm = false;
  std::string format = "text";
  std::string output = "-";
};

// The command itself, once its options are parsed: returns the exit code.
int schedule_command(Opts& o) {
  Schedule s = load_schedule(o.src);
  if (o.with_comm && !s.has_comm()) s = lower(s);
  std::string text;
  if (o.format == "csv") {
    text = to_csv(s);
  } else if (o.format == "json") {
    text = command_json("schedule", schedule_json(s));
  } else {
    // The grid places actions at their simulated times under default costs.
    SimResult sim = simulate(s, Costs{});
    text = fmt::format("{}: {}, {}, {}, {}; checked: valid\n", s.method, count_of(s.ranks, "rank"),
                       count_of(s.stages, "stage"), count_of(s.micro_batches, "micro-batch"),
                       count_of(static_cast<long long>(s.action_count()), "action"));
    // On a terminal: colours, and the terminal's width ($COLUMNS or its own).
    GridOptions grid;
    grid.color = o.output == "-" && isatty(STDOUT_FILENO);
    grid.columns = o.output == "-" ? terminal_columns() : 0;
    text += terminal_grid(s, sim, grid);
  }
  write_output(o.output, text);
  return 0;
}

}  // namespace

void add_schedule_command(CLI::App* app, CommandRun& run) {
  auto o = std::make_shared<Opts>();
  o->src.list_errors = true;
  auto* cmd = app->add_subcommand("schedule", "print a schedule: every rank's actions in issue order");
  add_source_options(cmd, o->src);
  cmd->add_flag("--with-comm", o->with_comm, "lower first: add SEND_F/RECV_F/SEND_B/RECV_B actions");
  // text|json as in every command, csv for the schedule's own table form;
  // "table", the grid's first name, still works.
  cmd->add_option("-f,--format", o->format, "text (terminal grid), csv (PyTorch action strings) or json")
      ->transform(CLI::Validator(
          [](std::string& value) {
            if (value == "table") value = "text";
            return std::string();
          },
          ""))
      ->check(CLI::IsMember({"text", "csv", "json"}))
      ->capture_default_str();
  add_output_option(cmd, o->output);
  cmd->callback([o, &run] { run = [o] { return schedule_command(*o); }; });
}

}  // namespace dualpipe::cli
