// dualpipe search: per-rank orders that beat the built-in generators under
// the given (uneven) costs.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/json_output.h"
#include "dualpipe/pictures/svg.h"
#include "dualpipe/plan/search.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe::cli {

namespace {

struct Opts {
  plan::SearchRequest req;
  CostOptions cost;
  std::string format = "text", csv, svg, output = "-";
};

// The command itself, once its options are parsed: returns the exit code.
int search_command(Opts& o) {
  require_distinct_outputs({{"--output", o.output}, {"--csv", o.csv}, {"--svg", o.svg}});
  for (const auto& [opt, path] : {std::pair<const char*, const std::string&>{"--csv", o.csv},
                                  {"--svg", o.svg}, {"--output", o.output}})
    require_writable(opt, path);
  o.req.costs = make_costs(o.cost);
  o.req.progress = progress_lines("search");
  const plan::SearchResult r = plan::search(o.req);
  const SimResult& sim = r.sim;
  if (!o.csv.empty()) write_output(o.csv, to_csv(r.schedule));
  if (!o.svg.empty()) {
    SvgOptions so;
    so.title = fmt::format("search  P={} N={}  step {:g}, bubble {:g}", r.schedule.ranks, r.schedule.micro_batches,
                           sim.makespan, sim.bubble);
    so.subtitle = describe(o.req.costs);
    write_output(o.svg, timeline_svg(r.schedule, sim, so));
  }
  if (o.format == "json") {
    nlohmann::json j;
    j["ranks"] = r.schedule.ranks;
    j["stages"] = r.schedule.stages;
    j["micro_batches"] = r.schedule.micro_batches;
    j["makespan"] = sim.makespan;
    j["bubble"] = sim.bubble;
    j["bubble_ratio"] = sim.bubble_ratio;
    j["peak_activations"] = r.peak_activations;
    j["baseline"] = r.baseline_method.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.baseline_makespan);
    j["baseline_method"] = r.baseline_method;
    j["found_by"] = r.found_by;
    j["seed"] = o.req.seed;
    j["evaluations"] = r.evaluations;
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& rank : r.schedule.actions) {
      nlohmann::json row = nlohmann::json::array();
      for (const Action& a : rank) row.push_back(to_string(a));
      rows.push_back(std::move(row));
    }
    j["actions"] = std::move(rows);
    write_output(o.output, command_json("search", j));
    return 0;
  }
  std::string t = fmt::format("search: {} ranks, {} stages, {} micro-batches; costs {}{}\n", r.schedule.ranks,
                              r.schedule.stages, r.schedule.micro_batches, describe(o.req.costs),
                              o.req.max_activations ? fmt::format("; at most {} activations per rank",
                                                                   o.req.max_activations)
                                                     : "");
  t += fmt::format("step time {:g}   bubble {:g} ({:.2f}% of the step)   peak activations per rank {}\n",
                   sim.makespan, sim.bubble, 100 * sim.bubble_ratio, fmt::join(r.peak_activations, " "));
  if (r.baseline_method.empty())
    t += "no built-in generator fits this limit and shape\n";
  else
    t += fmt::format("best generator: {} with step {:g}; found {:g} ({:+.2f}%) by {}\n", r.baseline_method,
                     r.baseline_makespan, sim.makespan, 100 * (sim.makespan / r.baseline_makespan - 1), r.found_by);
  t += fmt::format("{} schedules simulated (seed {})\n", r.evaluations, o.req.seed);
  if (o.csv.empty()) t += "\n" + to_csv(r.schedule);
  write_output(o.output, t);
  return 0;
}

}  // namespace

void add_search_command(CLI::App* app, CommandRun& run) {
  auto o = std::make_shared<Opts>();
  auto* cmd = app->add_subcommand(
      "search", "search per-rank orders for a schedule faster than every built-in generator under the given costs");
  cmd->add_option("-p,--ranks", o->req.ranks, "pipeline ranks P")->required();
  cmd->add_option("-n,--micro-batches", o->req.micro_batches, "micro-batches N")->required();
  cmd->add_option("--stages", o->req.stages, "stages S (default: the per-stage cost lists' length, else P)");
  add_cost_options(cmd, o->cost);
  cmd->add_option("--max-activations", o->req.max_activations,
                  "most live stage activations per rank (as simulate counts them; 0: no limit)")
      ->capture_default_str();
  cmd->add_option("--from-method", o->req.from_method, "search only this method's placement (and beat it)");
  cmd->add_option("--chunks", o->req.chunks, kChunksHelp)->capture_default_str();
  cmd->add_option("--seed", o->req.seed, "seed of the randomised part (0..2^64-1)")
      ->capture_default_str();
  cmd->add_option("--iterations", o->req.iterations, "local-search moves")->capture_default_str();
  cmd->add_option("-f,--format", o->format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  cmd->add_option("--csv", o->csv, "write the schedule found as CSV ('-' for stdout)");
  cmd->add_option("--svg", o->svg, "write its simulated timeline as SVG");
  add_output_option(cmd, o->output);
  cmd->callback([o, &run] { run = [o] { return search_command(*o); }; });
}

}  // namespace dualpipe::cli
