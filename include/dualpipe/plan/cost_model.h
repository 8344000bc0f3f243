#pragma once
// Per-layer costs of a model on a cluster, for one micro-batch on one device:
// compute time of the forward, input-gradient and weight-gradient parts,
// recomputation, tensor-parallel and all-to-all communication, activation
// bytes kept for the backward, parameters, and pipeline-transfer bytes.
// docs/planner.md gives every formula and its source. Pure functions.
#include <string>
#include <vector>

#include "dualpipe/plan/spec.h"

namespace dualpipe::plan {

// What a layer keeps for its backward: everything (none); all but the norm
// outputs, the attention up-projections' outputs and the FFN activation
// function's output, recomputed in the backward (selective); only its input,
// the whole forward run again in the backward (full).
enum class Recompute { None, Selective, Full };
const char* recompute_name(Recompute r);  // "none", "selective", "full"

// How the devices are used: devices = pp * dp * tp. The tp devices of a
// tensor-parallel group are neighbours (inside a node); data-parallel
// replicas are tp apart; the ep devices of one expert group are ep
// consecutive members of the data-parallel dimension (ep divides dp), so
// expert parameters are divided by ep (and tp) and replicated dp/ep times.
struct Parallel {
  int pp = 1, dp = 1, ep = 1;
  int micro_batch_size = 1;  // sequences per micro-batch
  Recompute recompute = Recompute::None;
  int tp = 1;  // tensor (and sequence) parallelism
};

struct PartCost {
  double flops_f = 0;          // forward FLOPs (one device)
  double f = 0, i = 0, w = 0;  // seconds of compute: forward, input gradient (with recomputation), weight gradient
  double rc = 0;               // seconds of recomputation, included in i
  double a2a_f = 0, a2a_b = 0; // seconds of all-to-all (dispatch + combine) in the forward, in the backward
  double a2a_bytes = 0;        // bytes one device sends in the forward's all-to-all
  double tp_f = 0, tp_b = 0;   // seconds of tensor-parallel collectives in the forward, in the backward
  double act_bytes = 0;        // bytes kept from the forward until the weight gradient
  double dense_params = 0;     // parameters on one device replicated dp times
  double expert_params = 0;    // parameters on one device replicated dp/ep times (experts / ep of them)
};

struct ModelCosts {
  std::vector<PartCost> layers;  // [layer]
  PartCost embedding;            // on the first stage
  PartCost head;                 // final norm, LM head, loss and the multi-token prediction modules, on the last stage
  double boundary_bytes = 0;     // hidden state crossing a stage boundary, one micro-batch
  double p2p_seconds = 0;        // one such transfer between pipeline neighbours
  double p2p_latency = 0, p2p_bandwidth = 0;  // seconds; bytes per second
};

// Throws dualpipe::Error if the degrees do not fit the model and cluster.
ModelCosts model_costs(const ModelSpec& m, const ClusterSpec& c, const Parallel& par);

// Sum of several parts (a stage).
PartCost& operator+=(PartCost& a, const PartCost& b);

// Seconds of a ring all-reduce of `bytes` over `group` devices whose members
// are spaced `stride` devices apart (to tell NVLink from the network).
double allreduce_seconds(const ClusterSpec& c, double bytes, int group, int stride);

}  // namespace dualpipe::plan
