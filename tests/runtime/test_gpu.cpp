// The runtime with its model on a CUDA device: stages, activations, gradients
// and receive buffers on the GPU, transfers through Gloo with host staging
// (Comm::host_staging). The gradients of one step must equal those of the same
// model run unpipelined in one process on the CPU, in float64. Skipped where
// LibTorch sees no CUDA device (the development machine); run on a GPU
// machine with a CUDA build of LibTorch.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dualpipe/runtime/executor.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"

namespace dualpipe {
namespace {

constexpr int64_t kBatch = 4, kWidth = 8;

torch::Tensor seeded(uint64_t seed, at::IntArrayRef shape) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, gen, torch::kFloat64);
}

// A chain of `stages` stages (Linear + Tanh; the last adds a Linear), built
// with the same values on any device.
PipelineModel chain_model(int stages, torch::Device device) {
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
std::vector<std::vector<torch::Tensor>> reference_grads(int stages, int n) {
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
// gradients on the GPU against the CPU reference.
double gpu_grad_error(const std::string& method, int ranks, int n, bool fb_overlap) {
  auto low = std::make_shared<const Schedule>(lower(generate(method, Shape{ranks, n})));
  const auto ref = reference_grads(low->stages, n);
  std::vector<double> err(static_cast<std::size_t>(ranks), 0.0);
  run_thread_ranks(ranks, [&](std::shared_ptr<Comm> comm) {
    ExecutorOptions o;
    o.device = torch::kCUDA;
    o.fb_overlap = fb_overlap;
    RankExecutor exec(low, chain_model(low->stages, torch::kCUDA), comm, o);
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
  });
  return *std::max_element(err.begin(), err.end());
}

class Gpu : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device seen by LibTorch";
  }
};

TEST_P(Gpu, GradientsOnTheGpuEqualUnpipelinedCpu) {
  const std::string method = GetParam();
  const double e = gpu_grad_error(method, 2, 4, true);
  std::printf("%s on CUDA, P=2 N=4: largest relative gradient difference %.3g\n", method.c_str(), e);
  EXPECT_LT(e, 1e-12);
}

INSTANTIATE_TEST_SUITE_P(Methods, Gpu,
                         ::testing::Values(std::string("1f1b"), std::string("gpipe"), std::string("zb1p"),
                                           std::string("dualpipe"), std::string("dualpipev"), std::string("chimera")),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST_F(Gpu, DualPipeWithoutOverlapToo) { EXPECT_LT(gpu_grad_error("dualpipe", 2, 4, false), 1e-12); }

// Host staging of a collective: the sum lands on the device.
TEST_F(Gpu, StagedAllReduceSumsDeviceTensors) {
  run_thread_ranks(2, [&](std::shared_ptr<Comm> comm) {
    torch::Tensor t = torch::full({5}, static_cast<double>(comm->rank + 1), torch::dtype(torch::kFloat64).device(torch::kCUDA));
    comm->all_reduce(t);
    EXPECT_TRUE(t.is_cuda());
    EXPECT_TRUE(torch::equal(t.cpu(), torch::full({5}, 3.0, torch::kFloat64)));
  });
}

}  // namespace
}  // namespace dualpipe
