// The LibTorch runtime: split backward, executor, replicas, verify.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "thread_ranks.h"

#include <atomic>
#include <cstdio>
#include <sched.h>
#include <sys/wait.h>
#include <thread>

#include "dualpipe/runtime/executor.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/runtime/split_linear.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/verify.h"

namespace dualpipe {
namespace {

TEST(SplitLinear, DeferredWeightGradientEqualsFullBackward) {
  torch::manual_seed(0);
  SplitLinear full(6, 5, torch::kFloat64), split(6, 5, torch::kFloat64);
  {
    torch::NoGradGuard g;
    split->weight.copy_(full->weight);
  }
  WeightGradStore store;
  split->store = &store;
  auto x1 = torch::randn({3, 4, 6}, torch::kFloat64).requires_grad_(true);
  auto x2 = x1.detach().clone().requires_grad_(true);
  auto gy = torch::randn({3, 4, 5}, torch::kFloat64);
  torch::autograd::backward({full(x1)}, {gy});

  store.begin(7);
  torch::autograd::backward({split(x2)}, {gy});
  store.end();
  // I: the input gradient is there, the weight gradient is not yet.
  EXPECT_TRUE(torch::allclose(x2.grad(), x1.grad(), 0, 0));
  EXPECT_FALSE(split->weight.grad().defined());
  EXPECT_EQ(store.pending(), 1u);
  EXPECT_EQ(store.run(3), 0u);  // another micro-batch's W finds nothing
  // W: now it is, and equal to the full backward's.
  EXPECT_EQ(store.run(7), 1u);
  EXPECT_EQ(store.pending(), 0u);
  ASSERT_TRUE(split->weight.grad().defined());
  EXPECT_TRUE(torch::allclose(split->weight.grad(), full->weight.grad(), 1e-14, 0));
}

ModelConfig small_mlp(const Schedule& s, torch::Dtype dtype = torch::kFloat64) {
  ModelConfig c;
  c.stages = s.stages;
  c.micro_batches = s.micro_batches;
  c.hidden = 16;
  c.seq_len = 4;
  c.micro_batch_size = 2;
  c.dtype = dtype;
  return c;
}

using test_support::verify_threads;

// Every method, P = 2, 4 and 8 (thread ranks), float64: identical to
// unpipelined training within 1e-12.
TEST(Runtime, EveryMethodMatchesUnpipelinedTraining) {
  at::set_num_threads(1);
  int runs = 0;
  for (const Method& m : methods()) {
    for (int P : {2, 4, 8}) {
      const int N = 2 * P;
      Schedule s;
      try {
        s = m.generate(Shape{P, N, 2});
      } catch (const Error&) {
        continue;  // shapes a method does not support are tested with the method
      }
      VerifyResult r = verify_threads(s, small_mlp(s));
      EXPECT_LE(r.loss_error, 1e-12) << m.name << " P=" << P;
      EXPECT_LE(r.grad_error, 1e-12) << m.name << " P=" << P;
      EXPECT_EQ(r.per_param.size(), static_cast<std::size_t>(2 * s.stages));
      ++runs;
    }
  }
  EXPECT_EQ(runs, static_cast<int>(3 * methods().size()));  // every method runs at every P here
}

TEST(Runtime, Float32IsCloseToo) {
  at::set_num_threads(1);
  Schedule s = dualpipe(Shape{4, 8});
  VerifyResult r = verify_threads(s, small_mlp(s, torch::kFloat32));
  EXPECT_LE(r.grad_error, 1e-5);
  EXPECT_GT(r.grad_error, 0.0);  // float32 rounding does show: the comparison is real
}

// Without the replica sum, each DualPipe replica holds only its direction's
// half of the gradient: the comparison must see it.
TEST(Runtime, ReplicaSumIsWhatMakesDualPipeExact) {
  at::set_num_threads(1);
  Schedule s = lower(dualpipe(Shape{4, 8}));
  ModelConfig c = small_mlp(s);
  PipelineModel model = make_model(c);
  Reference ref = unpipelined_step(model, s.micro_batches, c.micro_batch_size);
  std::atomic<int> replicated{0};
  std::vector<double> before(s.ranks), after(s.ranks);
  run_thread_ranks(s.ranks, [&](std::shared_ptr<Comm> comm) {
    RankExecutor ex(s, comm->rank, model, comm);
    ex.step();
    auto worst = [&] {
      double w = 0;
      for (const auto& [st, stage] : ex.stages()) {
        auto params = stage.module->parameters();
        for (std::size_t i = 0; i < params.size(); ++i)
          w = std::max(w, relative_difference(params[i].grad(), ref.grads[st][i]));
      }
      return w;
    };
    before[comm->rank] = worst();
    ex.sum_replica_grads();
    after[comm->rank] = worst();
    for (const auto& reps : ex.replicas()) replicated += reps.size() == 2;
  });
  EXPECT_EQ(replicated.load(), 4 * 4);  // every rank sees all 4 stages with 2 replicas
  for (int r = 0; r < s.ranks; ++r) {
    EXPECT_GT(before[r], 0.1) << "rank " << r;
    EXPECT_LE(after[r], 1e-12) << "rank " << r;
  }
}

// A stage's own F&B hook is what runs every overlapped pair: here one that
// runs the backward half first (the two halves are independent micro-batches,
// so any interleaving is allowed). It must be called once per F&B action of
// the schedule and leave the gradients exact.
TEST(Runtime, OverlappedHookRunsEveryPairAndStaysExact) {
  at::set_num_threads(1);
  Schedule s = lower(dualpipe(Shape{4, 8}));
  ModelConfig c = small_mlp(s);
  PipelineModel model = make_model(c);
  Reference ref = unpipelined_step(model, s.micro_batches, c.micro_batch_size);
  std::atomic<int> calls{0};
  PipelineModel hooked = model;
  hooked.build = [&, base = model.build](int stage) {
    Stage st = base(stage);
    st.overlapped = [&](const std::function<void()>& fwd, const std::function<void()>& bwd) {
      ++calls;
      bwd();
      fwd();
    };
    return st;
  };
  int pairs = 0;
  for (const auto& rank : s.actions)
    for (const Action& a : rank) pairs += a.op == Op::FB;
  ASSERT_GT(pairs, 0);
  std::vector<double> worst(s.ranks, 1.0);
  run_thread_ranks(s.ranks, [&](std::shared_ptr<Comm> comm) {
    RankExecutor ex(s, comm->rank, hooked, comm);
    ex.step();
    ex.sum_replica_grads();
    double w = 0;
    for (const auto& [st, stage] : ex.stages()) {
      auto params = stage.module->parameters();
      for (std::size_t i = 0; i < params.size(); ++i)
        w = std::max(w, relative_difference(params[i].grad(), ref.grads[st][i]));
    }
    worst[comm->rank] = w;
  });
  EXPECT_EQ(calls.load(), pairs);
  for (int r = 0; r < s.ranks; ++r) EXPECT_LE(worst[r], 1e-12) << "rank " << r;
}

TEST(Runtime, LossesComeBackFromTheLastStages) {
  at::set_num_threads(1);
  Schedule s = lower(dualpipe(Shape{2, 4}));
  ModelConfig c = small_mlp(s);
  PipelineModel model = make_model(c);
  Reference ref = unpipelined_step(model, s.micro_batches, c.micro_batch_size);
  std::vector<std::vector<std::pair<int, double>>> losses(2);
  run_thread_ranks(2, [&](std::shared_ptr<Comm> comm) {
    RankExecutor ex(s, comm->rank, model, comm);
    losses[comm->rank] = ex.step().losses;
  });
  // Direction 0 (micro-batches 0, 1) ends on rank 1, direction 1 (2, 3) on rank 0.
  ASSERT_EQ(losses[1].size(), 2u);
  ASSERT_EQ(losses[0].size(), 2u);
  EXPECT_EQ(losses[1][0].first, 0);
  EXPECT_EQ(losses[0][0].first, 2);
  for (const auto& rank : losses)
    for (const auto& [mb, l] : rank) EXPECT_NEAR(l, ref.losses[mb], 1e-12 * std::abs(ref.losses[mb]));
}

// Ranks switch before they start their threads, so that Gloo's I/O thread
// runs under the same policy; the test thread itself is left as it was.
TEST(Launch, BatchSchedulingIsInheritedByThreadsStartedLater) {
  const int before = sched_getscheduler(0);
  int self = -1, child = -1;
  std::thread([&] {
    use_batch_scheduling();
    self = sched_getscheduler(0);
    std::thread([&] { child = sched_getscheduler(0); }).join();
  }).join();
  EXPECT_EQ(self, SCHED_BATCH);
  EXPECT_EQ(child, SCHED_BATCH);
  EXPECT_EQ(sched_getscheduler(0), before);
}

// A library user's mistakes come back as typed errors naming the mismatch.
TEST(Runtime, ExecutorRejectsMismatchesWithTypedErrors) {
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  ModelConfig c = small_mlp(s);
  auto kind_of = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const SetupError& e) {
      return static_cast<int>(e.kind);
    }
    return -1;
  };
  run_thread_ranks(2, [&](std::shared_ptr<Comm> comm) {
    ModelConfig three = c;
    three.stages = 3;
    EXPECT_EQ(kind_of([&] { RankExecutor(s, comm->rank, make_model(three), comm); }), SetupError::StageCount);
    EXPECT_EQ(kind_of([&] { RankExecutor(one_f_one_b(Shape{2, 2}), comm->rank, make_model(c), comm); }),
              SetupError::NotLowered);
    EXPECT_EQ(kind_of([&] { RankExecutor(lower(one_f_one_b(Shape{4, 4})), comm->rank, make_model(small_mlp(lower(one_f_one_b(Shape{4, 4})))), comm); }),
              SetupError::GroupSize);
    ExecutorOptions bad;
    bad.data_shard = 2;
    bad.data_shards = 2;
    EXPECT_EQ(kind_of([&] { RankExecutor(s, comm->rank, make_model(c), comm, bad); }), SetupError::BadOption);
    EXPECT_EQ(kind_of([&] { RankExecutor(s, comm->rank, make_model(c), nullptr); }), SetupError::GroupSize);
  });
}

using test_support::CliRun;
using test_support::run_cli;

TEST(VerifyCli, ProcessRanksPassAndReport) {
  CliRun r = run_cli("verify -m dualpipe -p 4 -n 8");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  down.weight "), std::string::npos) << r.out;  // its group: every stage's down.weight
  EXPECT_NE(r.out.find("process ranks"), std::string::npos) << r.out;
}

TEST(VerifyCli, BadInputExitsWithCode2) {
  for (const auto& [args, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"verify -m dualpipe -p 4 -n 8 --model nosuch", "unknown model 'nosuch'"},
           {"verify -m dualpipe -p 4 -n 8 --hidden 0", "--hidden must be in 1..1048576 (got 0)"},
           {"verify -m dualpipe -p 4 -n 8 --dtype float16", "float16"},
           {"verify -m dualpipe -p 4 -n 8 --timeout 0", "--timeout"},
       }) {
    CliRun r = run_cli(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(fragment), std::string::npos) << args << "\n" << r.out;
  }
  // Started by torchrun with a world that does not match the schedule.
  CliRun r = run_cli("verify -m dualpipe -p 4 -n 8", "RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("WORLD_SIZE=2 but the schedule has 4 ranks"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dualpipe
