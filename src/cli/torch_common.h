#pragma once
// Options and launching shared by the commands that run the LibTorch runtime
// (verify, train, bench).
#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cli/common.h"
#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/train/models.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe {
struct TrainOptions;
}

namespace dualpipe::cli {

struct ModelOptions {
  // The subcommand the options were added to (add_model_options): tells an
  // option given from one left at its default.
  const CLI::App* app = nullptr;
  bool given(const char* option) const { return app && app->count(option) > 0; }
  std::string model = "mlp";
  std::string dtype = "float32";
  int64_t hidden = 64, seq_len = 16, micro_batch_size = 2;
  int64_t ffn = 0;     // mlp: inner width of a stage (0: 4 x hidden)
  int layers = 0;      // gpt: transformer blocks (0: max(stages, 4))
  int64_t heads = 4;   // gpt: attention heads
  std::string data;    // gpt: text file (empty: the built-in corpus)
  uint64_t seed = 1234;
  // --seed as typed: CLI11 would wrap -1 to 2^64-1 and clamp 1e20 to the
  // maximum, so make_model_config parses it (empty: `seed` as set).
  std::string seed_text;
  // moe:
  int experts = 4, top_k = 2;
  bool shared_expert = true;
  int64_t expert_ffn = 0;
  double aux_alpha = 0.01;
  // The user's own model: one TorchScript file per stage (replaces --model),
  // and its loss module (train/torchscript.h).
  std::vector<std::string> stages;
  std::string loss;
  // deepseek (ModelConfig has their meaning):
  int64_t kv_latent = 0, q_latent = 0, rope_dim = 4;
  int shared_experts = 1, dense_layers = 1, expert_hosts = 0, node_limit = 1;
  double bias_speed = 0.01, mtp_weight = 0.3;
  std::string recompute = "none";
};
void add_model_options(CLI::App* app, ModelOptions& o);
// Throws dualpipe::Error for bad values (checked before any rank starts). `ep`:
// the expert-parallel degree the model will be sharded over.
ModelConfig make_model_config(const ModelOptions& o, const Schedule& s, int ep = 1);

struct RankOptions {
  const CLI::App* app = nullptr;  // as ModelOptions::app
  bool given(const char* option) const { return app && app->count(option) > 0; }
  bool threads = false;
  // A peer that died fails a wait at once (Gloo sees the connection close);
  // one that stalls is noticed after this long. A minute is well above any
  // step or checkpoint write of the models here on a 2-core machine.
  int timeout_s = 60;
  // "batch" (default): ranks and their communication threads run under
  // SCHED_BATCH (see use_batch_scheduling); "normal": the default policy.
  std::string sched = "batch";
  int ep = 1;                    // expert-parallel degree E: P*E ranks
  int dp = 1;                    // data-parallel degree D: P*E*D ranks
  int zero = 0;                  // 1: ZeRO-1, optimizer state sharded over each parameter's holders
  double bucket_mb = 25;         // gradient-reduction bucket size, MiB
  std::string overlap_grad_reduce = "on";  // on: a stage's reduction starts when its gradients are final
  std::string fb_overlap = "on";  // on: F&B halves hand over at communication points
  int emulate_hosts = 0;          // > 0: run the ranks on that many emulated hosts (network namespaces)
  std::string link_rate = "1gbit";  // each emulated host's link, both directions
  // Device emulation: "" off, else K > 0 (every compute piece lasts K times
  // its calibrated CPU time; OverlapEngine).
  std::string emulate_device;
  std::string comm_lane = "on";  // on: the rank's collectives run one at a time in posting order
  std::string fill_waits = "on";  // on: weight gradients run in a backward's all-to-all waits
  // Compute threads of each rank (LibTorch intra-op and OpenBLAS), whichever
  // way it was started: more ranks than cores run best with one each.
  int intra_op_threads = 1;
  std::string backend = "gloo";  // c10d backend of the groups (runtime/backend.h)
  int max_restarts = 0;  // LaunchOptions::max_restarts (train registers the option)
};
void add_rank_options(CLI::App* app, RankOptions& o);
// The gradient reduction the options ask for; throws dualpipe::Error for bad values.
ReduceOptions reduce_options(const RankOptions& o);
// The overlap engine's settings (lane, device emulation, the link rate of
// emulated hosts); throws dualpipe::Error for bad values.
EngineOptions engine_options(const RankOptions& o);
// What train and bench both set from their options: the model (checked, and
// checked to fit the machine's memory), the F&B overlap and the gradient
// reduction. `optimizer`: the run keeps AdamW's state (train; bench does not).
// --steps of train and bench: 1..kMaxSteps; throws dualpipe::Error.
void require_step_count(int steps);

TrainOptions run_options(const Schedule& s, const ModelOptions& m, const RankOptions& r, bool optimizer);
// Adds the mesh settings (ep, dp, zero) to a run's identity: the ranks of a
// run must share them, and a checkpoint's tensors only fit a run that has
// them (a resume with another D or ZeRO setting is refused, naming both).
void add_mesh_identity(nlohmann::ordered_json& id, const RankOptions& o);

// The runtime launcher's options from the command's (checked; throws
// dualpipe::Error naming the option), the rank processes re-running this
// program's own arguments.
LaunchOptions launch_options(const RankOptions& o, int pipeline_ranks);
// Runs body(mesh) on every rank of a pipeline_ranks x E x D mesh through the
// runtime's launch() (launch.h) and returns the exit code to leave with,
// after the process policy is applied; the lead process prints the mesh
// layout first when E or D > 1.
int launch_ranks(const RankOptions& o, int pipeline_ranks, const std::function<int(const Mesh&)>& body);

// --from <(cmd): a pipe can be read once, but every rank process reads the
// schedule. In the lead process this reads the pipe into a temporary file,
// points --from (here and in the arguments the rank processes re-run) at it,
// and removes the file when it goes; anywhere else it does nothing.
class PipedScheduleCopy {
 public:
  explicit PipedScheduleCopy(SourceOptions& src);
  ~PipedScheduleCopy();
  PipedScheduleCopy(const PipedScheduleCopy&) = delete;
  PipedScheduleCopy& operator=(const PipedScheduleCopy&) = delete;

 private:
  std::string path_;
};

// Process-wide settings for rank processes and threads, made once by the
// program (never by the library): allocator tuning for tensor workloads and,
// with --sched batch, SCHED_BATCH.
void apply_process_policy(const RankOptions& o);

}  // namespace dualpipe::cli
