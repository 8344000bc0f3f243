#pragma once
// Training across pipeline ranks: every rank runs train_rank() with the same
// options; rank 0 reports.
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/executor.h"
#include "dualpipe/runtime/grad_reduce.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/simulate.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/models.h"

namespace dualpipe {

// A hook called once on every rank before training, with the rank's model
// (to wrap a stage), the checkpoint options its saves use (to act inside a
// write) and where it runs. Tests install one to inject failures.
using TrainInstrument =
    std::function<void(PipelineModel& model, CheckpointOptions& save, const Schedule& lowered, const Mesh& mesh)>;

// How gradients are reduced over their holders (grad_reduce.h).
struct ReduceOptions {
  int64_t bucket_bytes = 25 << 20;
  // Start a stage's reduction as soon as its gradients are final on the rank
  // (during the pipeline's cooldown); off: after the step.
  bool overlap = true;
  bool zero = false;  // ZeRO-1: optimizer state sharded over the holders
};

struct TrainOptions {
  ModelConfig model;
  int steps = 100;
  double lr = 3e-3;
  double weight_decay = 0.01;
  double clip = 1.0;       // global gradient-norm clipping; 0 disables it
  bool optimize = true;    // false: pipeline steps only (bench)
  int warmup_steps = 0;    // run first, not reported (bench)
  int lr_warmup_steps = 0;  // the learning rate rises linearly over these steps (lr_warmup.h)
  // Measure activation memory: one extra pipeline step after the last, with
  // no optimizer update, samples the heap after every action.
  bool track_memory = false;
  CheckpointOptions checkpoint;  // checkpoint.resume_step > 0: continue after that step
  TrainInstrument instrument;    // null: none
  // Asked on every rank at the end of every step (a Ctrl-C, say): when any
  // rank says yes, all stop after that step together, with a checkpoint of
  // it where checkpoint.dir is set, and RankRun::interrupted set. Null: never.
  std::function<bool()> stop_requested;
  bool fb_overlap = true;  // ExecutorOptions::fb_overlap
  ReduceOptions reduce;    // the gradient reduction over every holder
  // The overlap engine's lane, device emulation and link rate (overlap.h).
  // With device emulation, the first step run calibrates every compute
  // piece (emulation off) and the costs are averaged over the expert and
  // data-parallel peers, so that they run alike; the steps after it emulate.
  EngineOptions engine;
  // Device emulation: CPU seconds per compute piece to use instead of the
  // first step's measurement (an earlier run's calibration), so that runs
  // compare at one device speed; pieces it lacks keep their measurement.
  std::map<PieceKey, double> preset_calibration;
};

struct StepStats {
  int step = 0;          // 0-based, counted from the start of the run (a resumed run goes on counting)
  double loss = 0;       // mean over the step's micro-batches (all ranks)
  double seconds = 0;    // rank 0's wall time for the whole step (pipeline + replicas + optimizer)
  double pipeline_seconds = 0;  // slowest rank's time for the pipeline part alone
  double grad_norm = 0;  // before clipping
  // The slowest rank's wait for its gradient reductions after its pipeline
  // part ended: the reduction time the step did not hide.
  double reduce_seconds = 0;
  // moe: tokens routed to each expert in this step, over every rank, and the
  // mean balance loss per (block, micro-batch).
  std::vector<double> expert_tokens;
  double aux_loss = 0;
  // The mean over MoE blocks of (max / mean tokens per expert) in this step,
  // and the share of (token, expert) pairs whose expert was on another host.
  double expert_load = 0;
  double cross_host_share = 0;
};

// The mean over blocks of max/mean tokens per expert; `layer_totals`: [L * X]
// tokens by (block, expert); blocks without tokens (dense ones) are skipped.
double mean_layer_load(const std::vector<double>& layer_totals, int experts);

// Plain data: one rank's results; copyable.
struct RankRun {
  std::vector<StepStats> steps;
  std::vector<ActionTime> last_times;  // this rank's actions in the last step
  ExposedComm last_exposed;            // this rank's idle time waiting for communication, last step
  std::vector<ExposedComm> exposed;    // ... and in every reported step (grad_reduce: the wait after it)
  std::vector<IdleSpan> last_idle;     // ... and when (seconds since the step's start)
  std::vector<LaneRecord> last_lane;   // the collectives of the last step, in lane order
  double last_start = 0;               // when the last step started (steady clock, s): the origin of the two above
  // Device emulation: the calibrated CPU seconds per compute piece (as the
  // emulation uses them: averaged over peers), pieces that overran K x cost,
  // and the seconds its sleeps woke late, summed over the run.
  std::map<PieceKey, double> calibration;
  int device_overruns = 0;
  double device_overslept_s = 0;
  double peak_heap_bytes = 0;          // heap growth in the memory step (track_memory)
  double optimizer_bytes = 0;          // optimizer state held by this rank (optimizer_state_bytes)
  std::map<int, torch::Tensor> final_params;  // per stage held: all its parameters (then buffers), flattened, on the CPU
  bool interrupted = false;  // stopped early at TrainOptions::stop_requested (steps.back() is the last)
  bool checkpointed = false;  // the last step run has a checkpoint
};

// `progress` is called on rank 0 after each reported step. Every rank of
// the mesh calls it; each pipeline runs `lowered` on its own share of the
// batch (Mesh::data_shard), MoE experts are sharded over the expert group.
RankRun train_rank(const Schedule& lowered, const TrainOptions& opt, const Mesh& mesh,
                   const std::function<void(const StepStats&)>& progress = {});
// One pipeline (E = D = 1) over `comm`.
RankRun train_rank(const Schedule& lowered, const TrainOptions& opt, const std::shared_ptr<Comm>& comm,
                   const std::function<void(const StepStats&)>& progress = {});

// The model of one mesh rank: `base` with its expert rank, expert group,
// share of the batch and device (Mesh::device) filled in; and the executor
// options that go with it (receive buffers on that device).
ModelConfig rank_model_config(const ModelConfig& base, const Schedule& lowered, const Mesh& mesh);
// `engine`: the rank's overlap engine, shared with its MoE layers (null: the executor makes one).
ExecutorOptions rank_executor_options(const Mesh& mesh, bool fb_overlap,
                                      std::shared_ptr<OverlapEngine> engine = nullptr);

// The gradient reduction of one rank over every holder of its parameters
// (DualPipe/Chimera replicas, expert ranks for dense parameters, data
// replicas); with o.overlap, hooked into `exec` so that each stage starts
// reducing when its gradients are final. Every rank of the mesh calls it
// at the same point (it makes the holder groups).
std::unique_ptr<GradReducer> make_reducer(RankExecutor& exec, const Mesh& mesh, const ReduceOptions& o);

// AdamW over this rank's parameters, or with a sharded reducer over the
// chunks it owns; `params`: the rank's parameters.
std::unique_ptr<torch::optim::AdamW> make_adamw(GradReducer& reducer, const std::vector<torch::Tensor>& params,
                                               double lr, double weight_decay);
// After GradReducer::finish(): clips to `clip` with the global norm
// `grad_norm` (0: no clipping), sets the learning rate, and steps; a sharded
// reducer then all-gathers the new parameters.
void adamw_step(GradReducer& reducer, torch::optim::AdamW& adam, double grad_norm, double clip, double lr);
// Bytes of optimizer state this rank holds (AdamW's moments).
double optimizer_state_bytes(const torch::optim::AdamW& adam);

// Rank 0 receives every rank's action times (others send theirs and get {}).
std::vector<std::vector<ActionTime>> gather_times(const Schedule& lowered, const std::vector<ActionTime>& mine,
                                                  Comm& comm);
// Every rank's stretches of idle time waiting for all-to-alls, on rank 0
// (others get {}), for the measured timeline's hatching.
std::vector<std::vector<Span>> gather_a2a_waits(const std::vector<IdleSpan>& mine, Comm& comm);

// Every rank's value of x, on rank 0 (others get {}).
std::vector<double> gather_value(double x, Comm& comm);

// A measured step as simulator output (seconds), for the same pictures.
SimResult measured_result(const Schedule& lowered, const std::vector<std::vector<ActionTime>>& times);

// Mean compute time (receive waits excluded) of each action kind, per stage
// where the stage ran it, as simulator costs.
Costs measured_costs(const Schedule& lowered, const std::vector<std::vector<ActionTime>>& times);

}  // namespace dualpipe
