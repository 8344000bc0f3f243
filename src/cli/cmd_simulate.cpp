// dualpipe simulate: step time, bubble and memory of a schedule under given costs.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "schedule/error.h"
#include "schedule/words.h"
#include "pictures/svg.h"
#include "pictures/trace.h"
#include "sim/simulate.h"

namespace dp::cli {

nlohmann::json simulation_json(const Schedule& s, const Costs& c, const SimResult& r) {
  nlohmann::json j;
  j["method"] = s.method;
  j["ranks"] = s.ranks;
  j["stages"] = s.stages;
  j["micro_batches"] = s.micro_batches;
  j["costs"] = {{"F", c.F}, {"B", c.B}, {"W", c.W}, {"FB", c.FB ? nlohmann::json(*c.FB) : nlohmann::json(nullptr)},
                {"transfer", c.transfer()}};
  j["makespan"] = r.makespan;
  j["bubble"] = r.bubble;
  j["bubble_ratio"] = r.bubble_ratio;
  const bool a2a = c.has_a2a();
  if (a2a) {
    const auto& bwd = c.a2a_bwd_bytes.empty() ? c.a2a_bytes : c.a2a_bwd_bytes;
    j["costs"]["a2a"] = {{"bytes", c.a2a_bytes}, {"bwd_bytes", bwd},          {"phases", c.a2a_phases},
                         {"rate", c.a2a_rate},   {"latency", c.a2a_latency}, {"fb_overlap", c.fb_overlap}};
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
  return j;
}

std::string simulation_text(const Schedule& s, const Costs& c, const SimResult& r) {
  std::string t = fmt::format("{}: {}, {}, {}; costs {}\n", s.method, count_of(s.ranks, "rank"),
                              count_of(s.stages, "stage"), count_of(s.micro_batches, "micro-batch"), describe(c));
  t += fmt::format("step time {:g}   bubble {:g} ({:.2f}% of the step, most idle rank)\n", r.makespan, r.bubble,
                   100.0 * r.bubble_ratio);
  const bool a2a = c.has_a2a();
  if (a2a)
    t += fmt::format("all-to-all {:g} in all, exposed {:g}, hidden {:.2f}% (F&B overlap {}; busy includes exposed)\n",
                     r.a2a_total, r.exposed_a2a, 100.0 * r.a2a_hidden, c.fb_overlap ? "on" : "off");
  t += "\n";
  t += fmt::format("{:>5} {:>10} {:>10} {:>8} {:>16} {:>7} {:>12}", "rank", "busy", "idle", "idle %",
                   "peak activations", "stages", "param copies");
  t += a2a ? fmt::format(" {:>11} {:>10}\n", "exposed a2a", "a2a total") : "\n";
  for (std::size_t i = 0; i < r.per_rank.size(); ++i) {
    const RankStats& st = r.per_rank[i];
    t += fmt::format("{:>5} {:>10g} {:>10g} {:>7.2f}% {:>16} {:>7} {:>12g}", i, st.busy, st.idle,
                     r.makespan > 0 ? 100.0 * st.idle / r.makespan : 0.0, st.peak_activations, st.stages_held,
                     st.param_copies);
    t += a2a ? fmt::format(" {:>11g} {:>10g}\n", st.exposed_a2a, st.a2a_total) : "\n";
  }
  return t;
}

void run_simulate(CLI::App* app) {
  struct Opts {
    SourceOptions src;
    CostOptions cost;
    std::string format = "text";
    std::string svg, trace;
    std::string output = "-";
    double svg_width = 0;
    std::string svg_time, svg_ranks;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app->add_subcommand("simulate", "simulate one training step: step time, bubble, memory per rank");
  add_source_options(cmd, o->src);
  add_cost_options(cmd, o->cost);
  cmd->add_option("-f,--format", o->format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->add_option("--svg", o->svg, "also write the timeline as an SVG picture");
  cmd->add_option("--svg-width", o->svg_width,
                  "width of the SVG in px (0: wide enough for every micro-batch number; numbers that do not fit "
                  "their cell are left out)")
      ->capture_default_str();
  cmd->add_option("--svg-time", o->svg_time, "draw only this part of the step, A:B in time units (e.g. 0:40, 100:)");
  cmd->add_option("--svg-ranks", o->svg_ranks, "draw only these ranks, A:B inclusive (e.g. 0:7)");
  cmd->add_option("--trace", o->trace, "also write a Chrome trace (opens in Perfetto)");
  cmd->add_option("-o,--output", o->output, "file for the report ('-' for stdout)")->capture_default_str();
  cmd->callback([o]() {
    if (o->svg.empty() && (o->svg_width != 0 || !o->svg_time.empty() || !o->svg_ranks.empty()))
      throw Error("--svg-width, --svg-time and --svg-ranks shape the --svg picture: add --svg FILE "
                  "(see dualpipe simulate --help)");
    Schedule s = load_schedule(o->src);
    Costs c = make_costs(o->cost);
    SimResult r = simulate(s, c);
    if (!o->svg.empty()) {
      SvgOptions so;
      so.title = fmt::format("{}  P={} N={}  step {:g}, bubble {:g}", s.method, s.ranks, s.micro_batches,
                             r.makespan, r.bubble);
      so.subtitle = describe(c);
      so.width = o->svg_width;
      if (!o->svg_time.empty()) parse_range("--svg-time", o->svg_time, so.time_from, so.time_to);
      if (!o->svg_ranks.empty()) {
        std::optional<double> a, b;
        parse_range("--svg-ranks", o->svg_ranks, a, b);
        so.rank_from = a ? static_cast<int>(*a) : 0;
        so.rank_to = b ? static_cast<int>(*b) : -1;
      }
      write_output(o->svg, timeline_svg(s, r, so));
      fmt::print(stderr, "wrote {} (timeline)\n", o->svg);
    }
    if (!o->trace.empty()) {
      write_output(o->trace, chrome_trace(s, r));
      fmt::print(stderr, "wrote {} (Chrome trace; open it in https://ui.perfetto.dev)\n", o->trace);
    }
    write_output(o->output, o->format == "json" ? simulation_json(s, c, r).dump(1) + "\n" : simulation_text(s, c, r));
  });
}

}  // namespace dp::cli
