#pragma once
// Whether a run fits in this machine's memory, checked before any rank
// starts: a model too large for the machine was killed by the kernel
// (exit 137) after minutes of allocation and swapping, with no word of why.
#include <string>

#include "cli/torch_common.h"
#include "dualpipe/schedule/schedule.h"
#include "dualpipe/train/models.h"

namespace dualpipe::cli {

struct RunMemory {
  // Bytes over every rank counted (each with its own model copy): what the
  // byte model (sim/memory.h) gives for the parameters, gradients and AdamW
  // state of the stages each rank holds and each rank's peak of live
  // activations in the schedule. A lower bound: LibTorch's own memory,
  // temporaries and receive buffers come on top.
  double params = 0, grads = 0, optimizer = 0, activations = 0;
  double total() const { return params + grads + optimizer + activations; }
};

// The estimate for `ranks` of the lowered schedule `s` (all ranks when
// `ranks` is empty) of the model `mc` with expert-parallel degree `ep`;
// `optimizer`: AdamW state is held (train), not (verify, bench).
RunMemory estimate_run_memory(const Schedule& s, const ModelConfig& mc, int ep, bool optimizer, int only_rank = -1,
                              int dp = 1, bool zero = false);

// MemAvailable of /proc/meminfo in bytes (0: unknown). For tests, the
// variable DUALPIPE_TEST_MEMORY_AVAILABLE=BYTES stands in for it.
double available_memory_bytes();

// Throws dualpipe::Error with the estimate and the memory available when the run
// cannot fit: "the run needs at least 68.7 GB here (...), more than the
// 21.3 GB available on this machine (MemAvailable)". `what`: "the run" or
// "rank 3".
void require_memory_fits(const RunMemory& need, const std::string& what);

// The check as the commands make it, before launch_ranks: the launcher (or
// --threads) counts every rank, all on this machine; a rank of a
// torchrun-style launch counts itself; a rank spawned by our launcher, which
// counted it already, nothing.
void require_run_fits(const Schedule& s, const ModelConfig& mc, const RankOptions& o, bool optimizer);

}  // namespace dualpipe::cli
