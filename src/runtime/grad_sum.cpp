#include "runtime/grad_sum.h"

#include <vector>

namespace dp {

torch::Tensor flat_grads(std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> parts;
  for (auto& p : params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    parts.push_back(p.grad().reshape({-1}));
  }
  return torch::cat(parts);
}

void set_flat_grads(std::vector<torch::Tensor>& params, const torch::Tensor& flat) {
  torch::NoGradGuard no_grad;
  int64_t off = 0;
  for (auto& p : params) {
    const int64_t n = p.numel();
    p.mutable_grad().copy_(flat.narrow(0, off, n).view_as(p));
    off += n;
  }
}

void sum_dense_grads(const std::map<int, Stage>& stages, Comm& group, const std::string& what) {
  std::vector<torch::Tensor> dense;
  for (const auto& [s, st] : stages)
    for (auto& item : st.module->named_parameters())
      if (!st.is_expert_param || !st.is_expert_param(item.key())) dense.push_back(item.value());
  if (dense.empty()) return;
  torch::Tensor flat = flat_grads(dense);
  group.all_reduce(flat, c10d::ReduceOp::SUM, what);
  set_flat_grads(dense, flat);
}

}  // namespace dp
