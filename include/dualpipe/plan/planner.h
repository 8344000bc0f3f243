#pragma once
// The planner: for a model on a cluster and a global batch, enumerate the
// pipeline, tensor, expert and data-parallel degrees, micro-batch sizes,
// recomputation, methods (and interleaved's chunks) with a balanced cut of
// the layers, simulate each candidate that fits the memory limit (and may be
// among the rows wanted), rank them by step time, and explain the step and
// memory of the best ones. plan() and build_plan() are pure functions of
// their arguments: safe to call from several threads at once.
#include <string>
#include <vector>

#include "dualpipe/plan/cost_model.h"
#include "dualpipe/plan/measured.h"
#include "dualpipe/plan/progress.h"
#include "dualpipe/sim/memory.h"
#include "dualpipe/plan/spec.h"
#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost.h"

namespace dualpipe::plan {

struct PlanRequest {
  ModelSpec model;
  ClusterSpec cluster;
  long long global_batch = 0;     // sequences per step
  double memory_limit_gib = 0;    // 0: cluster.memory_gib
  bool zero1 = true;              // optimizer state divided over data-parallel replicas
  std::vector<std::string> methods;  // empty: every method
  std::vector<int> chunk_options{2, 4};  // for interleaved-1f1b
  int pp = 0, ep = 0, tp = 0, micro_batch_size = 0;  // 0: enumerate; else fixed
  // The data-parallel sync overlapped with the backward of the last
  // micro-batch (gradient reduce-scatter) and the forward of the first
  // (parameter all-gather), as bucketed ZeRO-1 implementations do.
  bool overlap_dp_sync = true;
  // The first rows_wanted rows are exact and explained (a step breakdown,
  // three more simulations each); a candidate whose lower bound (its
  // busiest device's compute) exceeds the rows_wanted-th best step is not
  // simulated but counted as pruned. 0: simulate and explain every one.
  std::size_t rows_wanted = 10;
  std::string layout;  // a cut by hand; candidates with another stage count are skipped
  // Per-layer compute and activations measured by dualpipe profile, in place of the formulas.
  bool use_measured = false;
  MeasuredCosts measured;
  // Told after each candidate sized and each simulated (may be empty).
  ProgressFn progress;
};

// A plan's step on its busiest device, in parts that add up to the step:
// the device's own compute, its recomputation, the rest of the pipeline
// step without communication (bubble), what the all-to-alls, the pipeline
// transfers and the tensor-parallel collectives add to the simulated step
// (in that order), and the exposed data-parallel sync.
struct StepSplit {
  double compute = 0, recompute = 0, bubble = 0;
  double expert_comm = 0, pipeline_comm = 0, tp_comm = 0, dp_sync = 0;
  bool valid = false;  // filled for the first PlanRequest::rows_wanted rows
};

struct PlanRow {
  std::string method;
  int chunks = 1;  // interleaved-1f1b only
  Parallel par;
  int micro_batches = 0;  // N per step on each pipeline
  std::vector<int> layout;  // layers per stage
  double step_s = 0;        // pipeline step + data-parallel gradient sync
  double pipeline_s = 0;    // simulated pipeline part
  double bubble_ratio = 0;
  double exposed_comm_s = 0;  // pipeline step with communication minus without it (explained rows only)
  double dp_sync_s = 0;       // exposed part of the gradient reduce-scatter + parameter all-gather across replicas
  double dp_sync_total_s = 0; // the same, all of it
  RankMemory peak;            // the device with the most memory
  double reserve_bytes = 0;   // the cluster's reserve, beside `peak`
  int peak_rank = 0;
  StepSplit split;
  // What this project's runtime lacks to run the plan as it stands (tensor
  // parallelism, recomputation, FP8 matrix products); empty: it runs it.
  std::vector<std::string> not_executable;
};

struct PlanResult {
  std::vector<PlanRow> rows;  // simulated candidates, fastest first
  long long candidates = 0;   // shapes considered
  long long simulated = 0;
  long long over_memory = 0;
  long long pruned = 0;       // fit, not simulated: bounded slower than the rows wanted
  PlanRow least_memory;       // smallest peak among all candidates (valid when candidates > 0)
  bool any_candidate = false;
};

// The largest enumeration plan() accepts (candidate shapes); beyond it the
// request is refused with the fields that drive the count.
inline constexpr long long kMaxCandidates = 200000;
inline constexpr int kMaxMicroBatches = 4096;
// About 20 s of simulation on the development machine.
inline constexpr double kMaxSimulatedActions = 1e9;

// Throws dualpipe::Error for inconsistent requests, enumerations that are too
// large, and when no candidate fits the memory limit (naming what the
// smallest one needs).
PlanResult plan(const PlanRequest& req);

// The schedule and simulator costs of one row (for CSV, SVG and checks).
struct BuiltPlan {
  Schedule schedule;
  Costs costs;
  std::vector<double> act_bytes;  // [stage]
};
BuiltPlan build_plan(const PlanRequest& req, const PlanRow& row);

}  // namespace dualpipe::plan
