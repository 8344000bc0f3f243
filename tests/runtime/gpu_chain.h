#pragma once
// The GPU tests' model and their gradient check (test_gpu.cpp over Gloo with
// host staging, test_nccl.cpp over NCCL): a float64 chain whose stages,
// activations, gradients and receive buffers live on CUDA devices, run by
// the executor on thread ranks, against the same model unpipelined on the CPU.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "dualpipe/runtime/executor.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"

namespace dualpipe::gpu_chain {

constexpr int64_t kBatch = 4, kWidth = 8;

inline torch::Tensor seeded(uint64_t seed, at::IntArrayRef shape) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, gen, torch::kFloat64);
}

// A chain of `stages` stages (Linear + Tanh; the last adds a Linear), built
// with the same values on any device.
inline PipelineModel chain_model(int stages, torch::Device device) {
  PipelineModel m;
  m.stages = stages;
  m.boundary_shape = {kBatch, kWidth};
  m.boundary_dtype = torch::kFloat64;
  m.build = [stages, device](int stage) {
    torch::nn::Sequential mod(torch::nn::Linear(kWidth, kWidth), torch::nn::Tanh());
    if (stage == stages - 1) mod->push_back(torch::nn::Linear(kWidth, kWidth));
    mod->to(torch::kFloat64);
    {
      torch::NoGradGuard no_grad;
      uint64_t seed = 100 + 10 * static_cast<uint64_t>(stage);
      for (torch::Tensor& p : mod->parameters()) p.copy_(seeded(seed++, p.sizes()) * 0.5);
    }
    mod->to(device);
    Stage st;
    st.module = mod.ptr();
    st.forward = [mod](const torch::Tensor& x) mutable { return mod->forward(x); };
    return st;
  };
  m.input = [device](int mb) { return seeded(1000 + static_cast<uint64_t>(mb), {kBatch, kWidth}).to(device); };
  m.loss = [device](const torch::Tensor& out, int mb) {
    const torch::Tensor target = torch::sin(seeded(2000 + static_cast<uint64_t>(mb), {kBatch, kWidth})).to(device);
    return torch::mse_loss(out, target);
  };
  return m;
}

// Gradients of the mean loss over `n` micro-batches, every stage in one
// process on the CPU: the reference.
inline std::vector<std::vector<torch::Tensor>> reference_grads(int stages, int n) {
  PipelineModel m = chain_model(stages, torch::kCPU);
  std::vector<Stage> st;
  for (int s = 0; s < stages; ++s) st.push_back(m.build(s));
  torch::Tensor total = torch::zeros({}, torch::kFloat64);
  for (int mb = 0; mb < n; ++mb) {
    torch::Tensor x = m.input(mb);
    for (Stage& s : st) x = s.forward(x);
    total = total + m.loss(x, mb) / static_cast<double>(n);
  }
  total.backward();
  std::vector<std::vector<torch::Tensor>> g;
  for (Stage& s : st) {
    g.emplace_back();
    for (const torch::Tensor& p : s.module->parameters()) g.back().push_back(p.grad().clone());
  }
  return g;
}

// Largest relative difference over every stage and rank of the step's
// gradients on the GPU against the CPU reference. Gloo: every rank on the
// current CUDA device, transfers staged through host memory; NCCL: thread
// rank r on CUDA device r, as run_thread_ranks puts its groups.
inline double gpu_grad_error(const std::string& method, int ranks, int n, bool fb_overlap,
                             Backend backend = Backend::Gloo) {
  auto low = std::make_shared<const Schedule>(lower(generate(method, Shape{ranks, n})));
  const auto ref = reference_grads(low->stages, n);
  std::vector<double> err(static_cast<std::size_t>(ranks), 0.0);
  run_thread_ranks(
      ranks,
      [&](std::shared_ptr<Comm> comm) {
        const torch::Device device =
            backend == Backend::Nccl ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(comm->rank))
                                     : torch::Device(torch::kCUDA);
        ExecutorOptions o;
        o.device = device;
        o.fb_overlap = fb_overlap;
        RankExecutor exec(low, chain_model(low->stages, device), comm, o);
        exec.step();
        exec.sum_replica_grads();
        double e = 0;
        for (const auto& [s, st] : exec.stages()) {
          const std::vector<torch::Tensor> params = st.module->parameters();
          for (std::size_t i = 0; i < params.size(); ++i) {
            EXPECT_TRUE(params[i].grad().is_cuda());
            const torch::Tensor g = params[i].grad().cpu(), r = ref[static_cast<std::size_t>(s)][i];
            e = std::max(e, (g - r).abs().max().item<double>() / std::max(r.abs().max().item<double>(), 1e-300));
          }
        }
        err[static_cast<std::size_t>(comm->rank)] = e;
      },
      std::chrono::minutes(2), backend);
  return *std::max_element(err.begin(), err.end());
}

}  // namespace dualpipe::gpu_chain
