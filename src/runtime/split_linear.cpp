#include "dualpipe/runtime/split_linear.h"

namespace dualpipe {

void WeightGradStore::defer(std::function<void()> work) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_[key_].work.push_back(std::move(work));
}

std::size_t WeightGradStore::run(long key) {
  std::size_t n = 0;
  while (run_one(key)) ++n;
  std::lock_guard<std::mutex> lock(mu_);
  pending_.erase(key);  // the key's count of closures run starts again
  return n;
}

int WeightGradStore::next_index(long key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(key);
  return it == pending_.end() || it->second.work.empty() ? -1 : it->second.ran;
}

bool WeightGradStore::run_one(long key) {
  std::function<void()> work;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(key);
    if (it == pending_.end() || it->second.work.empty()) return false;
    work = std::move(it->second.work.front());
    it->second.work.pop_front();
    ++it->second.ran;
  }
  torch::NoGradGuard no_grad;
  work();
  return true;
}

std::size_t WeightGradStore::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t n = 0;
  for (const auto& kv : pending_) n += kv.second.work.empty() ? 0 : 1;
  return n;
}

void WeightGradStore::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.clear();
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Adds dL/dW = g^T x (rows: every token of the micro-batch) into w.grad.
// Written by us rather than returned to autograd, in both the deferred and
// the immediate case: accumulating with addmm_ (beta = 1) saves the
// temporary gradient and the separate pass that adds it in.
void accumulate_weight_grad(torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& g, WeightGradStore* store) {
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor g2 = g.reshape({-1, w.size(0)}), x2 = x.reshape({-1, w.size(1)});
    torch::Tensor& grad = w.mutable_grad();
    if (grad.defined())
      grad.addmm_(g2.t(), x2);
    else
      grad = g2.t().mm(x2);
  }
  if (store && store->on_written) store->on_written(w);
}

struct LinearFn : torch::autograd::Function<LinearFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               int64_t store_addr) {
    ctx->save_for_backward({x});
    ctx->saved_data["w"] = w;  // the parameter itself: its .grad is where W accumulates
    ctx->saved_data["store"] = store_addr;
    return torch::matmul(x, w.t());
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    torch::Tensor x = ctx->get_saved_variables()[0];
    torch::Tensor w = ctx->saved_data["w"].toTensor();
    torch::Tensor g = grads[0];
    torch::Tensor grad_x = torch::matmul(g, w);
    auto* store = reinterpret_cast<WeightGradStore*>(ctx->saved_data["store"].toInt());
    if (store && store->deferring())
      store->defer([x, g, w, store]() mutable { accumulate_weight_grad(w, x, g, store); });
    else
      accumulate_weight_grad(w, x, g, store);
    // No gradient for w through autograd: it is in w.grad already.
    return {grad_x, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

SplitLinearImpl::SplitLinearImpl(int64_t in, int64_t out, torch::Dtype dtype) {
  // Same initialisation as torch.nn.Linear: U(-1/sqrt(in), 1/sqrt(in)).
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = register_parameter("weight", torch::empty({out, in}, torch::dtype(dtype)).uniform_(-bound, bound));
}

torch::Tensor SplitLinearImpl::forward(const torch::Tensor& x) {
  return LinearFn::apply(x, weight, reinterpret_cast<int64_t>(store));
}

}  // namespace dualpipe
