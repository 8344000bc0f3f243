#pragma once
// `dualpipe verify`: one step pipelined against the same batch unpipelined.
#include <memory>
#include <string>
#include <vector>

#include "runtime/comm.h"
#include "schedule/schedule.h"
#include "train/models.h"

namespace dp {

struct VerifyResult {
  double loss_error = 0;  // largest relative difference of the per-micro-batch losses
  double grad_error = 0;  // largest relative difference over all parameter gradients
  std::vector<std::pair<std::string, double>> per_param;  // "stage 3 up.weight" -> relative difference
};

// Runs on every rank (all ranks of `comm` call it). Each rank executes its
// part of `lowered`, sums replica gradients, computes the unpipelined step
// of the whole model locally, and compares what it holds; the result is the
// maximum over all ranks, the same on every rank.
VerifyResult verify_step(const Schedule& lowered, const ModelConfig& model, const std::shared_ptr<Comm>& comm);

// The unpipelined step: the whole batch through all stages in one process,
// loss = mean of the micro-batch losses.
struct Reference {
  std::vector<double> losses;                     // per micro-batch
  std::vector<std::vector<torch::Tensor>> grads;  // [stage][parameter]
  std::vector<std::vector<std::string>> names;    // [stage][parameter]
};
Reference unpipelined_step(const PipelineModel& m, int micro_batches, int64_t micro_batch_size);

// max |a - b| / max |b| (0 when both are zero).
double relative_difference(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace dp
