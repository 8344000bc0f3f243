#pragma once
// Parameters and gradients laid out flat, one after the other in list order:
// the layout every holder of the same parameters shares, so that one buffer
// (or a bucket of it) can be reduced or gathered in one collective. Used by
// the gradient reducer and by verification.
//
// Thread-safety: functions of their arguments; the tensors are the caller's.
#include <vector>

#include "dualpipe/runtime/torch_compat.h"

namespace dualpipe {

// The tensors as one flat tensor (a copy), in order.
torch::Tensor flatten(const std::vector<torch::Tensor>& tensors);
// Copies `flat` (laid out as flatten) into the tensors, without autograd.
void unflatten_into(const std::vector<torch::Tensor>& tensors, const torch::Tensor& flat);

// The gradients of `params` as one flat tensor (a missing gradient is made
// zero first, so that every holder's buffer has the same layout).
torch::Tensor flat_grads(std::vector<torch::Tensor>& params);
// Writes `flat` (laid out as flat_grads) back into the params' gradients.
void set_flat_grads(std::vector<torch::Tensor>& params, const torch::Tensor& flat);

}  // namespace dualpipe
