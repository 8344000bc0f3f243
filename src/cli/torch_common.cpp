#include "cli/torch_common.h"

#include <fmt/format.h>

#include <algorithm>

#include <cstdio>
#include <cstdlib>

#include "runtime/launch.h"
#include "schedule/error.h"

namespace dp::cli {

void add_model_options(CLI::App* app, ModelOptions& o) {
  app->add_option("--model", o.model, "model: mlp or gpt")->capture_default_str();
  app->add_option("--dtype", o.dtype, "float32 or float64")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->capture_default_str();
  app->add_option("--hidden", o.hidden, "hidden size h (model width)")->capture_default_str();
  app->add_option("--ffn", o.ffn, "mlp: inner width of a stage (0: 4 x hidden)")->capture_default_str();
  app->add_option("--seq-len", o.seq_len, "sequence length")->capture_default_str();
  app->add_option("--micro-batch-size", o.micro_batch_size, "samples per micro-batch")->capture_default_str();
  app->add_option("--seed", o.seed, "seed of parameters and data")->capture_default_str();
  app->add_option("--layers", o.layers, "gpt: transformer blocks, spread evenly over the stages (0: max(stages, 4))")
      ->capture_default_str();
  app->add_option("--heads", o.heads, "gpt: attention heads (must divide --hidden)")->capture_default_str();
  app->add_option("--data", o.data, "gpt: train on this text file (default: the built-in corpus)");
}

namespace {

// Sizes one CPU machine can hold. Without these, "--hidden 100000000" ends in
// LibTorch's allocation failure (an exception with a stack trace, exit 134)
// and "--seq-len 1000000" in minutes of swapping; with them the user learns
// the valid range before any rank starts.
constexpr int64_t kMaxDim = int64_t{1} << 20;        // hidden, ffn, seq-len, micro-batch size
constexpr int64_t kMaxLayers = 4096;                 // gpt blocks
constexpr double kMaxElements = double(int64_t{1} << 31);  // whole model's parameters; one activation tensor

void check_model_size(const ModelOptions& o, const Schedule& s) {
  auto in_range = [](const char* name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) throw Error(fmt::format("{} must be in {}..{} (got {})", name, lo, hi, v));
  };
  in_range("--hidden", o.hidden, 1, kMaxDim);
  in_range("--ffn", o.ffn, 0, kMaxDim);
  in_range("--seq-len", o.seq_len, 1, kMaxDim);
  in_range("--micro-batch-size", o.micro_batch_size, 1, kMaxDim);
  if (o.model == "gpt") {  // mlp ignores both
    in_range("--layers", o.layers, 0, kMaxLayers);
    in_range("--heads", o.heads, 1, o.hidden);
  }
  // In double: products of values up to 2^20 overflow 64 bits.
  const double h = static_cast<double>(o.hidden), rows = static_cast<double>(o.micro_batch_size) * static_cast<double>(o.seq_len);
  double params = 0, activation = 0;
  if (o.model == "gpt") {
    const double layers = o.layers > 0 ? o.layers : std::max(s.stages, 4);
    params = layers * 12 * h * h + (static_cast<double>(o.seq_len) + 256.0) * h * 2;  // blocks; embeddings and head (bytes vocab)
    activation = std::max(rows * 4 * h, static_cast<double>(o.micro_batch_size) * static_cast<double>(o.heads) *
                                                   static_cast<double>(o.seq_len) * static_cast<double>(o.seq_len));
  } else {
    const double ffn = o.ffn > 0 ? static_cast<double>(o.ffn) : 4 * h;
    params = static_cast<double>(s.stages) * 2 * h * ffn;
    activation = rows * std::max(h, ffn);
  }
  if (params > kMaxElements)
    throw Error(fmt::format("model too large: {:.3g} parameters over {} stages, at most {:.0f} are supported "
                            "(lower --hidden, --ffn or --layers)",
                            params, s.stages, kMaxElements));
  if (activation > kMaxElements)
    throw Error(fmt::format("micro-batch too large: one activation of {:.3g} elements, at most {:.0f} are supported "
                            "(lower --micro-batch-size, --seq-len or --hidden)",
                            activation, kMaxElements));
}

}  // namespace

ModelConfig make_model_config(const ModelOptions& o, const Schedule& s) {
  check_model_size(o, s);
  ModelConfig mc;
  mc.name = o.model;
  mc.stages = s.stages;
  mc.micro_batches = s.micro_batches;
  mc.hidden = o.hidden;
  mc.ffn = o.ffn;
  mc.seq_len = o.seq_len;
  mc.micro_batch_size = o.micro_batch_size;
  mc.dtype = o.dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
  mc.seed = o.seed;
  mc.layers = o.layers;
  mc.heads = o.heads;
  mc.data_path = o.data;
  (void)make_model(mc);  // bad model options fail here, before any rank starts
  return mc;
}

void add_rank_options(CLI::App* app, RankOptions& o) {
  app->add_flag("--threads", o.threads, "run the ranks as threads of this process instead of processes");
  app->add_option("--timeout", o.timeout_s,
                  "seconds a rank waits for another (a transfer, a collective, the rendezvous) before it gives up "
                  "and exits with an error naming that rank and what it waited for")
      ->capture_default_str();
  app->add_option("--sched", o.sched,
                  "CPU scheduling of the ranks and their communication threads: batch (SCHED_BATCH: fewer "
                  "wake-up preemptions, much lower per-transfer overhead on small machines) or normal")
      ->check(CLI::IsMember({"batch", "normal"}))
      ->capture_default_str();
}

int launch_ranks(const RankOptions& o, int world, const std::function<int(std::shared_ptr<Comm>)>& body) {
  // A day at most: beyond it a stalled rank is never reported in practice.
  if (o.timeout_s < 1 || o.timeout_s > 86400)
    throw Error(fmt::format("--timeout must be in 1..86400 seconds (got {})", o.timeout_s));
  const auto timeout = std::chrono::milliseconds(1000L * o.timeout_s);
  // Before any rank thread, rank process or Gloo thread exists: they all inherit it.
  if (o.sched == "batch") use_batch_scheduling();
  if (o.threads) {
    at::set_num_threads(1);
    std::vector<int> codes(world, 0);
    run_thread_ranks(world, [&](std::shared_ptr<Comm> comm) { codes[comm->rank] = body(comm); }, timeout);
    return codes[0];
  }
  if (auto env = rank_from_env()) {
    if (env->world != world)
      throw Error(fmt::format("WORLD_SIZE={} but the schedule has {} ranks", env->world, world));
    at::set_num_threads(1);  // one intra-op thread per rank
    std::shared_ptr<Comm> comm;
    try {
      comm = connect_env(*env, timeout);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      std::string why = e.what();
      throw Error(fmt::format("rank {}: cannot meet the other ranks at {}:{} within {} s ({})", env->rank,
                              env->master_addr, env->master_port, o.timeout_s, why.substr(0, why.find('\n'))));
    }
    try {
      return body(comm);
    } catch (const PeerError& e) {
      // Leave at once: unwinding would destroy the process group, whose
      // destructor waits for Gloo work still blocked on the dead or stalled peer.
      fmt::print(stderr, "dualpipe: error: {}\n", e.what());
      std::fflush(stdout);
      std::fflush(stderr);
      std::_Exit(2);
    }
  }
  return spawn_local_ranks(world, program_args.argc, program_args.argv);
}

}  // namespace dp::cli
