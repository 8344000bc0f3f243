#include "runtime/grad_sum.h"

#include <vector>

namespace dp {

void sum_dense_grads(const std::map<int, Stage>& stages, Comm& group, const std::string& what) {
  std::vector<torch::Tensor> grads;
  for (const auto& [s, st] : stages)
    for (auto& item : st.module->named_parameters()) {
      if (st.is_expert_param && st.is_expert_param(item.key())) continue;
      torch::Tensor& p = item.value();
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
    }
  if (grads.empty()) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat_parts;
  for (auto& g : grads) flat_parts.push_back(g.reshape({-1}));
  torch::Tensor flat = torch::cat(flat_parts);
  group.all_reduce(flat, c10d::ReduceOp::SUM, what);
  int64_t off = 0;
  for (auto& g : grads) {
    const int64_t n = g.numel();
    g.copy_(flat.narrow(0, off, n).view_as(g));
    off += n;
  }
}

}  // namespace dp
