#pragma once
// Gradient sums over the ranks that hold the same parameters and saw
// different data (the expert ranks of a stage, for its dense parameters).
#include <map>
#include <vector>

#include "runtime/comm.h"
#include "runtime/stage.h"

namespace dp {

// The gradients of `params` as one flat tensor, in order (a missing gradient
// is made zero first, so that every holder's buffer has the same layout).
torch::Tensor flat_grads(std::vector<torch::Tensor>& params);
// Writes `flat` (laid out as flat_grads) back into the params' gradients.
void set_flat_grads(std::vector<torch::Tensor>& params, const torch::Tensor& flat);

// Sums the gradients of every dense parameter (not Stage::is_expert_param) of
// `stages` over `group`, in one all-reduce of one flat buffer: the stages and
// parameters come in the same order on every member (std::map by stage,
// registration order within), so the buffers line up. Missing gradients
// count as zero. Every member must call it.
void sum_dense_grads(const std::map<int, Stage>& stages, Comm& group, const std::string& what);

}  // namespace dp
