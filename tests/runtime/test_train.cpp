// Training across ranks, measured timelines, and the train/bench commands.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "thread_ranks.h"

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe {
namespace {

TrainOptions mlp_options(const Schedule& s, int steps) {
  return test_support::small_train_options(s, "mlp", steps, torch::kFloat64);
}

using test_support::train_threads;

TEST(Train, LossFallsAndEveryRankAgrees) {
  at::set_num_threads(1);
  Schedule s = lower(one_f_one_b(Shape{2, 4}));
  auto runs = train_threads(s, mlp_options(s, 20));
  ASSERT_EQ(runs[0].steps.size(), 20u);
  EXPECT_LT(runs[0].steps.back().loss, 0.9 * runs[0].steps.front().loss);
  for (std::size_t k = 0; k < 20; ++k) EXPECT_EQ(runs[1].steps[k].loss, runs[0].steps[k].loss);
}

// The two replicas of each DualPipe stage see different micro-batches but must
// take identical optimizer steps: after training they are still bit-equal.
TEST(Train, DualPipeReplicasStayIdentical) {
  at::set_num_threads(1);
  const int P = 4;
  Schedule s = lower(dualpipe(Shape{P, 8}));
  TrainOptions t = mlp_options(s, 5);
  t.clip = 1e-3;  // below the gradient norm, so clipping acts and the global norm must agree too
  auto runs = train_threads(s, t);
  EXPECT_GT(runs[0].steps.front().grad_norm, t.clip);
  for (int r = 0; r < P; ++r) {
    ASSERT_EQ(runs[r].final_params.size(), 2u);
    for (const auto& [stage, flat] : runs[r].final_params) {
      const int mirror = P - 1 - r;  // holds the same two stages
      ASSERT_TRUE(runs[mirror].final_params.count(stage)) << "stage " << stage;
      EXPECT_TRUE(torch::equal(flat, runs[mirror].final_params.at(stage))) << "stage " << stage << " rank " << r;
    }
  }
}

TEST(Train, MatchesTheSameTrainingOnOneRank) {
  // Pipelining must not change training: P=4 DualPipe and a single rank
  // running all stages take the same steps (float64, up to rounding).
  at::set_num_threads(1);
  Schedule dp4 = lower(dualpipe(Shape{4, 8}));
  TrainOptions t = mlp_options(dp4, 4);
  auto piped = train_threads(dp4, t);
  Schedule one = gpipe(Shape{1, 8});
  Schedule single = one;
  // The same 4-stage model on one rank: stages 0..3 in sequence per micro-batch.
  single.stages = 4;
  single.actions[0].clear();
  for (int mb = 0; mb < 8; ++mb)
    for (int st = 0; st < 4; ++st) single.actions[0].push_back(Action::make(Op::F, st, mb));
  for (int mb = 0; mb < 8; ++mb)
    for (int st = 3; st >= 0; --st) single.actions[0].push_back(Action::make(Op::B, st, mb));
  single = lower(single);
  auto serial = train_threads(single, t);
  for (std::size_t k = 0; k < 4; ++k)
    EXPECT_NEAR(piped[0].steps[k].loss, serial[0].steps[k].loss, 1e-12 * serial[0].steps[k].loss) << "step " << k;
  for (int st = 0; st < 4; ++st)
    EXPECT_TRUE(torch::allclose(piped[st].final_params.at(st), serial[0].final_params.at(st), 1e-10, 1e-12))
        << "stage " << st;
}

TEST(Measured, CostsAndTimelineFromActionTimes) {
  // 1F1B, 2 ranks, 1 micro-batch, lowered:
  // rank 0: 0F0 0SEND_F0 0RECV_B0 0B0 ; rank 1: 1RECV_F0 1F0 1B0 1SEND_B0
  Schedule s = lower(one_f_one_b(Shape{2, 1}));
  std::vector<std::vector<ActionTime>> t = {
      {{0, 1, 0}, {1, 1, 0}, {1, 1, 0}, {1, 6, 1.5}},   // 0B0 waited 1.5 for its gradient
      {{0, 0, 0}, {0, 2.5, 0.5}, {2.5, 4.5, 0}, {4.5, 4.5, 0}},
  };
  Costs c = measured_costs(s, t);
  EXPECT_DOUBLE_EQ(c.f(0), 1);
  EXPECT_DOUBLE_EQ(c.f(1), 2);    // 2.5 - 0.5 waiting
  EXPECT_DOUBLE_EQ(c.b(0), 3.5);  // 5 - 1.5 waiting
  EXPECT_DOUBLE_EQ(c.b(1), 2);
  SimResult m = measured_result(s, t);
  EXPECT_DOUBLE_EQ(m.makespan, 6);
  EXPECT_DOUBLE_EQ(m.per_rank[0].busy, 1 + 3.5);
  EXPECT_DOUBLE_EQ(m.per_rank[1].busy, 2 + 2);
  EXPECT_DOUBLE_EQ(m.bubble, 2);
  EXPECT_DOUBLE_EQ(m.timeline[0][3].start, 2.5);
}

using test_support::CliRun;
using test_support::run_cli;

TEST(TrainCli, WritesLossCurveTimelineAndSummary) {
  const std::string dir = ::testing::TempDir();
  const std::string csv = dir + "dp_loss.csv", svg = dir + "dp_loss.svg", tl = dir + "dp_tl.svg", tr = dir + "dp_tr.json";
  CliRun r = run_cli("train -m dualpipe -p 2 -n 4 --model mlp --hidden 16 --seq-len 4 --steps 6 --loss-csv " + csv +
                     " --loss-svg " + svg + " --svg " + tl + " --trace " + tr);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* s : {"step     6/6", "summary: loss", "measured/simulated", "peak activation memory"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  std::ifstream in(csv);
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_EQ(lines, 7);  // header + 6 steps
  std::ifstream trace(tr);
  auto j = nlohmann::json::parse(trace);
  int events = 0;
  for (const auto& e : j["traceEvents"]) events += e["ph"] == "X";
  EXPECT_EQ(events, static_cast<int>(dualpipe(Shape{2, 4}).action_count()));
}

TEST(TrainCli, BenchWithNormalSchedulingLeavesThePolicyAlone) {
  CliRun r = run_cli("bench -m 1f1b -p 2 -n 2 --model mlp --hidden 16 --seq-len 4 --steps 1 --sched normal --format json");
  ASSERT_EQ(r.code, 0) << r.out;
  // Parsed into a variable: a range-for over parse(...)["per_rank"] would
  // iterate a member of a temporary destroyed before the loop (ASan found it).
  const auto j = nlohmann::json::parse(r.out);
  for (const auto& rank : j["per_rank"]) EXPECT_FALSE(rank["batch_scheduling"].get<bool>());
}

TEST(TrainCli, BenchJson) {
  CliRun r = run_cli("bench -m 1f1b -p 2 -n 4 --model mlp --hidden 16 --seq-len 4 --steps 3 --format json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["step_times"].size(), 3u);
  EXPECT_GT(j["median_step_s"].get<double>(), 0.0);
  // The yardsticks next to it: floor, compute, simulation, transfers, memory.
  for (const char* k : {"floor_s", "compute_s", "simulated_step_s", "simulated_with_transfers_s", "transfer_s",
                        "activation_unit_bytes"})
    EXPECT_GT(j[k].get<double>(), 0.0) << k;
  EXPECT_GE(j["simulated_with_transfers_s"].get<double>(), j["simulated_step_s"].get<double>());
  ASSERT_EQ(j["per_rank"].size(), 2u);
  for (const auto& rank : j["per_rank"]) {
    EXPECT_EQ(rank["compute_actions"].get<double>(), 8.0);  // 4 forwards and 4 backwards of one stage
    EXPECT_GT(rank["peak_heap_bytes"].get<double>(), 0.0);  // process ranks track the heap
    // The last step's parts: compute and receive waits fit in its span.
    const double busy = rank["last_step_compute_s"].get<double>(), waited = rank["last_step_recv_wait_s"].get<double>();
    EXPECT_GT(busy, 0.0);
    EXPECT_GE(waited, 0.0);
    EXPECT_LE(busy + waited, rank["last_step_pipeline_s"].get<double>() * (1 + 1e-9));
    EXPECT_TRUE(rank["batch_scheduling"].get<bool>());  // the default, inherited by the rank processes
  }
  // 1F1B: rank 0 holds P = 2 activations, the last rank 1.
  EXPECT_EQ(j["per_rank"][0]["simulated_peak_activations"].get<int>(), 2);
  EXPECT_EQ(j["per_rank"][1]["simulated_peak_activations"].get<int>(), 1);
}

TEST(TrainCli, BadOptions) {
  for (const char* args : {"train --steps 0 --model mlp", "train --lr -1 --model mlp", "bench -m 1f1b -p 2 -n 4 --steps 0",
                           "train --model mlp --clip -1"}) {
    CliRun r = run_cli(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
  }
}

}  // namespace
}  // namespace dualpipe
