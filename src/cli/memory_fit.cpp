#include "cli/memory_fit.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/placement.h"
#include "dualpipe/sim/memory.h"
#include "dualpipe/train/gpt.h"

namespace dualpipe::cli {
namespace {

// One stage of the shipped models, in elements: parameters held in full
// (dense), routed-expert parameters held by one expert rank, and what one
// micro-batch's forward keeps for the backward. The shapes are those of
// train/models.cpp, gpt.cpp and moe.cpp; biases, LayerNorms and the
// character vocabulary (at most 256) are counted at their largest.
struct StageSize {
  double dense = 0, expert = 0, act = 0;
};

constexpr double kVocab = 256;

std::vector<StageSize> stage_sizes(const ModelConfig& c, int ep) {
  const double h = static_cast<double>(c.hidden), seq = static_cast<double>(c.seq_len);
  const double rows = static_cast<double>(c.micro_batch_size) * seq;
  std::vector<StageSize> out(static_cast<std::size_t>(c.stages));
  if (c.name == "torchscript") return out;  // the user's own stages: sizes unknown here, not checked
  if (c.name == "mlp") {
    const double ffn = static_cast<double>(mlp_ffn(c));
    for (StageSize& st : out) st = {2 * h * ffn, 0, rows * (h + 2 * ffn)};  // input, pre- and post-GELU
    return out;
  }
  const double scores = 2 * static_cast<double>(c.micro_batch_size * c.heads) * seq * seq;  // scores, softmax
  StageSize block;
  if (c.name == "moe") {
    const double effn = static_cast<double>(moe_expert_ffn(c)), x = c.experts, k = c.top_k;
    block.dense = 4 * h * h + h * x + (c.shared_expert ? 2 * h * effn : 0) + 4 * h;
    block.expert = x / std::max(1, ep) * 2 * h * effn;
    block.act = rows * 10 * h + scores + rows * k / std::max(1, ep) * (h + 2 * effn) +
                (c.shared_expert ? rows * 2 * effn : 0);
  } else {
    block.dense = 12 * h * h + 13 * h;
    block.act = rows * 16 * h + scores;
  }
  const int layers = gpt_layers(c);
  for (int s = 0; s < c.stages; ++s) {
    const auto [first, end] = gpt_blocks(s, c.stages, layers);
    StageSize& st = out[static_cast<std::size_t>(s)];
    const double n = end - first;
    st = {n * block.dense, n * block.expert, n * block.act};
    if (s == 0) {  // token and position embeddings
      st.dense += (kVocab + seq) * h;
      st.act += rows * h;
    }
    if (s == c.stages - 1) {  // final LayerNorm, LM head; logits and their softmax
      st.dense += kVocab * h + 2 * h;
      st.act += 2 * rows * kVocab;
    }
  }
  return out;
}

std::string human_bytes(double b) {
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.1f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.1f} KiB", b / 1024.0);
  return fmt::format("{:.0f} bytes", b);
}

}  // namespace

RunMemory estimate_run_memory(const Schedule& s, const ModelConfig& mc, int ep, bool optimizer, int only_rank, int dp,
                              bool zero) {
  const double elt = mc.dtype == torch::kFloat64 ? 8 : 4;
  const std::vector<StageSize> sizes = stage_sizes(mc, ep);
  std::vector<double> act_bytes;
  for (const StageSize& st : sizes) act_bytes.push_back(st.act * elt);
  const std::vector<double> peak = peak_activation_bytes(s, act_bytes);
  BytesPerParam bytes;
  bytes.param = elt;
  bytes.grad = elt;
  bytes.optimizer = optimizer ? 2 * elt : 0;  // AdamW: first and second moments
  RunMemory total;
  // Every expert rank of a pipeline rank holds what it holds, with its own
  // share of the experts: the mesh's ranks are E x D copies of the pipeline's.
  const int copies = only_rank >= 0 ? 1 : std::max(1, ep) * std::max(1, dp);
  const Placement placement = placement_of(s);
  for (int r = 0; r < s.ranks; ++r) {
    if (only_rank >= 0 && r != only_rank % s.ranks) continue;
    const std::vector<int>& held = placement.stages_of[static_cast<std::size_t>(r)];
    // ZeRO-1 divides the optimizer state over the holders: D x the stage's
    // copies in the pipeline (x E for dense parameters).
    RankMemory m;
    for (int st : held) {
      HeldParams p;
      p.dense = sizes[static_cast<std::size_t>(st)].dense;
      p.expert = sizes[static_cast<std::size_t>(st)].expert;
      const int reps = static_cast<int>(placement.replicas[static_cast<std::size_t>(st)].size());
      p.dense_replicas = std::max(1, dp) * std::max(1, ep) * reps;
      p.expert_replicas = std::max(1, dp) * reps;
      const RankMemory part = state_memory(p, bytes, zero);
      m.params += part.params;
      m.grads += part.grads;
      m.optimizer += part.optimizer;
    }
    total.params += copies * m.params;
    total.grads += copies * m.grads;
    total.optimizer += copies * m.optimizer;
    total.activations += copies * peak[static_cast<std::size_t>(r)];
  }
  return total;
}

double available_memory_bytes() {
  if (const char* v = std::getenv("DUALPIPE_TEST_MEMORY_AVAILABLE"); v && *v) return std::atof(v);
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name;
    double kib = 0;
    if (fields >> name >> kib && name == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

void require_memory_fits(const RunMemory& need, const std::string& what) {
  const double available = available_memory_bytes();
  if (available <= 0 || need.total() <= available) return;
  throw Error(fmt::format(
      "{} needs at least {} ({:.0f} bytes: parameters {}, gradients {}, AdamW state {}, activations at the schedule's "
      "peak {}), more than the {} ({:.0f} bytes) this machine has available (MemAvailable); lower --hidden, --ffn, "
      "--layers, --micro-batch-size or --seq-len, or spread the ranks over more machines",
      what, human_bytes(need.total()), need.total(), human_bytes(need.params), human_bytes(need.grads),
      human_bytes(need.optimizer), human_bytes(need.activations), human_bytes(available), available));
}

void require_run_fits(const Schedule& s, const ModelConfig& mc, const RankOptions& o, bool optimizer) {
  if (is_spawned_rank()) return;
  const auto env = rank_from_env();
  if (env) {
    require_memory_fits(estimate_run_memory(s, mc, o.ep, optimizer, env->rank, o.dp, o.zero == 1),
                        fmt::format("rank {}", env->rank));
    return;
  }
  const int ranks = s.ranks * std::max(1, o.ep) * std::max(1, o.dp);
  require_memory_fits(estimate_run_memory(s, mc, o.ep, optimizer, -1, o.dp, o.zero == 1),
                      fmt::format("the run ({} rank {} on this machine)", ranks, o.threads ? "threads" : "processes"));
}

}  // namespace dualpipe::cli
