// dualpipe verify: one step pipelined across P ranks against the same batch
// unpipelined in one process; exit 0 within tolerance, 1 outside it.
#include <fmt/format.h>

#include "cli/common.h"
#include "runtime/launch.h"
#include "schedule/error.h"
#include "schedule/lower.h"
#include "train/verify.h"

namespace dp::cli {
namespace {

struct VerifyOptions {
  SourceOptions src;
  std::string model = "mlp";
  std::string dtype = "float64";
  int64_t hidden = 32, seq_len = 8, micro_batch_size = 2;
  uint64_t seed = 1234;
  bool threads = false;
  int timeout_s = 120;
};

double tolerance(const std::string& dtype) { return dtype == "float64" ? 1e-12 : 1e-5; }

std::string report(const Schedule& s, const VerifyOptions& o, const VerifyResult& r) {
  const double tol = tolerance(o.dtype);
  const bool ok = r.loss_error <= tol && r.grad_error <= tol;
  std::string t = fmt::format("verify {}: {} ranks, {} stages, {} micro-batches; model {} (hidden {}, seq {}, "
                              "micro-batch size {}), {}, {} ranks\n",
                              s.method, s.ranks, s.stages, s.micro_batches, o.model, o.hidden, o.seq_len,
                              o.micro_batch_size, o.dtype, o.threads ? "thread" : "process");
  t += fmt::format("largest relative difference: losses {:.3g}, gradients {:.3g} (tolerance {:g}): {}\n",
                   r.loss_error, r.grad_error, tol, ok ? "PASS" : "FAIL");
  for (const auto& [name, e] : r.per_param) t += fmt::format("  {:<28} {:.3g}\n", name, e);
  return t;
}

}  // namespace

void run_verify(CLI::App* app) {
  auto o = std::make_shared<VerifyOptions>();
  auto* cmd = app->add_subcommand(
      "verify", "run one step pipelined across local ranks and compare losses and gradients with unpipelined training");
  add_source_options(cmd, o->src);
  cmd->add_option("--model", o->model, "model: mlp")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "float32 or float64")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->capture_default_str();
  cmd->add_option("--hidden", o->hidden, "hidden size h")->capture_default_str();
  cmd->add_option("--seq-len", o->seq_len, "sequence length")->capture_default_str();
  cmd->add_option("--micro-batch-size", o->micro_batch_size, "samples per micro-batch")->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of parameters and data")->capture_default_str();
  cmd->add_flag("--threads", o->threads, "run the ranks as threads of this process instead of processes");
  cmd->add_option("--timeout", o->timeout_s, "seconds a rank waits for another before giving up")
      ->capture_default_str();
  cmd->callback([o]() {
    if (o->timeout_s < 1) throw Error(fmt::format("--timeout must be at least 1 second (got {})", o->timeout_s));
    Schedule s = load_schedule(o->src);
    if (!s.has_comm()) s = lower(s);
    ModelConfig mc;
    mc.name = o->model;
    mc.stages = s.stages;
    mc.micro_batches = s.micro_batches;
    mc.hidden = o->hidden;
    mc.seq_len = o->seq_len;
    mc.micro_batch_size = o->micro_batch_size;
    mc.dtype = o->dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
    mc.seed = o->seed;
    (void)make_model(mc);  // bad model options fail here, before any rank starts
    const auto timeout = std::chrono::milliseconds(1000L * o->timeout_s);
    const double tol = tolerance(o->dtype);
    auto finish = [&](const VerifyResult& r, bool print) {
      if (print) fmt::print("{}", report(s, *o, r));
      if (r.loss_error > tol || r.grad_error > tol) std::exit(1);
    };
    if (o->threads) {
      at::set_num_threads(1);
      std::vector<VerifyResult> results(s.ranks);
      run_thread_ranks(s.ranks, [&](std::shared_ptr<Comm> comm) { results[comm->rank] = verify_step(s, mc, comm); },
                       timeout);
      finish(results[0], true);
      return;
    }
    if (auto env = rank_from_env()) {
      if (env->world != s.ranks)
        throw Error(fmt::format("WORLD_SIZE={} but the schedule has {} ranks", env->world, s.ranks));
      at::set_num_threads(1);  // one intra-op thread per rank
      auto comm = connect_env(*env, timeout);
      finish(verify_step(s, mc, comm), env->rank == 0);
      return;
    }
    int code = spawn_local_ranks(s.ranks, program_args.argc, program_args.argv);
    if (code != 0) std::exit(code);
  });
}

}  // namespace dp::cli
