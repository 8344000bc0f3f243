#include "cli/data_parallel_options.h"

#include <fmt/format.h>

#include <cmath>

#include "dualpipe/schedule/error.h"
#include "dualpipe/sim/cost.h"

namespace dualpipe::cli {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

bool given(const CLI::Option* opt) { return opt && opt->count() > 0; }

std::string list_text(const std::vector<double>& v) { return fmt::format("{}", fmt::join(v, ":")); }

}  // namespace

void add_data_parallel_options(CLI::App* app, DataParallelOptions& o) {
  o.dp_opt = app->add_option("--dp", o.dp, "data-parallel degree D: copies of the whole pipeline")
                 ->capture_default_str();
  app->add_option("--grad-bytes", o.grad_bytes,
                  "bytes of one stage's gradients, reduced over every rank holding the stage (per stage with "
                  "colons; default 0: no reduction)");
  o.rate_opt = app->add_option("--dp-rate", o.rate, "bytes per time unit of a rank's data-parallel link")
                   ->capture_default_str();
  o.buckets_opt = app->add_option("--grad-buckets", o.buckets,
                                  "equal buckets a stage's gradients are reduced in, ready one after another "
                                  "during its last weight-gradient action")
                      ->capture_default_str();
  o.overlap_opt = app->add_option("--overlap-grad-reduce", o.overlap,
                                  "on: reduce a stage's gradients as soon as they are ready, under the pipeline's "
                                  "tail; off: after the rank's last compute")
                      ->check(CLI::IsMember({"on", "off"}))
                      ->capture_default_str();
  o.zero_opt = app->add_option("--zero", o.zero,
                               "1: ZeRO-1 (reduce-scatter, optimizer state divided over the holders, all-gather)")
                   ->capture_default_str();
  app->add_option("--param-bytes", o.param_bytes,
                  "bytes of one stage's weights, for the memory table (per stage with colons; default: "
                  "--grad-bytes)");
  app->add_option("--act-mem-bytes", o.act_mem_bytes,
                  "bytes one stage keeps alive per micro-batch from its forward to its backward, for the memory "
                  "table (per stage with colons)");
  o.limit_opt = app->add_option("--memory-limit", o.memory_limit_gib, "GiB per device: say which ranks fit");
}

DataParallel make_data_parallel(const DataParallelOptions& o) {
  if (o.zero != 0 && o.zero != 1) throw Error(fmt::format("--zero must be 0 or 1 (got {})", o.zero));
  if (o.dp < 1) throw Error(fmt::format("--dp must be at least 1 (got {})", o.dp));
  if (given(o.limit_opt) && !(std::isfinite(o.memory_limit_gib) && o.memory_limit_gib > 0))
    throw Error(fmt::format("--memory-limit must be a positive number of GiB (got {})", o.memory_limit_gib));
  DataParallel d;
  d.replicas = o.dp;
  if (!o.grad_bytes.empty()) d.grad_bytes = parse_stage_values(o.grad_bytes, "--grad-bytes");
  if (!o.param_bytes.empty()) d.param_bytes = parse_stage_values(o.param_bytes, "--param-bytes");
  if (!o.act_mem_bytes.empty()) d.act_mem_bytes = parse_stage_values(o.act_mem_bytes, "--act-mem-bytes");
  d.rate = o.rate;
  d.buckets = o.buckets;
  d.overlap = o.overlap == "on";
  d.zero1 = o.zero == 1;
  // Options that change nothing without the ones they shape would look like
  // a result: refuse them, as --comm-bandwidth without --act-bytes.
  const bool grads = !o.grad_bytes.empty(), weights = grads || !o.param_bytes.empty();
  if (!grads && (given(o.rate_opt) || given(o.buckets_opt) || given(o.overlap_opt)))
    throw Error("--dp-rate, --grad-buckets and --overlap-grad-reduce shape the gradient reduction: add --grad-bytes "
                "(bytes of one stage's gradients)");
  if (!weights && given(o.dp_opt))
    throw Error("--dp changes nothing without --grad-bytes or --param-bytes (what the replicas reduce and share)");
  if (!weights && o.zero == 1)
    throw Error("--zero 1 changes nothing without --grad-bytes or --param-bytes (the state it divides)");
  if (given(o.limit_opt) && !weights && o.act_mem_bytes.empty())
    throw Error("--memory-limit needs the bytes to count: --grad-bytes, --param-bytes or --act-mem-bytes");
  return d;
}

std::string describe_data_parallel(const DataParallel& d) {
  std::string s = fmt::format("D={}", d.replicas);
  if (d.reduces()) {
    s += fmt::format(" grad-bytes={} dp-rate={}", list_text(d.grad_bytes), d.rate);
    if (d.buckets > 1) s += fmt::format(" buckets={}", d.buckets);
    s += d.overlap ? " overlap=on" : " overlap=off";
  }
  s += d.zero1 ? " ZeRO-1" : " ZeRO-0";
  return s;
}

std::string memory_table(const std::vector<RankMemory>& mem, double limit_gib) {
  std::string t = fmt::format("memory per rank in GiB{}\n", limit_gib > 0 ? fmt::format(", limit {:g} GiB", limit_gib)
                                                                           : std::string());
  t += fmt::format("{:>5} {:>10} {:>10} {:>10} {:>11} {:>10}{}\n", "rank", "params", "grads", "optimizer",
                   "activations", "total", limit_gib > 0 ? "  fits" : "");
  for (std::size_t r = 0; r < mem.size(); ++r) {
    const RankMemory& m = mem[r];
    t += fmt::format("{:>5} {:>10.3f} {:>10.3f} {:>10.3f} {:>11.3f} {:>10.3f}", r, m.params / kGiB, m.grads / kGiB,
                     m.optimizer / kGiB, m.activations / kGiB, m.total() / kGiB);
    t += limit_gib > 0 ? (m.total() <= limit_gib * kGiB ? "   yes\n" : "    NO\n") : "\n";
  }
  return t;
}

nlohmann::json memory_json(const RankMemory& m, double limit_gib) {
  nlohmann::json j = {{"params", m.params},           {"grads", m.grads},  {"optimizer", m.optimizer},
                      {"activations", m.activations}, {"total", m.total()}};
  if (limit_gib > 0) j["fits"] = m.total() <= limit_gib * kGiB;
  return j;
}

}  // namespace dualpipe::cli
