#pragma once
// `dualpipe verify`: one step pipelined against the same batch unpipelined.
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/schedule/schedule.h"
#include "dualpipe/train/models.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe {

struct VerifyResult {
  double loss_error = 0;  // largest relative difference of the per-micro-batch losses
  double grad_error = 0;  // largest relative difference over all parameter gradients
  double param_error = -1;  // with VerifyOptions::optimizer_step: over the parameters after it (else -1)
  std::vector<std::pair<std::string, double>> per_param;  // "stage 3 up.weight" -> relative difference
};

// Runs on every rank of the mesh. Each rank executes its part of `lowered`
// on its pipeline's share of the batch, sums gradients over replicas and
// expert ranks, computes the unpipelined, unsharded step of the whole model
// on the whole batch (every pipeline's micro-batches, every expert) locally,
// and compares what it holds, parameter by name; the result is the maximum
// over all ranks, the same on every rank.
struct VerifyOptions {
  bool fb_overlap = true;
  ReduceOptions reduce;
  EngineOptions engine;  // lane and device emulation (uncalibrated: K x each piece's own CPU time)
  // Also take one AdamW step (clipping with the global norm as in training)
  // on both sides and compare the parameters after it.
  bool optimizer_step = false;
  double lr = 3e-3, weight_decay = 0.01, clip = 1.0;
};
VerifyResult verify_step(const Schedule& lowered, const ModelConfig& model, const Mesh& mesh,
                         const VerifyOptions& options);
VerifyResult verify_step(const Schedule& lowered, const ModelConfig& model, const Mesh& mesh, bool fb_overlap = true);
VerifyResult verify_step(const Schedule& lowered, const ModelConfig& model, const std::shared_ptr<Comm>& comm);

// The unpipelined step: the micro-batches 0..micro_batches-1 one after the
// other through all stages in one process, gradients accumulated, loss =
// mean of the micro-batch losses (and, for moe, each micro-batch's balance
// loss, whose gradient the layers add with the same 1/micro_batches scale).
// Plain data (owns its stages and tensors); built and read by one thread.
struct Reference {
  std::vector<Stage> stages;                      // the whole model, gradients accumulated
  std::vector<double> losses;                     // per micro-batch
  std::vector<std::vector<torch::Tensor>> grads;  // [stage][parameter]
  std::vector<std::vector<std::string>> names;    // [stage][parameter]
  // (stage, name) of every tied parameter's copies after its first: their
  // gradient is the sum over all the copies (the gradient of one shared
  // tensor), and they count once in the gradient norm.
  std::set<std::pair<int, std::string>> tied_copies;
};
Reference unpipelined_step(const PipelineModel& m, int micro_batches, int64_t micro_batch_size = 0);

// max |a - b| / max |b| (0 when both are zero), `a` taken to `b`'s device.
double relative_difference(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace dualpipe
