// NCCL process groups (--backend nccl): the collectives' CUDA tensors go
// through NCCL on the rank's device with no host copies, CPU tensors and the
// pipeline's transfers through the group's Gloo backend. Skipped where this
// build has no NCCL (Debian's LibTorch 1.13 is CPU only) or LibTorch sees no
// CUDA device; the two-rank tests need two devices (NCCL refuses two ranks
// on one).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cli_run.h"
#include "dualpipe/runtime/backend.h"
#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/runtime/overlap.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/trainer.h"
#include "dualpipe/train/verify.h"
#include "runtime/gpu_chain.h"
#include "thread_ranks.h"

namespace dualpipe {
namespace {

using gpu_chain::gpu_grad_error;
using test_support::run_cli;

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!nccl_compiled_in()) GTEST_SKIP() << "NCCL is not compiled in (a LibTorch without CUDA and NCCL)";
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device seen by LibTorch";
  }
  static void need_devices(int n) {
    if (visible_devices() < n) GTEST_SKIP() << n << " CUDA devices needed, " << visible_devices() << " visible";
  }
};

TEST_F(Nccl, OneRankGroupCarriesDeviceCollectivesThroughNcclAndCpuTensorsThroughGloo) {
  run_thread_ranks(
      1,
      [](std::shared_ptr<Comm> comm) {
        EXPECT_FALSE(comm->host_staging);
        EXPECT_TRUE(comm->stage_transfers);
        const auto* wrapped = dynamic_cast<C10dComm*>(comm.get());
        ASSERT_NE(wrapped, nullptr);
        EXPECT_EQ(compat::cuda_backend_name(wrapped->group()), "nccl");
        const auto cuda = torch::dtype(torch::kFloat64).device(torch::kCUDA, 0);
        torch::Tensor t = torch::arange(5, cuda);
        comm->all_reduce(t, c10d::ReduceOp::SUM, "the test's all-reduce");
        EXPECT_TRUE(t.is_cuda());
        EXPECT_TRUE(torch::equal(t.cpu(), torch::arange(5, torch::kFloat64)));
        torch::Tensor in = torch::arange(6, cuda).reshape({3, 2}), out = torch::zeros({3, 2}, cuda);
        std::vector<int64_t> out_splits{3}, in_splits{3};
        comm->wait(comm->iall_to_all(out, in, out_splits, in_splits), -1, [] { return std::string("an all-to-all"); });
        EXPECT_TRUE(out.is_cuda());
        EXPECT_TRUE(torch::equal(out.cpu(), in.cpu()));
        // The runtime's CPU traffic (losses, counts, metrics) and barriers: Gloo.
        torch::Tensor host = torch::full({3}, 2.0, torch::kFloat64);
        comm->all_reduce(host, c10d::ReduceOp::MAX, "the test's host all-reduce");
        EXPECT_TRUE(torch::equal(host, torch::full({3}, 2.0, torch::kFloat64)));
        comm->barrier("the test's barrier");
      },
      std::chrono::seconds(60), Backend::Nccl);
}

// One rank, no transfers: the model and the executor's buffers on the rank's device, over an NCCL group.
TEST_F(Nccl, OneRankGradientsEqualUnpipelinedCpu) {
  for (const char* method : {"1f1b", "gpipe"}) {
    const double e = gpu_grad_error(method, 1, 4, true, Backend::Nccl);
    std::printf("%s over NCCL, P=1 N=4: largest relative gradient difference %.3g\n", method, e);
    EXPECT_LT(e, 1e-12) << method;
  }
}

TEST_F(Nccl, TwoRankDualPipeGradientsEqualUnpipelinedCpu) {
  need_devices(2);
  for (bool overlap : {true, false}) {
    const double e = gpu_grad_error("dualpipe", 2, 4, overlap, Backend::Nccl);
    std::printf("dualpipe over NCCL, P=2 N=4, F&B overlap %s: largest relative gradient difference %.3g\n",
                overlap ? "on" : "off", e);
    EXPECT_LT(e, 1e-12);
  }
}

// The losses column of a loss CSV (step,loss,...), as text.
std::vector<std::string> csv_losses(const std::string& csv) {
  std::ifstream in(csv);
  std::vector<std::string> out;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    const std::size_t a = line.find(',') + 1;
    out.push_back(line.substr(a, line.find(',', a) - a));
  }
  return out;
}

// `dualpipe train --backend nccl` on one rank (process) equals the same run over Gloo on the CPU, step by step.
TEST_F(Nccl, TrainOnOneRankMatchesGloo) {
  const std::string dir = ::testing::TempDir();
  const std::string base = "train -m 1f1b -p 1 -n 4 --steps 3 --dtype float64 --loss-svg " + dir + "dp_nccl.svg ";
  const std::string gloo = dir + "dp_nccl_gloo.csv", nccl = dir + "dp_nccl_nccl.csv";
  auto r = run_cli(base + "--loss-csv " + gloo);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(base + "--backend nccl --loss-csv " + nccl);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto a = csv_losses(gloo), b = csv_losses(nccl);
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(a, b);  // the CSV's six decimals: float64 runs that agree to ~1e-15 print alike
}

// A checkpoint written on the GPU (CPU copies) resumes on the CPU and ends where the uninterrupted run does.
TEST_F(Nccl, CheckpointOfAGpuRunResumesOverGloo) {
  const std::string dir = ::testing::TempDir() + "dp_nccl_ckpt";
  const std::string base = "train -m 1f1b -p 1 -n 4 --dtype float64 --loss-svg " + ::testing::TempDir() + "dp_nccl.svg ";
  std::filesystem::remove_all(dir);
  const std::string whole = ::testing::TempDir() + "dp_nccl_whole.csv", cut = ::testing::TempDir() + "dp_nccl_cut.csv";
  auto r = run_cli(base + "--steps 4 --loss-csv " + whole);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(base + "--steps 2 --backend nccl --checkpoint-dir " + dir + " --loss-csv " + cut);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(base + "--steps 4 --resume --checkpoint-dir " + dir + " --loss-csv " + cut);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto a = csv_losses(whole), b = csv_losses(cut);
  ASSERT_EQ(a.size(), 4u);
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(a.back(), b.back());
  std::filesystem::remove_all(dir);
}

// The MoE mesh on CUDA devices (DualPipe, P=2 x E=2, a device a rank): the
// all-to-alls go through NCCL, and autograd runs the layers' backward nodes,
// with their combine and dispatch gradients, on its device threads. With the
// F&B overlap on, every gradient equals the unsharded, unpipelined model's
// on the CPU, and every rank's lane carries the same collectives in the same
// order as the same run on the CPU over Gloo: the halves still alternate
// when the backward's exchanges come from a device thread. So too with the
// warm-up forwards paired (F&F pairs: both forwards on their tasks' threads).
void expect_device_run_as_cpu_run(const Schedule& s) {
  TrainOptions t = test_support::small_moe_training(s, 1);
  t.optimize = false;
  MeshShape shape;
  shape.pp = s.ranks;
  shape.ep = 2;
  std::vector<VerifyResult> res(static_cast<std::size_t>(shape.size()));
  run_mesh_threads(
      shape, [&](const Mesh& m) { res[static_cast<std::size_t>(m.rank)] = verify_step(s, t.model, m, VerifyOptions{}); },
      std::chrono::minutes(2), Backend::Nccl);
  for (const VerifyResult& r : res) {
    EXPECT_LE(r.loss_error, 1e-12);
    EXPECT_LE(r.grad_error, 1e-12);
  }
  auto lanes = [&](Backend backend) {
    std::vector<std::vector<std::string>> seqs(static_cast<std::size_t>(shape.size()));
    run_mesh_threads(
        shape,
        [&](const Mesh& m) {
          EXPECT_EQ(m.device.is_cuda(), backend == Backend::Nccl);
          for (const LaneRecord& l : train_rank(s, t, m).last_lane) {
            seqs[static_cast<std::size_t>(m.rank)].push_back(
                fmt::format("{}:{}:{}", l.group, comm_point_name(l.point), static_cast<int>(l.half)));
          }
        },
        std::chrono::minutes(2), backend);
    return seqs;
  };
  const auto cpu = lanes(Backend::Gloo), gpu = lanes(Backend::Nccl);
  ASSERT_FALSE(cpu[0].empty());
  EXPECT_EQ(gpu, cpu);
}

TEST_F(Nccl, MoeOverlapOnDevicesIsExactAndKeepsTheCpuRunsLaneOrder) {
  need_devices(4);
  const Schedule s = generate("dualpipe", Shape{2, 8, 2});
  expect_device_run_as_cpu_run(lower(s));
  expect_device_run_as_cpu_run(lower(pair_forwards(s)));
}

// More ranks on this machine than visible devices: one line, exit 2.
TEST_F(Nccl, MoreThreadRanksThanDevicesAreRefused) {
  const int n = visible_devices() + 1;
  auto r = run_cli("train -m 1f1b -p " + std::to_string(n) + " -n " + std::to_string(2 * n) +
                   " --steps 1 --threads --backend nccl --loss-svg " + ::testing::TempDir() + "dp_nccl.svg --loss-csv " +
                   ::testing::TempDir() + "dp_nccl.csv");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(fmt::format("--backend nccl: {} ranks on this machine need {} CUDA devices; {} visible", n, n,
                                   n - 1)),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(test_support::one_line(r.out)) << r.out;
}

}  // namespace
}  // namespace dualpipe
