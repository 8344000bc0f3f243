#include "dualpipe/train/lean_ops.h"

namespace dualpipe {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct RmsNormFn : torch::autograd::Function<RmsNormFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w, double eps) {
    const torch::Tensor r = torch::rsqrt(x.pow(2).mean(-1, true) + eps);
    ctx->save_for_backward({x, w, r});
    return x * r * w;
  }
  // With n = x r: dw = sum over rows of g n; dx = r (g w - n mean(g w n)).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &w = saved[1], &r = saved[2], &g = grads[0];
    const torch::Tensor n = x * r, gn = g * w;
    torch::Tensor dx = r * (gn - n * (gn * n).mean(-1, true));
    torch::Tensor dw = (g * n).reshape({-1, w.numel()}).sum(0);
    return {dx, dw, torch::Tensor()};
  }
};

struct SwigluFn : torch::autograd::Function<SwigluFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b) {
    ctx->save_for_backward({a, b});
    return torch::silu(a) * b;
  }
  // silu'(a) = s (1 + a (1 - s)), s = sigmoid(a).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &a = saved[0], &b = saved[1], &g = grads[0];
    const torch::Tensor s = torch::sigmoid(a);
    return {g * b * (s * (1 + a * (1 - s))), g * (a * s)};
  }
};

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) { return RmsNormFn::apply(x, w, eps); }

torch::Tensor swiglu(const torch::Tensor& a, const torch::Tensor& b) { return SwigluFn::apply(a, b); }

}  // namespace dualpipe
