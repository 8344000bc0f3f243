#pragma once
// Data parallelism around one simulated pipeline step (docs/simulation.md,
// "Data parallelism"): D copies of the pipeline train on different data and
// reduce each stage's gradients over every rank that holds the stage, on each
// rank's data-parallel link, overlapped with the pipeline's tail; and the
// memory of every rank in bytes (parameters, gradients, optimizer state,
// activations), through the one byte model in sim/memory.h.
#include <vector>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/memory.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe {

struct DataParallel {
  int replicas = 1;                 // D: copies of the whole pipeline
  // Bytes of one stage's gradients, reduced over its holders; per stage (1 or
  // `stages` values). Empty: not given (no reduction; memory uses params).
  std::vector<double> grad_bytes;
  // Bytes of one stage's weights; empty: as grad_bytes (gradients have the
  // weights' shape and dtype).
  std::vector<double> param_bytes;
  // Bytes one stage keeps alive for one micro-batch, from its forward to its
  // backward (to its W where the backward is split); per stage.
  std::vector<double> act_mem_bytes{0.0};
  double rate = 0;       // bytes per time unit of a rank's data-parallel link
  bool overlap = true;   // start a reduction when its gradients are ready, not after the last compute
  bool zero1 = false;    // ZeRO-1: reduce-scatter + all-gather; optimizer state divided over the holders
  int buckets = 1;       // equal buckets per stage, ready one after another during its last weight gradient

  double grads(int stage) const;   // grad_bytes, else param_bytes, else 0
  double params(int stage) const;  // param_bytes, else grad_bytes, else 0
  bool reduces() const;            // some stage has gradient bytes to reduce
  bool has_memory() const;         // some byte size is given: a memory table makes sense
  // Throws dualpipe::Error unless every list has 1 or `stages` values and every
  // value makes sense (D >= 1, finite, not negative, a rate where there are
  // bytes to reduce).
  void validate(int stages) const;
};

// Bytes one rank sends (and receives) in a ring all-reduce of `bytes` over
// `holders` ranks: 2 (H-1)/H x bytes. A reduce-scatter or an all-gather
// alone is half of it.
double ring_allreduce_bytes(double bytes, int holders);

struct RankReduce {
  double compute_end = 0;  // end of the rank's last action
  double link = 0;         // time the rank's data-parallel link was busy
  double end = 0;          // max(compute_end, end of its last reduction)
  double exposed = 0;      // end - compute_end: the step the rank adds for its reductions
};

struct GradReduce {
  std::vector<RankReduce> per_rank;
  double step = 0;     // step time including the reductions: latest end over ranks
  double exposed = 0;  // step - the pipeline's makespan
  double link = 0;     // link time of all ranks together
};

// The gradient reductions of one step, after `sim` (simulated with its
// timeline). Every stage's reduction is a collective of all its holders (D x
// its ranks in the pipeline: Placement::replicas); the other replicas run
// the same schedule at the same time, so it waits only for this pipeline's
// ranks: it is ready when the last of them has its gradients, and starts
// when their links are free as well. A link carries one collective at a
// time, in the order they become ready. Throws dualpipe::Error on bad options.
GradReduce reduce_gradients(const Schedule& s, const SimResult& sim, const DataParallel& d);

// Every rank's memory in bytes: the weights and gradients of each stage it
// runs, AdamW's two moments (2 x the weights' bytes; divided over the
// stage's holders with ZeRO-1) and its peak activations
// (peak_activation_bytes). Throws dualpipe::Error on bad options.
std::vector<RankMemory> rank_memory(const Schedule& s, const DataParallel& d);

}  // namespace dualpipe
