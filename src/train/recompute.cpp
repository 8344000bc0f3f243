#include "dualpipe/train/recompute.h"

#include <fmt/format.h>

#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct RecomputeFn : torch::autograd::Function<RecomputeFn> {
  static variable_list forward(AutogradContext* ctx, int64_t body_addr, at::TensorList inputs) {
    ctx->saved_data["body"] = body_addr;
    ctx->save_for_backward(inputs.vec());
    // A custom function's forward runs without gradients: nothing is kept.
    return (*reinterpret_cast<const RecomputeBody*>(body_addr))(inputs.vec());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto& body = *reinterpret_cast<const RecomputeBody*>(ctx->saved_data["body"].toInt());
    std::vector<torch::Tensor> in;
    for (const torch::Tensor& t : ctx->get_saved_variables()) {
      torch::Tensor d = t.detach();
      if (t.requires_grad()) d.requires_grad_(true);
      in.push_back(d);
    }
    std::vector<torch::Tensor> out;
    {
      torch::AutoGradMode with_grad(true);
      out = body(in);
    }
    std::vector<torch::Tensor> roots, root_grads;
    for (std::size_t i = 0; i < out.size() && i < grads.size(); ++i)
      if (out[i].requires_grad() && grads[i].defined()) {
        roots.push_back(out[i]);
        root_grads.push_back(grads[i]);
      }
    if (!roots.empty()) torch::autograd::backward(roots, root_grads);
    variable_list result{torch::Tensor()};  // the body's address
    // An input no gradient reached (an expert that got no rows) gets zeros:
    // a communicating node before it (an all-to-all) needs a tensor.
    for (const torch::Tensor& t : in)
      result.push_back(!t.requires_grad() ? torch::Tensor() : t.grad().defined() ? t.grad() : torch::zeros_like(t));
    return result;
  }
};

}  // namespace

std::vector<torch::Tensor> recomputed(const RecomputeBody& body, const std::vector<torch::Tensor>& inputs) {
  // As a TensorList, so that autograd sees each tensor as an input (a
  // std::vector argument would be taken as a non-tensor one).
  return RecomputeFn::apply(reinterpret_cast<int64_t>(&body), at::TensorList(inputs));
}

RecomputeMode parse_recompute(const std::string& name) {
  if (name == "none") return RecomputeMode::None;
  if (name == "selective") return RecomputeMode::Selective;
  if (name == "full") return RecomputeMode::Full;
  throw Error(fmt::format("--recompute must be none, selective or full (got '{}')", name));
}

}  // namespace dualpipe
