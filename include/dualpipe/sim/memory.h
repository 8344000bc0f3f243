#pragma once
// Memory in bytes per device: parameters, gradients, optimizer state and
// activations. The one byte model of the project: the planner (src/plan) and
// the simulator's data-parallel report (sim/data_parallel.h) both use it, so
// it lives in the simulation layer, below the planner. ZeRO-1 is a parameter:
// the optimizer state of a parameter is divided over the devices that hold a
// replica of it.
#include <vector>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe {

struct BytesPerParam {
  double param = 2, grad = 4, optimizer = 12;
};

struct RankMemory {
  double params = 0, grads = 0, optimizer = 0, activations = 0;
  double total() const { return params + grads + optimizer + activations; }
};

// Parameters held by one device, split by how many devices hold a replica
// (the data-parallel degree for dense parameters, dp/ep for experts).
struct HeldParams {
  double dense = 0, expert = 0;
  int dense_replicas = 1, expert_replicas = 1;
};

// Weights and gradients in full on every replica; the optimizer state
// divided over the replicas when `zero1` (ZeRO stage 1), else in full.
RankMemory state_memory(const HeldParams& p, const BytesPerParam& bytes, bool zero1);

// Peak activation bytes of every rank over one step: walking each rank's
// actions in issue order (the order they run), a forward of (stage, mb) adds
// `bytes_per_stage[stage]` from its start, and the memory is freed at the end
// of its B, or of its W where the backward is split (W still needs the
// layer inputs). An overlapped F&B holds both while it runs. Communication
// actions are ignored.
std::vector<double> peak_activation_bytes(const Schedule& s, const std::vector<double>& bytes_per_stage);

}  // namespace dualpipe
