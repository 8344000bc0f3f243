#include "dualpipe/runtime/flat_params.h"

namespace dualpipe {

torch::Tensor flatten(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> parts;
  for (const auto& t : tensors) parts.push_back(t.reshape({-1}));
  return torch::cat(parts);
}

void unflatten_into(const std::vector<torch::Tensor>& tensors, const torch::Tensor& flat) {
  torch::NoGradGuard no_grad;
  int64_t off = 0;
  for (const auto& t : tensors) {
    const int64_t n = t.numel();
    torch::Tensor(t).copy_(flat.narrow(0, off, n).view_as(t));
    off += n;
  }
}

torch::Tensor flat_grads(std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  for (auto& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  return flatten(grads);
}

void set_flat_grads(std::vector<torch::Tensor>& params, const torch::Tensor& flat) {
  std::vector<torch::Tensor> grads;
  for (auto& p : params) grads.push_back(p.mutable_grad());
  unflatten_into(grads, flat);
}

}  // namespace dualpipe
