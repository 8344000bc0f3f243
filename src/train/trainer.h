#pragma once
// Training across pipeline ranks: every rank runs train_rank() with the same
// options; rank 0 reports.
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "runtime/comm.h"
#include "runtime/executor.h"
#include "runtime/mesh.h"
#include "schedule/schedule.h"
#include "sim/simulate.h"
#include "train/checkpoint.h"
#include "train/models.h"

namespace dp {

// Testing hook for failure handling, set from DUALPIPE_TEST_FAULT=KIND:RANK:STEP
// (fault_from_env): in step STEP (1-based), rank RANK
//   kill:  raises SIGKILL halfway through its forwards of the step;
//   stall: stops its process (SIGSTOP) at the same place (its peers must time out);
//   kill-before-manifest: (rank 0 only) raises SIGKILL while writing the
//          checkpoint of step STEP, after every rank file and before the manifest.
// Each prints one line with the CLOCK_MONOTONIC time first, so that tests can
// measure how long the others take to exit.
struct Fault {
  enum Kind { None, Kill, Stall, KillBeforeManifest } kind = None;
  int rank = -1, step = 0;
};
// Throws dp::Error if the variable is set but malformed.
Fault fault_from_env();

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
  Fault fault;
  bool fb_overlap = true;  // ExecutorOptions::fb_overlap
};

struct StepStats {
  int step = 0;          // 0-based, counted from the start of the run (a resumed run goes on counting)
  double loss = 0;       // mean over the step's micro-batches (all ranks)
  double seconds = 0;    // rank 0's wall time for the whole step (pipeline + replicas + optimizer)
  double pipeline_seconds = 0;  // slowest rank's time for the pipeline part alone
  double grad_norm = 0;  // before clipping
  // moe: tokens routed to each expert in this step, over every rank, and the
  // mean balance loss per (block, micro-batch).
  std::vector<double> expert_tokens;
  double aux_loss = 0;
};

struct RankRun {
  std::vector<StepStats> steps;
  std::vector<ActionTime> last_times;  // this rank's actions in the last step
  ExposedComm last_exposed;            // this rank's idle time waiting for communication, last step
  std::vector<IdleSpan> last_idle;     // ... and when (seconds since the step's start)
  double peak_heap_bytes = 0;          // heap growth in the memory step (track_memory)
  std::map<int, torch::Tensor> final_params;  // per stage held: all its parameters, flattened
};

// `progress` is called on rank 0 after each reported step. Every rank of
// the mesh calls it; each pipeline runs `lowered` on its own share of the
// batch (Mesh::data_shard), MoE experts are sharded over the expert group.
RankRun train_rank(const Schedule& lowered, const TrainOptions& opt, const Mesh& mesh,
                   const std::function<void(const StepStats&)>& progress = {});
// One pipeline (E = D = 1) over `comm`.
RankRun train_rank(const Schedule& lowered, const TrainOptions& opt, const std::shared_ptr<Comm>& comm,
                   const std::function<void(const StepStats&)>& progress = {});

// The model of one mesh rank: `base` with its expert rank, expert group and
// share of the batch filled in; and the executor options that go with it.
ModelConfig rank_model_config(const ModelConfig& base, const Schedule& lowered, const Mesh& mesh);
ExecutorOptions rank_executor_options(const Mesh& mesh, bool fb_overlap);

// After a step: sum gradients over DualPipe/Chimera replicas (pipeline
// group) and, for dense parameters, over the expert group.
void reduce_grads(RankExecutor& exec, const Mesh& mesh);

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

}  // namespace dp
