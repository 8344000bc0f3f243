#pragma once
// The planner: for a model on a cluster and a global batch, enumerate the
// pipeline, expert and data-parallel degrees, micro-batch sizes, methods
// (and interleaved's chunks) with a balanced cut of the layers, simulate each
// candidate that fits the memory limit, and rank them by step time.
#include <string>
#include <vector>

#include "dualpipe/plan/cost_model.h"
#include "dualpipe/plan/measured.h"
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
  int pp = 0, ep = 0, micro_batch_size = 0;  // 0: enumerate; else fixed
  std::string layout;  // a cut by hand; candidates with another stage count are skipped
  // Per-layer compute and activations measured by dualpipe profile, in place of the formulas.
  bool use_measured = false;
  MeasuredCosts measured;
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
  double exposed_comm_s = 0;  // pipeline step with communication minus without it
  double dp_sync_s = 0;       // gradient reduce-scatter + parameter all-gather across replicas
  RankMemory peak;            // the device with the most memory
  int peak_rank = 0;
};

struct PlanResult {
  std::vector<PlanRow> rows;  // feasible candidates, fastest first
  long long candidates = 0;   // shapes considered
  long long simulated = 0;
  long long over_memory = 0;
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
