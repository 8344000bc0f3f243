#include "cli/torch_common.h"

#include <fmt/format.h>

#include "runtime/launch.h"
#include "schedule/error.h"

namespace dp::cli {

void add_model_options(CLI::App* app, ModelOptions& o) {
  app->add_option("--model", o.model, "model: mlp or gpt")->capture_default_str();
  app->add_option("--dtype", o.dtype, "float32 or float64")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->capture_default_str();
  app->add_option("--hidden", o.hidden, "hidden size h (model width)")->capture_default_str();
  app->add_option("--seq-len", o.seq_len, "sequence length")->capture_default_str();
  app->add_option("--micro-batch-size", o.micro_batch_size, "samples per micro-batch")->capture_default_str();
  app->add_option("--seed", o.seed, "seed of parameters and data")->capture_default_str();
  app->add_option("--layers", o.layers, "gpt: transformer blocks, spread evenly over the stages (0: max(stages, 4))")
      ->capture_default_str();
  app->add_option("--heads", o.heads, "gpt: attention heads (must divide --hidden)")->capture_default_str();
  app->add_option("--data", o.data, "gpt: train on this text file (default: the built-in corpus)");
}

ModelConfig make_model_config(const ModelOptions& o, const Schedule& s) {
  ModelConfig mc;
  mc.name = o.model;
  mc.stages = s.stages;
  mc.micro_batches = s.micro_batches;
  mc.hidden = o.hidden;
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
  app->add_option("--timeout", o.timeout_s, "seconds a rank waits for another before giving up")
      ->capture_default_str();
}

int launch_ranks(const RankOptions& o, int world, const std::function<int(std::shared_ptr<Comm>)>& body) {
  if (o.timeout_s < 1) throw Error(fmt::format("--timeout must be at least 1 second (got {})", o.timeout_s));
  const auto timeout = std::chrono::milliseconds(1000L * o.timeout_s);
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
    return body(connect_env(*env, timeout));
  }
  return spawn_local_ranks(world, program_args.argc, program_args.argv);
}

}  // namespace dp::cli
