// dualpipe compare: the published comparison table, computed.
#include <fmt/format.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/json_output.h"
#include "cli/data_parallel_options.h"
#include "cli/words.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/sim/compare.h"

namespace dualpipe::cli {

namespace {

struct Opts {
  int ranks = 0, micro_batches = 0, chunks = 2;
  CostOptions cost;
  DataParallelOptions dpo;
  std::string format = "text";
  std::string output = "-";
  // Devices by default, so that --ranks means what it means in simulate.
  std::string basis = "devices";
};

// The options that a row's simulate command shares with compare's, as given.
std::string shared_options(const Opts& o) {
  const CostOptions& c = o.cost;
  const DataParallelOptions& d = o.dpo;
  std::string s;
  if (c.latency != 0) s += fmt::format(" --comm-latency {}", c.latency);
  if (c.bandwidth != 0) s += fmt::format(" --comm-bandwidth {}", c.bandwidth);
  if (c.act_bytes != 0) s += fmt::format(" --act-bytes {}", c.act_bytes);
  if (c.a2a_rate != 0) s += fmt::format(" --a2a-rate {}", c.a2a_rate);
  if (c.a2a_latency != 0) s += fmt::format(" --a2a-latency {}", c.a2a_latency);
  if (c.fb_overlap != "on") s += " --fb-overlap " + c.fb_overlap;
  if (c.fill_waits != "off") s += " --fill-waits " + c.fill_waits;
  if (c.link != "apart") s += " --link " + c.link;
  if (d.dp != 1) s += fmt::format(" --dp {}", d.dp);
  if (d.zero != 0) s += fmt::format(" --zero {}", d.zero);
  if (d.rate != 0) s += fmt::format(" --dp-rate {}", d.rate);
  if (d.buckets != 1) s += fmt::format(" --grad-buckets {}", d.buckets);
  if (d.overlap != "on") s += " --overlap-grad-reduce " + d.overlap;
  if (d.memory_limit_gib != 0) s += fmt::format(" --memory-limit {}", d.memory_limit_gib);
  return s;
}

// The options that differ between rows: the costs and byte sizes of the
// row's own stages (a finer cut divides them), printed to round-trip, one
// value where every stage has the same.
std::string stage_options(const CompareRow& r) {
  auto list = [](const auto& v) {
    const bool same = std::all_of(v.begin(), v.end(), [&](const auto& x) { return x == v.front(); });
    return same ? fmt::format("{}", v.front()) : fmt::format("{}", fmt::join(v, ":"));
  };
  const Costs& c = r.costs;
  std::string s = fmt::format("--cost F={},B={},W={}", list(c.F), list(c.B), list(c.W));
  if (c.FB) s += fmt::format(",FB={}", *c.FB);
  if (c.has_a2a()) {
    s += " --a2a-bytes " + list(c.a2a_bytes);
    if (!c.a2a_bwd_bytes.empty()) s += " --a2a-bwd-bytes " + list(c.a2a_bwd_bytes);
    s += " --a2a-phases " + list(c.a2a_phases);
  }
  const DataParallel& d = r.data_parallel;
  if (!d.grad_bytes.empty()) s += " --grad-bytes " + list(d.grad_bytes);
  if (!d.param_bytes.empty()) s += " --param-bytes " + list(d.param_bytes);
  if (std::any_of(d.act_mem_bytes.begin(), d.act_mem_bytes.end(), [](double b) { return b != 0; }))
    s += " --act-mem-bytes " + list(d.act_mem_bytes);
  return s;
}

// The simulate command that gives the row's figures: its method on its
// devices, with its stages' costs.
std::string simulate_args(const Opts& o, const CompareRow& r) {
  const bool chunks = find_method(r.method).takes_chunks();
  return fmt::format("-p {} -n {}{} {}{}", r.devices, o.micro_batches,
                     chunks ? fmt::format(" --chunks {}", o.chunks) : "", stage_options(r), shared_options(o));
}

// What the rows show besides the schedule's own figures.
struct Extras {
  bool a2a = false, dpr = false, mem = false;
  double limit = 0;  // GiB per device; 0: none given
};

nlohmann::json row_json(const Opts& o, const CompareRow& r, const Extras& x) {
  nlohmann::json row = {{"method", r.method}, {"devices", r.devices}};
  if (!r.error.empty()) {
    row["error"] = r.error;
  } else {
    // Published activations: a number, {"min", "max"} for a range,
    // null where the literature gives none; "approximate" flags "~".
    nlohmann::json act = nullptr;
    if (r.published_activations_max)
      act = {{"min", *r.published_activations_value}, {"max", *r.published_activations_max}};
    else if (r.published_activations_value)
      act = *r.published_activations_value;
    row.update({{"stages", r.stages},
                {"makespan", r.makespan},
                {"bubble", r.bubble},
                {"bubble_ratio", r.bubble_ratio},
                {"published_bubble", r.published_bubble ? nlohmann::json(*r.published_bubble) : nullptr},
                {"params_per_device", r.params_per_device},
                {"peak_activations", r.peak_activations},
                {"published_activations", act},
                {"published_activations_approximate", r.published_activations_approx},
                {"simulate", fmt::format("dualpipe simulate -m {} {}", r.method, simulate_args(o, r))}});
    if (x.a2a) row.update({{"exposed_a2a", r.exposed_a2a}, {"a2a_hidden", r.a2a_hidden}});
    if (x.dpr)
      row.update({{"step_with_grad_reduce", r.step_with_grad_reduce},
                  {"exposed_grad_reduce", r.exposed_grad_reduce}});
    if (x.mem) row.update({{"peak_memory_rank", r.peak_memory_rank},
                         {"peak_memory", memory_json(r.peak_memory, x.limit)}});
  }
  return row;
}

// The step a row is ranked by: with the gradient reductions where they are modelled.
double ranked_step(const CompareRow& r, const Extras& x) { return x.dpr ? r.step_with_grad_reduce : r.makespan; }

// The methods with the shortest step (several when they tie).
std::vector<std::string> fastest(const std::vector<CompareRow>& rows, const Extras& x) {
  double best = 0;
  std::vector<std::string> names;
  for (const CompareRow& r : rows) {
    if (!r.error.empty()) continue;
    const double step = ranked_step(r, x);
    if (names.empty() || step < best) {
      best = step;
      names.clear();
    }
    if (step == best) names.push_back(r.method);
  }
  return names;
}

// An object: the inputs, then one row per method.
nlohmann::json compare_json(const Opts& o, const Costs& c, const DataParallel& dpo, const std::vector<CompareRow>& rows,
                            const Extras& x) {
  nlohmann::json j = nlohmann::json::array();
  for (const CompareRow& r : rows) j.push_back(row_json(o, r, x));
  nlohmann::json doc = {{"ranks", o.ranks},
                        {"micro_batches", o.micro_batches},
                        {"chunks", o.chunks},
                        {"basis", o.basis},
                        {"costs",
                         {{"F", c.F},
                          {"B", c.B},
                          {"W", c.W},
                          {"FB", c.FB ? nlohmann::json(*c.FB) : nullptr},
                          {"transfer", c.transfer()}}},
                        {"rows", std::move(j)},
                        {"fastest", fastest(rows, x)}};
  if (x.dpr || x.mem) {
    doc["data_parallel"] = {{"dp", dpo.replicas},         {"zero", dpo.zero1 ? 1 : 0},
                            {"grad_bytes", dpo.grad_bytes}, {"param_bytes", dpo.param_bytes},
                            {"act_mem_bytes", dpo.act_mem_bytes}, {"dp_rate", dpo.rate},
                            {"grad_buckets", dpo.buckets}, {"overlap_grad_reduce", dpo.overlap}};
    if (x.limit > 0) doc["memory_limit_bytes"] = x.limit * 1024.0 * 1024.0 * 1024.0;
  }
  return doc;
}

// One method's line of the text table.
std::string row_text(const CompareRow& r, const Extras& x) {
  std::string text;
  if (!r.error.empty()) {
    text += fmt::format("{:<17} {:>7}  n/a: {}\n", r.method, r.devices, r.error);
    return text;
  }
  text += fmt::format("{:<17} {:>7} {:>6} {:>9g} {:>9g} {:>10} {:>6.2f}% {:>9g}x {:>11g} {:>10}\n", r.method,
                      r.devices, r.stages, r.makespan, r.bubble,
                      r.published_bubble ? fmt::format("{:g}", *r.published_bubble) : std::string("-"),
                      100.0 * r.bubble_ratio, r.params_per_device, r.peak_activations,
                      r.published_activations);
  if (x.a2a)
    text.insert(text.size() - 1, fmt::format(" {:>11g} {:>6.2f}%", r.exposed_a2a, 100.0 * r.a2a_hidden));
  if (x.dpr)
    text.insert(text.size() - 1, fmt::format(" {:>10g} {:>10g}", r.step_with_grad_reduce, r.exposed_grad_reduce));
  if (x.mem) {
    const RankMemory& m = r.peak_memory;
    const double gib = 1024.0 * 1024.0 * 1024.0;
    text.insert(text.size() - 1,
                fmt::format(" {:>8.2f} {:>28}{}", m.total() / gib,
                            fmt::format("({:.2f}+{:.2f}+{:.2f}+{:.2f})", m.params / gib, m.grads / gib,
                                        m.optimizer / gib, m.activations / gib),
                            x.limit > 0 ? (m.total() <= x.limit * gib ? "   yes" : "    NO") : ""));
  }
  return text;
}

// One line: the simulate command of every row, rows with the same
// command but for the method sharing it ("-m 1f1b|gpipe").
std::string reproduce_line(const Opts& o, const std::vector<CompareRow>& rows) {
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;  // (arguments, methods)
  for (const CompareRow& r : rows) {
    if (!r.error.empty()) continue;
    const std::string args = simulate_args(o, r);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == args; });
    if (it == groups.end()) it = groups.insert(groups.end(), {args, {}});
    it->second.push_back(r.method);
  }
  std::vector<std::string> parts;
  for (const auto& [args, names] : groups) parts.push_back(fmt::format("-m {} {}", fmt::join(names, "|"), args));
  return fmt::format("each row is dualpipe simulate {}\n", fmt::join(parts, "; "));
}

// The legend under the text table.
std::string legend(const Opts& o, CompareBasis basis, const DataParallel& dpo, const Extras& x) {
  std::string text;
  text += "bubble: idle time of the most idle device in one step; activations: peak over devices, in units of "
          "one PP-stage activation\n";
  if (basis == CompareBasis::Stages && o.ranks >= 2) {
    std::vector<std::string> v_shaped;
    for (const Method& m : methods())
      if (m.v_shaped()) v_shaped.emplace_back(m.name);
    text += fmt::format("{} hold two stages a device, so here they run on {} devices; "
                        "--basis devices puts every method on {}\n",
                        listing(v_shaped), o.ranks / 2, o.ranks);
  }
  if (x.a2a)
    text += "exposed a2a: all-to-all time of the most exposed device; hidden: share of all all-to-all time "
            "hidden behind compute\n";
  if (x.dpr || x.mem) text += fmt::format("data parallel {}\n", describe_data_parallel(dpo));
  if (x.dpr)
    text += "step+dp: step including the gradient reductions; dp exposed: what they add after the compute of the "
            "most exposed device\n";
  if (x.mem)
    text += "peak GiB: the device with the most memory (weights, gradients, AdamW moments, peak activations)\n";
  return text;
}

std::string compare_text(const Opts& o, const Costs& c, CompareBasis basis, const DataParallel& dpo,
                         const std::vector<CompareRow>& rows, const Extras& x) {
  std::string text;
  text += fmt::format("{}, N={}, costs {}\n",
                     basis == CompareBasis::Devices ? fmt::format("P={} devices for every method", o.ranks)
                                                    : fmt::format("PP={}", count_of(o.ranks, "stage")),
                     count_of(o.micro_batches, "micro-batch"), describe(c));
  text += fmt::format("{:<17} {:>7} {:>6} {:>9} {:>9} {:>10} {:>7} {:>10} {:>11} {:>10}\n", "method", "devices",
                      "stages", "step", "bubble", "published", "ratio", "params/dev", "activations",
                      "published");
  // With all-to-all costs: two more columns (text.back() is the '\n').
  if (x.a2a) text.insert(text.size() - 1, fmt::format(" {:>11} {:>7}", "exposed a2a", "hidden"));
  if (x.dpr) text.insert(text.size() - 1, fmt::format(" {:>10} {:>10}", "step+dp", "dp exposed"));
  if (x.mem) text.insert(text.size() - 1, fmt::format(" {:>8} {:>28}{}", "peak GiB", "(params+grads+optim+act)",
                                                     x.limit > 0 ? "  fits" : ""));
  for (const CompareRow& r : rows) text += row_text(r, x);
  const std::vector<std::string> best = fastest(rows, x);
  for (const CompareRow& r : rows)
    if (!best.empty() && r.method == best.front())
      text += fmt::format("fastest: {} ({} {:g})\n", listing(best), x.dpr ? "step+dp" : "step", ranked_step(r, x));
  return text + legend(o, basis, dpo, x) + reproduce_line(o, rows);
}

// The command itself, once its options are parsed: returns the exit code.
int compare_command(const Opts& o) {
  const Costs c = make_costs(o.cost);
  if (o.chunks < 1) throw dualpipe::Error(fmt::format("--chunks must be at least 1 (got {})", o.chunks));
  const CompareBasis basis = o.basis == "devices" ? CompareBasis::Devices : CompareBasis::Stages;
  const DataParallel dpo = make_data_parallel(o.dpo);
  const Extras x{c.has_a2a(), dpo.reduces(), dpo.has_memory(), o.dpo.memory_limit_gib};
  const std::vector<CompareRow> rows = compare(o.ranks, o.micro_batches, c, o.chunks, basis, dpo);
  write_output(o.output, o.format == "json" ? command_json("compare", compare_json(o, c, dpo, rows, x))
                                            : compare_text(o, c, basis, dpo, rows, x));
  // Without FB an F&B pair costs F + B: DualPipe's overlap gains nothing
  // unless all-to-alls are modelled (a pair hides those).
  if (!c.FB && !c.has_a2a())
    fmt::print(stderr, "dualpipe: warning: FB is not given, so an overlapped F&B pair costs F+B and the overlap "
                       "gains nothing (give --cost ...,FB=X)\n");
  return 0;
}

}  // namespace

void add_compare_command(CLI::App* app, CommandRun& run) {
  auto o = std::make_shared<Opts>();
  auto* cmd = app->add_subcommand(
      "compare", "all methods side by side on the same model, on P devices (or on P stages: --basis stages)");
  cmd->add_option("-p,--ranks", o->ranks,
                  "pipeline ranks P: the devices of 1F1B, cutting the model into P stages (as in simulate)")
      ->required();
  cmd->add_option("--basis", o->basis,
                  "devices: every method on P devices (V-shaped ones cut the model into 2P half stages); stages: "
                  "every method on the model cut into P stages, the published table's form (V-shaped methods, two "
                  "stages a device, use P/2 devices)")
      ->check(CLI::IsMember({"stages", "devices"}))
      ->capture_default_str();
  cmd->add_option("-n,--micro-batches", o->micro_batches, "micro-batches N per step")->required();
  cmd->add_option("--chunks", o->chunks, kChunksHelp)->capture_default_str();
  add_cost_options(cmd, o->cost);
  add_data_parallel_options(cmd, o->dpo);
  cmd->add_option("-f,--format", o->format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  add_output_option(cmd, o->output);
  cmd->callback([o, &run] { run = [o] { return compare_command(*o); }; });
}

}  // namespace dualpipe::cli
