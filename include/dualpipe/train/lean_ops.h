#pragma once
// Two element-wise pieces of the deepseek model with backwards of their own,
// so that they keep for the backward only what the formulas need (what the
// planner counts, docs/planner.md), not every intermediate of autograd's
// composition of them:
//
//   rms_norm(x, w) = x / sqrt(mean(x^2) + eps) * w   keeps x, w and one
//                                                    1/rms per row (autograd
//                                                    keeps x twice, x * r and r)
//   swiglu(a, b)   = silu(a) * b                     keeps a and b (autograd
//                                                    keeps a, silu(a) and b)
//
// The gradients are those of the composition (equal within rounding; a test
// compares them). Stateless functions; thread-safe.
#include <torch/torch.h>

namespace dualpipe {

// Over the last dimension of x; w has x's last dimension.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps = 1e-6);

torch::Tensor swiglu(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace dualpipe
