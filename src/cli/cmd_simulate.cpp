// dualpipe simulate: step time, bubble and memory of a schedule under given costs.
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <optional>

#include "cli/common.h"
#include "cli/json_output.h"
#include "cli/data_parallel_options.h"
#include "dualpipe/schedule/error.h"
#include "cli/words.h"
#include "dualpipe/pictures/svg.h"
#include "dualpipe/pictures/trace.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe::cli {

// What the data-parallel options add to a simulation: the gradient
// reductions (when there are gradient bytes) and the memory table (when
// there are any bytes).
struct DataParallelReport {
  DataParallel d;
  double limit_gib = 0;
  std::optional<GradReduce> reduce;
  std::vector<RankMemory> memory;
};

namespace {

DataParallelReport data_parallel_report(const Schedule& s, const SimResult& r, const DataParallelOptions& o) {
  DataParallelReport rep;
  rep.d = make_data_parallel(o);
  rep.limit_gib = o.memory_limit_gib;
  if (rep.d.reduces()) rep.reduce = reduce_gradients(s, r, rep.d);
  if (rep.d.has_memory()) rep.memory = rank_memory(s, rep.d);
  return rep;
}

void add_data_parallel_json(nlohmann::json& j, const DataParallelReport& rep) {
  const DataParallel& d = rep.d;
  if (!rep.reduce && rep.memory.empty()) return;
  j["data_parallel"] = {{"dp", d.replicas},         {"zero", d.zero1 ? 1 : 0},       {"grad_bytes", d.grad_bytes},
                        {"param_bytes", d.param_bytes}, {"act_mem_bytes", d.act_mem_bytes}, {"dp_rate", d.rate},
                        {"grad_buckets", d.buckets}, {"overlap_grad_reduce", d.overlap}};
  nlohmann::json& ranks = j["per_rank"];
  if (rep.reduce) {
    j["step_with_grad_reduce"] = rep.reduce->step;
    j["exposed_grad_reduce"] = rep.reduce->exposed;
    j["grad_reduce_link"] = rep.reduce->link;
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      const RankReduce& rr = rep.reduce->per_rank[i];
      ranks[i].update({{"grad_reduce_link", rr.link}, {"exposed_grad_reduce", rr.exposed}, {"end", rr.end}});
    }
  }
  if (!rep.memory.empty()) {
    std::size_t peak = 0;
    for (std::size_t i = 0; i < rep.memory.size(); ++i) {
      ranks[i]["memory_bytes"] = memory_json(rep.memory[i], rep.limit_gib);
      if (rep.memory[i].total() > rep.memory[peak].total()) peak = i;
    }
    j["peak_memory_rank"] = peak;
    j["peak_memory_bytes"] = rep.memory[peak].total();
    if (rep.limit_gib > 0) {
      j["memory_limit_bytes"] = rep.limit_gib * 1024.0 * 1024.0 * 1024.0;
      j["fits"] = rep.memory[peak].total() <= rep.limit_gib * 1024.0 * 1024.0 * 1024.0;
    }
  }
}

}  // namespace

nlohmann::json simulation_json(const Schedule& s, const Costs& c, const SimResult& r,
                               const DataParallelReport& rep = {}) {
  nlohmann::json j;
  j["method"] = s.method;
  j["ranks"] = s.ranks;
  j["stages"] = s.stages;
  j["micro_batches"] = s.micro_batches;
  j["costs"] = {{"F", c.F}, {"B", c.B}, {"W", c.W}, {"FB", c.FB ? nlohmann::json(*c.FB) : nlohmann::json(nullptr)},
                {"transfer", c.transfer()},
                {"link", link_name(c.link)}};
  j["makespan"] = r.makespan;
  j["bubble"] = r.bubble;
  j["bubble_ratio"] = r.bubble_ratio;
  const bool a2a = c.has_a2a();
  if (a2a) {
    const auto& bwd = c.a2a_bwd_bytes.empty() ? c.a2a_bytes : c.a2a_bwd_bytes;
    j["costs"]["a2a"] = {{"bytes", c.a2a_bytes}, {"bwd_bytes", bwd},          {"phases", c.a2a_phases},
                         {"rate", c.a2a_rate},   {"latency", c.a2a_latency}, {"fb_overlap", c.fb_overlap},
                         {"fill_waits", c.fill_waits}};
    j["a2a_total"] = r.a2a_total;
    j["exposed_a2a"] = r.exposed_a2a;
    j["a2a_hidden"] = r.a2a_hidden;
  }
  nlohmann::json ranks = nlohmann::json::array();
  for (std::size_t i = 0; i < r.per_rank.size(); ++i) {
    const RankStats& st = r.per_rank[i];
    ranks.push_back({{"rank", i},
                     {"busy", st.busy},
                     {"idle", st.idle},
                     {"peak_activations", st.peak_activations},
                     {"stages_held", st.stages_held},
                     {"param_copies", st.param_copies}});
    if (a2a) ranks.back().update({{"exposed_a2a", st.exposed_a2a}, {"a2a_total", st.a2a_total}});
  }
  j["per_rank"] = std::move(ranks);
  add_data_parallel_json(j, rep);
  return j;
}

std::string simulation_text(const Schedule& s, const Costs& c, const SimResult& r,
                            const DataParallelReport& rep = {}) {
  std::string t = fmt::format("{}: {}, {}, {}; costs {}\n", s.method, count_of(s.ranks, "rank"),
                              count_of(s.stages, "stage"), count_of(s.micro_batches, "micro-batch"), describe(c));
  t += fmt::format("step time {:g}   bubble {:g} ({:.2f}% of the step, most idle rank)\n", r.makespan, r.bubble,
                   100.0 * r.bubble_ratio);
  const bool a2a = c.has_a2a();
  if (a2a)
    t += fmt::format("all-to-all {:g} in all, exposed {:g}, hidden {:.2f}% (F&B overlap {}; busy includes exposed)\n",
                     r.a2a_total, r.exposed_a2a, 100.0 * r.a2a_hidden, c.fb_overlap ? "on" : "off");
  const bool dpr = rep.reduce.has_value();
  if (dpr || !rep.memory.empty()) t += fmt::format("data parallel {}\n", describe_data_parallel(rep.d));
  if (dpr)
    t += fmt::format("step with gradient reduction {:g} (exposed {:g} after the pipeline's {:g}); dp link busy {:g} "
                     "in all\n",
                     rep.reduce->step, rep.reduce->exposed, r.makespan, rep.reduce->link);
  t += "\n";
  t += fmt::format("{:>5} {:>10} {:>10} {:>8} {:>16} {:>7} {:>12}", "rank", "busy", "idle", "idle %",
                   "peak activations", "stages", "param copies");
  t += a2a ? fmt::format(" {:>11} {:>10}", "exposed a2a", "a2a total") : "";
  t += dpr ? fmt::format(" {:>10} {:>10}\n", "dp link", "dp exposed") : "\n";
  for (std::size_t i = 0; i < r.per_rank.size(); ++i) {
    const RankStats& st = r.per_rank[i];
    t += fmt::format("{:>5} {:>10g} {:>10g} {:>7.2f}% {:>16} {:>7} {:>12g}", i, st.busy, st.idle,
                     r.makespan > 0 ? 100.0 * st.idle / r.makespan : 0.0, st.peak_activations, st.stages_held,
                     st.param_copies);
    t += a2a ? fmt::format(" {:>11g} {:>10g}", st.exposed_a2a, st.a2a_total) : "";
    t += dpr ? fmt::format(" {:>10g} {:>10g}\n", rep.reduce->per_rank[i].link, rep.reduce->per_rank[i].exposed)
             : "\n";
  }
  if (dpr)
    t += "dp link: time the rank's data-parallel link reduced gradients; dp exposed: what the rank adds after its "
         "last compute\n";
  if (!rep.memory.empty()) t += "\n" + memory_table(rep.memory, rep.limit_gib);
  return t;
}

namespace {

struct Opts {
  SourceOptions src;
  CostOptions cost;
  DataParallelOptions dpo;
  std::string format = "text";
  std::string svg, trace;
  std::string output = "-";
  double svg_width = 0;
  std::string svg_time, svg_ranks;
};

// The command itself, once its options are parsed: returns the exit code.
int simulate_command(Opts& o) {
  if (o.svg.empty() && (o.svg_width != 0 || !o.svg_time.empty() || !o.svg_ranks.empty()))
    throw Error("--svg-width, --svg-time and --svg-ranks shape the --svg picture: add --svg FILE "
                "(see dualpipe simulate --help)");
  check_svg_width(o.svg_width);
  require_distinct_outputs({{"--output", o.output}, {"--svg", o.svg}, {"--trace", o.trace}});
  Schedule s = load_schedule(o.src);
  Costs c = make_costs(o.cost);
  make_data_parallel(o.dpo);  // bad options fail before the simulation
  SimResult r = simulate(s, c);
  const DataParallelReport rep = data_parallel_report(s, r, o.dpo);
  if (!o.svg.empty()) {
    SvgOptions so;
    so.title = fmt::format("{}  P={} N={}  step {:g}, bubble {:g}", s.method, s.ranks, s.micro_batches,
                           r.makespan, r.bubble);
    so.subtitle = describe(c);
    so.width = o.svg_width;
    if (!o.svg_time.empty()) parse_range("--svg-time", o.svg_time, so.time_from, so.time_to);
    if (!o.svg_ranks.empty()) {
      std::optional<double> a, b;
      parse_range("--svg-ranks", o.svg_ranks, a, b);
      so.rank_from = a ? static_cast<int>(*a) : 0;
      so.rank_to = b ? static_cast<int>(*b) : -1;
    }
    write_output(o.svg, timeline_svg(s, r, so));
    fmt::print(stderr, "wrote {} (timeline)\n", o.svg);
  }
  if (!o.trace.empty()) {
    write_output(o.trace, chrome_trace(s, r));
    fmt::print(stderr, "wrote {} (Chrome trace; open it in https://ui.perfetto.dev)\n", o.trace);
  }
  write_output(o.output,
               o.format == "json" ? command_json("simulate", simulation_json(s, c, r, rep))
                                  : simulation_text(s, c, r, rep));
  return 0;
}

}  // namespace

void add_simulate_command(CLI::App* app, CommandRun& run) {
  auto o = std::make_shared<Opts>();
  auto* cmd = app->add_subcommand("simulate", "simulate one training step: step time, bubble, memory per rank");
  add_source_options(cmd, o->src);
  add_cost_options(cmd, o->cost);
  add_data_parallel_options(cmd, o->dpo);
  cmd->add_option("-f,--format", o->format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->add_option("--svg", o->svg, "also write the timeline as an SVG picture");
  add_svg_width_option(cmd, o->svg_width);
  cmd->add_option("--svg-time", o->svg_time, "draw only this part of the step, A:B in time units (e.g. 0:40, 100:)");
  cmd->add_option("--svg-ranks", o->svg_ranks, "draw only these ranks, A:B inclusive (e.g. 0:7)");
  cmd->add_option("--trace", o->trace, "also write a Chrome trace (opens in Perfetto)");
  add_output_option(cmd, o->output);
  cmd->callback([o, &run] { run = [o] { return simulate_command(*o); }; });
}

}  // namespace dualpipe::cli
