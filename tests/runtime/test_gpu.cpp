// The runtime with its model on a CUDA device: stages, activations, gradients
// and receive buffers on the GPU, transfers through Gloo with host staging
// (Comm::host_staging). The gradients of one step must equal those of the same
// model run unpipelined in one process on the CPU, in float64. Skipped where
// LibTorch sees no CUDA device (the development machine); run on a GPU
// machine with a CUDA build of LibTorch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>

#include "dualpipe/runtime/launch.h"
#include "runtime/gpu_chain.h"

namespace dualpipe {
namespace {

using gpu_chain::gpu_grad_error;

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
