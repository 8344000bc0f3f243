#pragma once
// Yardsticks for `dualpipe bench`: what the hardware and the model alone
// would take, so that a measured pipeline step can be put over a floor.
// All of them run on the calling thread (one intra-op thread per rank).
#include <vector>

#include "dualpipe/runtime/comm.h"
#include "dualpipe/schedule/schedule.h"
#include "dualpipe/train/models.h"

namespace dualpipe {

// Matrix-product FLOPs of one stage on one micro-batch, by action kind
// (mlp only: two Linear layers; 2*m*n*k per product). F: forward; I: input
// gradients; W: weight gradients; B = I + W. Zero for other models.
struct StageFlops {
  double F = 0, I = 0, W = 0;
};
StageFlops mlp_stage_flops(const ModelConfig& c);

// FLOPs rank `rank` of `s` runs in one step (F&B pairs count both halves).
double rank_flops(const Schedule& s, int rank, const StageFlops& f);

// Single-thread matrix-product rate in FLOP/s on the mlp's own shapes
// ([tokens, h] x [h, ffn] and back), best of repeated runs lasting about
// `seconds` in all: what the FLOPs could at best run at on this core.
double matmul_flops_per_second(const ModelConfig& c, double seconds);

// Time of the model's own work for `micro_batches` micro-batches with no
// pipeline: every micro-batch forward through all stages, loss, backward,
// one after the other on this thread (the same operations at the same sizes
// as the pipelined step, without transfers, scheduling or waiting). Best of
// `repeats` runs, in seconds.
double sequential_compute_seconds(const ModelConfig& c, int repeats);

// Heap bytes (malloc) that one stage's forward of one micro-batch keeps
// alive until its backward: the "activation unit" the simulator counts.
double activation_unit_bytes(const ModelConfig& c);

// One-way time of a boundary tensor from rank 0 to rank 1 and back, over
// `comm` (median of `round_trips` ping-pongs, halved): the latency every
// cross-rank dependency of a schedule adds. Every rank must call it; ranks
// other than 0 and 1 only wait at the closing barrier. 0 with one rank.
double transfer_seconds(Comm& comm, const std::vector<int64_t>& shape, torch::Dtype dtype, int round_trips);

// Median time of one all-to-all over `comm` in which every member sends
// `rows` rows of `width` elements to every member (itself included): the
// wire time of one MoE dispatch or combine of that size. Every member must
// call it. 0 with one member.
double all_to_all_seconds(Comm& comm, int64_t rows, int64_t width, torch::Dtype dtype, int repeats);

}  // namespace dualpipe
