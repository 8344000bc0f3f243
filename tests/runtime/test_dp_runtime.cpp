// Data parallelism and ZeRO-1: D replicas of the pipeline, one gradient
// reduction over every holder of a parameter, sharded optimizer state; all
// against one process running every micro-batch of the global batch.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cli_run.h"
#include "dualpipe/runtime/executor.h"
#include "dualpipe/runtime/grad_reduce.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "thread_ranks.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/models.h"
#include "train/remove_tree.h"
#include "dualpipe/train/trainer.h"
#include "dualpipe/train/verify.h"

namespace dualpipe {
namespace {

int error_lines(const std::string& text) {
  int n = 0;
  for (std::size_t at = text.find("dualpipe: error:"); at != std::string::npos; at = text.find("dualpipe: error:", at + 1)) ++n;
  return n;
}

ModelConfig small_model(const Schedule& s, const std::string& name) {
  ModelConfig c;
  c.name = name;
  c.stages = s.stages;
  c.micro_batches = s.micro_batches;
  c.hidden = 16;
  c.heads = 2;
  c.seq_len = name == "mlp" ? 4 : 6;
  c.micro_batch_size = 2;
  c.layers = s.stages;
  c.experts = 4;
  c.top_k = 2;
  c.dtype = torch::kFloat64;
  return c;
}

using test_support::verify_mesh;

struct Case {
  std::string method;
  int ranks, micro_batches;
};

class DpVerify : public ::testing::TestWithParam<Case> {};

// D = 2 pipelines on their own halves of the batch take the step of one
// process on all 2N micro-batches: gradients (summed over the replicas and,
// for DualPipe and Chimera, over a stage's two copies, in one reduction) and,
// with ZeRO-1, the gradient chunks each rank owns and the parameters after
// one sharded AdamW step.
TEST_P(DpVerify, ExactAgainstOneProcessOnTheWholeBatch) {
  const Case& k = GetParam();
  Schedule s = generate(k.method, Shape{k.ranks, k.micro_batches, 2});
  const ModelConfig c = small_model(s, "mlp");
  MeshShape shape;
  shape.dp = 2;
  VerifyOptions plain;
  plain.reduce.bucket_bytes = 512;  // several buckets per stage
  VerifyResult r = verify_mesh(s, c, shape, plain);
  EXPECT_LT(r.loss_error, 1e-12);
  EXPECT_LT(r.grad_error, 1e-12);
  EXPECT_EQ(r.param_error, -1);

  VerifyOptions zero = plain;
  zero.reduce.zero = true;
  zero.optimizer_step = true;
  VerifyResult z = verify_mesh(s, c, shape, zero);
  EXPECT_LT(z.loss_error, 1e-12);
  EXPECT_LT(z.grad_error, 1e-12);
  EXPECT_GE(z.param_error, 0);
  EXPECT_LT(z.param_error, 1e-12);
  bool chunks_compared = false;
  for (const auto& [name, e] : z.per_param) chunks_compared |= name.find("gradient chunks") != std::string::npos;
  EXPECT_TRUE(chunks_compared);
}

INSTANTIATE_TEST_SUITE_P(Methods, DpVerify,
                         ::testing::Values(Case{"dualpipe", 2, 4}, Case{"dualpipev", 2, 4}, Case{"1f1b", 2, 4},
                                           Case{"gpipe", 2, 4}, Case{"zb1p", 2, 4}, Case{"zbv", 2, 4},
                                           Case{"interleaved-1f1b", 2, 4}, Case{"chimera", 2, 4}),
                         [](const auto& param_info) {
                           std::string n = param_info.param.method;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

// The whole mesh at once: MoE experts sharded over E = 2, pipelines
// replicated D = 2 (8 ranks): dense gradients over 2 x 2 x 2 holders, expert
// gradients over 2 x 2.
TEST(DpRuntime, MoeOnAPipelineExpertDataMesh) {
  Schedule s = generate("dualpipe", Shape{2, 4, 2});
  const ModelConfig c = small_model(s, "moe");
  MeshShape shape;
  shape.ep = 2;
  shape.dp = 2;
  VerifyOptions o;
  o.reduce.zero = true;
  o.optimizer_step = true;
  VerifyResult r = verify_mesh(s, c, shape, o);
  EXPECT_LT(r.loss_error, 1e-12);
  EXPECT_LT(r.grad_error, 1e-12);
  EXPECT_LT(r.param_error, 1e-12);
  EXPECT_GE(r.param_error, 0);
}

// The holders of a stage's parameters, from the mesh and the placement.
TEST(DpRuntime, HoldersAreReplicasTimesExpertTimesData) {
  Mesh m;
  m.shape = MeshShape{4, 2, 2};
  m.coord = MeshCoord{1, 1, 0};
  m.rank = mesh_rank(m.shape, m.coord);
  // DualPipe: stage held by pipeline ranks 1 and 2.
  EXPECT_EQ(stage_holders(m, {1, 2}, false), (std::vector<int>{1, 2, 5, 6, 9, 10, 13, 14}));
  // Its experts: only this expert index, in both data replicas.
  EXPECT_EQ(stage_holders(m, {1, 2}, true), (std::vector<int>{5, 6, 13, 14}));
  EXPECT_EQ(stage_holders(m, {1}, true), (std::vector<int>{5, 13}));
}

// Bucketed collectives in a fixed order: two runs, and the reduction
// overlapped with the step or not, give bit-identical parameters.
TEST(DpRuntime, ReductionIsDeterministicAndOverlapChangesNoBit) {
  Schedule s = lower(generate("dualpipe", Shape{2, 4, 2}));
  auto train = [&](bool overlap, bool zero) {
    TrainOptions t = test_support::small_train_options(s, "mlp", 3, torch::kFloat32);
    t.reduce.bucket_bytes = 256;
    t.reduce.overlap = overlap;
    t.reduce.zero = zero;
    std::vector<RankRun> runs(4);
    run_mesh_threads(MeshShape{2, 1, 2}, [&](const Mesh& m) { runs[m.rank] = train_rank(s, t, m); });
    return runs;
  };
  const auto a = train(true, false), b = train(true, false), c = train(false, false);
  for (int r = 0; r < 4; ++r)
    for (const auto& [stage, p] : a[r].final_params) {
      EXPECT_TRUE(torch::equal(p, b[r].final_params.at(stage))) << "rank " << r << " stage " << stage;
      EXPECT_TRUE(torch::equal(p, c[r].final_params.at(stage))) << "rank " << r << " stage " << stage;
    }
  // Every holder ends with the same parameters (rank 0 and its data replica, rank 2).
  for (const auto& [stage, p] : a[0].final_params) EXPECT_TRUE(torch::equal(p, a[2].final_params.at(stage)));
  // ZeRO-1: the same on every holder too, and close to the unsharded run.
  const auto z = train(true, true);
  for (const auto& [stage, p] : z[0].final_params) {
    EXPECT_TRUE(torch::equal(p, z[2].final_params.at(stage)));
    EXPECT_LT((p - a[0].final_params.at(stage)).abs().max().item<double>(), 1e-5);
  }
}

// As PyTorch DDP's hooks do, a bucket starts reducing the moment its
// gradients are final, inside the stage's last backward (or W): when that
// action ends (on_grads_done), some of the stage's buckets are already on
// their way. Without the early start none would be until then.
TEST(DpRuntime, BucketsStartInsideTheStagesLastBackward) {
  for (const char* method : {"1f1b", "zb1p", "dualpipe"}) {
    Schedule s = lower(generate(method, Shape{2, 4}));
    TrainOptions t = test_support::small_train_options(s, "mlp", 1, torch::kFloat32);
    std::vector<int> early(4, 0), stages(4, 0);
    run_mesh_threads(MeshShape{2, 1, 2}, [&](const Mesh& m) {
      auto engine = std::make_shared<OverlapEngine>();
      PipelineModel model = make_model(rank_model_config(t.model, s, m), expert_group(m, engine));
      RankExecutor exec(s, m.coord.pp, model, m.pipeline, rank_executor_options(m, true, engine));
      ReduceOptions ro;
      ro.bucket_bytes = 256;  // one bucket per weight
      std::unique_ptr<GradReducer> reducer = make_reducer(exec, m, ro);
      GradReducer* r = reducer.get();
      exec.set_on_grads_done([&early, &stages, r, rank = m.rank](int stage) {
        early[rank] += r->buckets_started(stage) > 0 ? 1 : 0;
        ++stages[rank];
        r->start(stage);
      });
      exec.step();
      reducer->finish();
    });
    for (int rank = 0; rank < 4; ++rank) {
      EXPECT_GT(stages[rank], 0) << method << " rank " << rank;
      EXPECT_EQ(early[rank], stages[rank]) << method << " rank " << rank;
    }
  }
}

// A D = 2, ZeRO-1 run checkpointed and resumed continues bit for bit: each
// rank's file holds its chunks of AdamW's state.
TEST(DpRuntime, ShardedResumeIsBitIdentical) {
  Schedule s = lower(generate("dualpipe", Shape{2, 4, 2}));
  const MeshShape shape{2, 1, 2};
  const std::string dir = ::testing::TempDir() + "dp_resume_" + std::to_string(::getpid());
  remove_tree(dir);
  auto train = [&](int steps, int resume_step) {
    TrainOptions t = test_support::small_train_options(s, "mlp", steps, torch::kFloat32);
    t.reduce.zero = true;
    t.reduce.bucket_bytes = 256;
    t.checkpoint.dir = dir;
    t.checkpoint.identity = run_identity(s, t.model);
    t.checkpoint.resume_step = resume_step;
    std::vector<RankRun> runs(static_cast<std::size_t>(shape.size()));
    run_mesh_threads(shape, [&](const Mesh& m) { runs[static_cast<std::size_t>(m.rank)] = train_rank(s, t, m); });
    return runs;
  };
  const auto first = train(2, 0);
  const auto resumed = train(4, 2);
  remove_tree(dir);
  const auto straight = train(4, 0);
  remove_tree(dir);
  ASSERT_EQ(resumed[0].steps.size(), 2u);
  for (int k = 0; k < 2; ++k) EXPECT_EQ(straight[0].steps[static_cast<std::size_t>(k + 2)].loss, resumed[0].steps[static_cast<std::size_t>(k)].loss);
  for (int r = 0; r < shape.size(); ++r)
    for (const auto& [stage, p] : straight[static_cast<std::size_t>(r)].final_params)
      EXPECT_TRUE(torch::equal(p, resumed[static_cast<std::size_t>(r)].final_params.at(stage))) << "rank " << r;
  EXPECT_EQ(first[0].steps.size(), 2u);
}

// ZeRO-1 divides AdamW's state by the number of holders of each parameter.
TEST(DpRuntime, ZeroOneDividesOptimizerStateByTheHolders) {
  for (const std::string& method : std::vector<std::string>{"1f1b", "dualpipe"}) {
    Schedule s = lower(generate(method, Shape{2, 4, 2}));
    auto bytes = [&](bool zero) {
      TrainOptions t = test_support::small_train_options(s, "mlp", 1, torch::kFloat32);
      t.reduce.zero = zero;
      std::vector<double> b(4);
      run_mesh_threads(MeshShape{2, 1, 2}, [&](const Mesh& m) { b[m.rank] = train_rank(s, t, m).optimizer_bytes; });
      return b;
    };
    const auto full = bytes(false), sharded = bytes(true);
    // Holders: D = 2, times 2 where the method keeps two copies of a stage.
    const double holders = method == "dualpipe" ? 4 : 2;
    for (int r = 0; r < 4; ++r) {
      EXPECT_GT(full[r], 0);
      // Chunks round up: within a few elements of an exact division.
      EXPECT_NEAR(sharded[r] * holders / full[r], 1.0, 0.02) << method << " rank " << r;
    }
  }
}

// A caller's single pipeline group (no group factory) still sums DualPipe's
// two copies of a stage, point to point, to the same gradients.
TEST(DpRuntime, SinglePipelineGroupSumsReplicasPointToPoint) {
  Schedule s = generate("dualpipe", Shape{2, 4, 2});
  const ModelConfig c = small_model(s, "mlp");
  VerifyResult r = test_support::verify_threads(s, c);
  EXPECT_LT(r.grad_error, 1e-12);
}

TEST(DpRuntimeCli, VerifyWithProcessRanksPasses) {
  auto r = test_support::run_cli(
      "verify -m zb1p -p 2 -n 4 --dp 2 --zero 1 --bucket-mb 0.001 --hidden 16 --seq-len 4");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("data parallel: 2 pipeline replicas, 8 micro-batches in all"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters after one AdamW step"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
}

TEST(DpRuntimeCli, BadInputIsOneLineWithCode2) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"verify -m 1f1b -p 2 -n 4 --dp 0", "--dp must be in 1..64 (got 0)"},
      {"verify -m 1f1b -p 2 -n 4 --zero 2", "--zero must be 0 or 1 (got 2)"},
      {"verify -m 1f1b -p 2 -n 4 --bucket-mb 0", "--bucket-mb must be in"},
      {"verify -m 1f1b -p 8 -n 8 --dp 9 --threads", "more than the 64"},
  };
  for (const auto& [args, want] : cases) {
    auto r = test_support::run_cli(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(want), std::string::npos) << args << "\n" << r.out;
    EXPECT_EQ(error_lines(r.out), 1) << args << "\n" << r.out;
  }
}

// A checkpoint written with D = 2 is refused by a run with D = 1, naming both.
TEST(DpRuntimeCli, CheckpointOfAnotherMeshIsRefused) {
  const std::string dir = ::testing::TempDir() + "dp_ck_" + std::to_string(::getpid());
  const std::string base = "train -m 1f1b -p 2 -n 4 --model mlp --hidden 16 --seq-len 4 --threads --loss-csv /dev/null "
                           "--loss-svg /dev/null --checkpoint-dir " + dir;
  auto first = test_support::run_cli(base + " --steps 2 --dp 2 --zero 1");
  ASSERT_EQ(first.code, 0) << first.out;
  auto resumed = test_support::run_cli(base + " --steps 4 --dp 2 --zero 1 --resume");
  EXPECT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("resuming from"), std::string::npos) << resumed.out;
  auto other = test_support::run_cli(base + " --steps 6 --dp 1 --zero 1 --resume");
  EXPECT_EQ(other.code, 2) << other.out;
  EXPECT_NE(other.out.find("dp 2; this run has dp 1"), std::string::npos) << other.out;
  remove_tree(dir);
}

}  // namespace
}  // namespace dualpipe
