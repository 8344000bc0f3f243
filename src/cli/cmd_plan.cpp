// dualpipe plan: the fastest schedule that fits memory, from a model's and a
// cluster's description (or a preset).
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/json_output.h"
#include "dualpipe/pictures/svg.h"
#include "dualpipe/plan/partition.h"
#include "dualpipe/plan/planner.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe::cli {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  for (std::size_t start = 0;;) {
    const auto comma = text.find(',', start);
    out.push_back(text.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// In GiB, or in MiB when the whole table is below 1 GiB (small models).
std::string memory_text(const RankMemory& m, double unit) {
  return fmt::format("{:.1f} ({:.1f}+{:.1f}+{:.1f}+{:.1f})", m.total() / unit, m.params / unit, m.grads / unit,
                     m.optimizer / unit, m.activations / unit);
}

// 671.0 B, 69.0 B, 204.5 k parameters.
std::string count_text(double n) {
  if (n >= 1e9) return fmt::format("{:.1f} B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.1f} M", n / 1e6);
  return fmt::format("{:.1f} k", n / 1e3);
}

std::string method_text(const plan::PlanRow& r) {
  return find_method(r.method).takes_chunks() ? fmt::format("{}/{}", r.method, r.chunks) : r.method;
}

nlohmann::json row_json(const plan::PlanRow& r) {
  nlohmann::json j = {{"method", r.method},
                      {"chunks", r.chunks},
                      {"pp", r.par.pp},
                      {"tp", r.par.tp},
                      {"dp", r.par.dp},
                      {"ep", r.par.ep},
                      {"micro_batch_size", r.par.micro_batch_size},
                      {"micro_batches", r.micro_batches},
                      {"recompute", plan::recompute_name(r.par.recompute)},
                      {"layout", r.layout},
                      {"step_s", r.step_s},
                      {"pipeline_s", r.pipeline_s},
                      {"bubble_ratio", r.bubble_ratio},
                      {"exposed_comm_s", r.exposed_comm_s},
                      {"dp_sync_s", r.dp_sync_s},
                      {"dp_sync_total_s", r.dp_sync_total_s},
                      {"peak_rank", r.peak_rank},
                      {"memory_gib",
                       {{"params", r.peak.params / kGiB},
                        {"grads", r.peak.grads / kGiB},
                        {"optimizer", r.peak.optimizer / kGiB},
                        {"activations", r.peak.activations / kGiB},
                        {"reserve", r.reserve_bytes / kGiB},
                        {"total", (r.peak.total() + r.reserve_bytes) / kGiB}}},
                      {"executable", r.not_executable.empty()},
                      {"not_executable", r.not_executable}};
  if (r.split.valid) {
    const plan::StepSplit& s = r.split;
    j["breakdown_s"] = {{"compute", s.compute},         {"recompute", s.recompute},
                        {"bubble", s.bubble},           {"expert_comm", s.expert_comm},
                        {"pipeline_comm", s.pipeline_comm}, {"tp_comm", s.tp_comm},
                        {"dp_sync", s.dp_sync}};
  }
  return j;
}

// "1: step 21.3 s = compute 15.2 + ...; memory ...; runs here: ..."
std::string explain_text(std::size_t rank, const plan::PlanRow& r, double unit) {
  std::string t = fmt::format("{:>3}: ", rank);
  if (r.split.valid) {
    const plan::StepSplit& s = r.split;
    t += fmt::format("step {:.4g} s = compute {:.3g} + recompute {:.3g} + bubble {:.3g} + expert comm {:.3g} + "
                     "pipeline comm {:.3g} + TP comm {:.3g} + DP sync {:.3g}; ",
                     r.step_s, s.compute, s.recompute, s.bubble, s.expert_comm, s.pipeline_comm, s.tp_comm, s.dp_sync);
  }
  const char* u = unit == kGiB ? "GiB" : "MiB";
  t += fmt::format("memory {:.1f} {} = params {:.1f} + grads {:.1f} + optimizer {:.1f} + activations {:.1f} + "
                   "reserve {:.1f}; runs on this project's runtime: {}\n",
                   (r.peak.total() + r.reserve_bytes) / unit, u, r.peak.params / unit, r.peak.grads / unit,
                   r.peak.optimizer / unit, r.peak.activations / unit, r.reserve_bytes / unit,
                   r.not_executable.empty() ? "yes" : fmt::format("no ({})", fmt::join(r.not_executable, ", ")));
  return t;
}

const char* recompute_short(plan::Recompute r) {
  switch (r) {
    case plan::Recompute::None: return "-";
    case plan::Recompute::Selective: return "sel";
    case plan::Recompute::Full: return "full";
  }
  return "";
}

// Sequences per step as written; one beyond plan's range is refused as
// given (not as the largest long long it would saturate to).
long long global_batch_value(const std::string& text) {
  constexpr long long kMax = 1LL << 40;
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v < 1 || v > kMax)
    throw Error(fmt::format("--global-batch must be a whole number of sequences in [1, {}] (got '{}')", kMax, text));
  return v;
}

}  // namespace

std::string plan_table(const plan::PlanRequest& req, const plan::PlanResult& res, std::size_t top) {
  const double limit = req.memory_limit_gib > 0 ? req.memory_limit_gib : req.cluster.memory_gib;
  double largest = 0;
  for (std::size_t i = 0; i < res.rows.size() && i < top; ++i) largest = std::max(largest, res.rows[i].peak.total());
  const double unit = largest >= kGiB ? kGiB : kGiB / 1024;
  std::string t = fmt::format(
      "plan {} ({} parameters, {} active) on {}: {} devices, {} per node, {:g} GiB each\n"
      "global batch {} sequences of {} tokens; memory limit {:g} GiB; {} candidates, {} fit and were simulated, {} "
      "fit but were pruned (bounded slower than row {}), {} over memory\n",
      req.model.name, count_text(plan::total_params(req.model)), count_text(plan::active_params(req.model)),
      req.cluster.name,
      req.cluster.devices, req.cluster.devices_per_node, req.cluster.memory_gib, req.global_batch, req.model.seq_len,
      limit, res.candidates, res.simulated, res.pruned, top, res.over_memory);
  t += fmt::format("{:>3} {:<20} {:>4} {:>3} {:>5} {:>4} {:>4} {:>5} {:>4} {:>10} {:>7} {:>9} {:>8} {:>32}  {}\n",
                   "#", "method", "pp", "tp", "dp", "ep", "mbs", "N", "rc", "step s", "bubble", "exp.comm", "dp sync",
                   unit == kGiB ? "peak GiB (params+grads+optim+act)" : "peak MiB (params+grads+optim+act)",
                   "layers per stage");
  for (std::size_t i = 0; i < res.rows.size() && i < top; ++i) {
    const plan::PlanRow& r = res.rows[i];
    t += fmt::format(
        "{:>3} {:<20} {:>4} {:>3} {:>5} {:>4} {:>4} {:>5} {:>4} {:>10.4g} {:>6.2f}% {:>9.3g} {:>8.3g} {:>32}  {}\n", i + 1,
        method_text(r), r.par.pp, r.par.tp, r.par.dp, r.par.ep, r.par.micro_batch_size, r.micro_batches,
        recompute_short(r.par.recompute), r.step_s, 100 * r.bubble_ratio, r.exposed_comm_s, r.dp_sync_s,
        memory_text(r.peak, unit), plan::layout_text(r.layout));
  }
  t += "rc: activation recomputation (sel: selective); step: simulated pipeline step + exposed data-parallel sync; "
       "bubble: idle time of the most idle device / step; exp.comm: step with communication minus without; peak: "
       "the device with the most memory\n";
  t += "the busiest device's step and the peak device's memory, in parts:\n";
  for (std::size_t i = 0; i < res.rows.size() && i < top; ++i) t += explain_text(i + 1, res.rows[i], unit);
  return t;
}

namespace {

struct PlanOpts {
  std::string preset, model, cluster, profile;
  std::string global_batch;  // text: a number too large for long long is refused as given
  double memory_limit = 0;
  bool memory_limit_given = false;
  std::string methods, layout;
  int pp = 0, ep = 0, tp = 0, micro_batch_size = 0;
  bool no_zero1 = false, no_dp_overlap = false;
  std::string recompute;
  std::size_t top = 10;
  std::string format = "text", csv, svg, output = "-";
  double svg_width = 0;
};

plan::PlanRequest plan_request(const PlanOpts& o) {
  plan::PlanRequest req;
  if (!o.preset.empty()) {
    plan::Preset p = plan::load_preset(o.preset);
    req.model = std::move(p.model);
    req.cluster = std::move(p.cluster);
  } else if (o.model.empty() || o.cluster.empty()) {
    throw Error("give --preset NAME, or both --model FILE.json and --cluster FILE.json");
  }
  if (!o.model.empty()) req.model = plan::read_model_file(o.model);
  if (!o.cluster.empty()) req.cluster = plan::read_cluster_file(o.cluster);
  if (!o.recompute.empty()) req.model.recompute = o.recompute;
  if (!o.profile.empty()) {
    req.use_measured = true;
    req.measured = plan::read_measured_file(o.profile);
  }
  req.global_batch = global_batch_value(o.global_batch);
  if (o.memory_limit_given && !(o.memory_limit > 0 && o.memory_limit <= 1e9))
    throw Error(fmt::format("--memory-limit must be in (0, 1e9] GiB (got {})", o.memory_limit));
  req.memory_limit_gib = o.memory_limit;
  req.methods = split_list(o.methods);
  if (o.top < 1) throw Error(fmt::format("--top must be at least 1 (got {})", o.top));
  req.pp = o.pp;
  req.ep = o.ep;
  req.tp = o.tp;
  req.overlap_dp_sync = !o.no_dp_overlap;
  req.rows_wanted = o.top;
  req.micro_batch_size = o.micro_batch_size;
  req.layout = o.layout;
  req.zero1 = !o.no_zero1;
  return req;
}

// --csv and --svg: the best plan's schedule and its simulated timeline.
void write_best(const PlanOpts& o, const plan::PlanRequest& req, const plan::PlanRow& best) {
  if (o.csv.empty() && o.svg.empty()) return;
  const plan::BuiltPlan b = plan::build_plan(req, best);
  if (!o.csv.empty()) {
    write_output(o.csv, to_csv(b.schedule));
    fmt::print(stderr, "wrote {} (the best plan's schedule)\n", o.csv);
  }
  if (o.svg.empty()) return;
  const SimResult sim = simulate(b.schedule, b.costs);
  SvgOptions so;
  // The step as the table gives it: the pipeline drawn plus the exposed data-parallel sync.
  so.title = fmt::format("{} for {}: pp={} tp={} dp={} ep={}, {} micro-batches of {}; step {:.4g} s", method_text(best),
                         req.model.name, best.par.pp, best.par.tp, best.par.dp, best.par.ep, best.micro_batches,
                         best.par.micro_batch_size, best.step_s);
  so.subtitle = fmt::format("pipeline {:.4g} s + data-parallel sync {:.3g} s; layers per stage {}", sim.makespan,
                            best.dp_sync_s, plan::layout_text(best.layout));
  so.width = o.svg_width;
  write_output(o.svg, timeline_svg(b.schedule, sim, so));
  fmt::print(stderr, "wrote {} (the best plan's simulated timeline)\n", o.svg);
}

std::string plan_json(const plan::PlanRequest& req, const plan::PlanResult& res, std::size_t top) {
  nlohmann::json j;
  j["model"] = req.model.name;
  j["cluster"] = req.cluster.name;
  j["global_batch"] = req.global_batch;
  j["memory_limit_gib"] = req.memory_limit_gib > 0 ? req.memory_limit_gib : req.cluster.memory_gib;
  j["candidates"] = res.candidates;
  j["simulated"] = res.simulated;
  j["over_memory"] = res.over_memory;
  j["pruned"] = res.pruned;
  nlohmann::json rows = nlohmann::json::array();
  for (std::size_t i = 0; i < res.rows.size() && i < top; ++i) rows.push_back(row_json(res.rows[i]));
  j["plans"] = std::move(rows);
  return command_json("plan", j);
}

// The command itself, once its options are parsed: returns the exit code.
int plan_command(const PlanOpts& o) {
  require_distinct_outputs({{"--output", o.output}, {"--csv", o.csv}, {"--svg", o.svg}});
  for (const auto& [opt, path] : {std::pair<const char*, const std::string&>{"--csv", o.csv},
                                  {"--svg", o.svg}, {"--output", o.output}})
    require_writable(opt, path);
  if (o.svg.empty() && o.svg_width != 0)
    throw Error("--svg-width shapes the --svg picture: add --svg FILE (see dualpipe plan --help)");
  check_svg_width(o.svg_width);
  plan::PlanRequest req = plan_request(o);
  req.progress = progress_lines("plan");
  const plan::PlanResult res = plan::plan(req);
  write_best(o, req, res.rows.front());
  write_output(o.output, o.format == "json" ? plan_json(req, res, o.top) : plan_table(req, res, o.top));
  return 0;
}

}  // namespace

void add_plan_command(CLI::App* app, CommandRun& run) {
  auto o = std::make_shared<PlanOpts>();
  std::string presets;
  for (const std::string& n : plan::preset_names()) presets += (presets.empty() ? "" : ", ") + n;
  auto* cmd = app->add_subcommand("plan", "choose the schedule, degrees, micro-batches and cut for a model on a cluster");
  cmd->add_option("--preset", o->preset, "model and cluster preset: " + presets);
  cmd->add_option("--model", o->model, "model description (JSON; overrides the preset's)");
  cmd->add_option("--cluster", o->cluster, "cluster description (JSON; overrides the preset's)");
  cmd->add_option("--profile", o->profile, "per-layer costs measured by dualpipe profile (JSON), in place of the formulas");
  cmd->add_option("--global-batch", o->global_batch, "sequences per training step")->required();
  CLI::Option* mem = cmd->add_option("--memory-limit", o->memory_limit, "GiB per device (default: the cluster's memory)");
  cmd->add_option("--methods", o->methods, "only these methods, comma-separated (default: all but combined-1f1b)");
  // A degree given is fixed: 0 is not "let the planner choose" (that is leaving the option out).
  const CLI::Validator fixed(
      [](std::string& v) {
        return std::strtol(v.c_str(), nullptr, 10) >= 1 ? std::string()
                                                         : "must be at least 1 (got " + v + "); leave it out to choose";
      },
      "");
  // -p/--ranks as in every other command; --pp, its first spelling, still works.
  CLI::Option* ranks =
      cmd->add_option("-p,--ranks", o->pp, "fix the pipeline ranks P (the pipeline degree)")->check(fixed);
  CLI::Option* pp = cmd->add_option("--pp", o->pp, "the same as --ranks")->group("")->check(fixed);
  cmd->add_option("--ep", o->ep, "fix the expert-parallel degree")->check(fixed);
  cmd->add_option("--tp", o->tp, "fix the tensor-parallel degree (with sequence parallelism; within a node)")
      ->check(fixed);
  cmd->add_option("--micro-batch-size", o->micro_batch_size, "fix the sequences per micro-batch")->check(fixed);
  cmd->add_option("--layout", o->layout, "layers per stage by hand: 8,8,8,7 or Et*8|t*8|t*8|t*7L (E|...|L: no layer)");
  cmd->add_option("--recompute", o->recompute,
                  "activation recomputation: auto (try all), none, selective or full (default: the model's "
                  "\"recompute\", else auto)")
      ->check(CLI::IsMember({"auto", "none", "selective", "full"}));
  cmd->add_flag("--no-zero1", o->no_zero1, "keep the whole optimizer state on every replica");
  cmd->add_flag("--no-dp-overlap", o->no_dp_overlap, "the data-parallel sync after the step, not overlapped");
  cmd->add_option("--top", o->top, "rows of the table")->capture_default_str();
  cmd->add_option("-f,--format", o->format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  cmd->add_option("--csv", o->csv, "write the best plan's schedule as CSV");
  cmd->add_option("--svg", o->svg, "write the best plan's simulated timeline as SVG");
  add_svg_width_option(cmd, o->svg_width);
  add_output_option(cmd, o->output);
  cmd->callback([o, mem, ranks, pp, &run] {
    o->memory_limit_given = mem->count() > 0;
    if (ranks->count() > 0 && pp->count() > 0) throw Error("--pp is --ranks by its first name: give one");
    run = [o] { return plan_command(*o); };
  });
}

}  // namespace dualpipe::cli
