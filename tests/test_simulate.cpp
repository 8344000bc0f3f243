// The simulator against figures derived by hand and the published ones (docs/design.md).
#include <gtest/gtest.h>

#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/sim/simulate.h"
#include "test_util.h"

namespace dualpipe {
namespace {

Schedule one_rank(int stages, int mbs, const std::vector<std::string>& actions) {
  return test::schedule_of(stages, mbs, {actions});
}

TEST(Simulate, OneFOneBTwoRanksOneMicroBatch) {
  // rank 0: F [0,1]            B [4,6]
  // rank 1:       F [1,2] B [2,4]
  SimResult r = simulate(one_f_one_b(Shape{2, 1}), Costs{});
  EXPECT_DOUBLE_EQ(r.makespan, 6);
  EXPECT_DOUBLE_EQ(r.per_rank[0].busy, 3);
  EXPECT_DOUBLE_EQ(r.per_rank[1].idle, 3);
  EXPECT_DOUBLE_EQ(r.bubble, 3);  // (P-1)(F+B)
  EXPECT_DOUBLE_EQ(r.bubble_ratio, 0.5);
  EXPECT_DOUBLE_EQ(r.timeline[1][0].start, 1);
  EXPECT_DOUBLE_EQ(r.timeline[0][1].start, 4);
  EXPECT_EQ(r.per_rank[0].peak_activations, 1);
  EXPECT_EQ(r.per_rank[0].stages_held, 1);
  EXPECT_DOUBLE_EQ(r.per_rank[0].param_copies, 1);
}

// Held memory counts an activation until its W where the backward is split.
// One rank, stages 0 and 1: F0 F1 I1 I0 W1 W0. Activations (to I): 1, 2, 1,
// 0; held (to W): 1, 2, 2, 2, 1, 0.
TEST(Simulate, HeldCountsUntilW) {
  SimResult r = simulate(one_rank(2, 1, {"0F0", "1F0", "1I0", "0I0", "1W0", "0W0"}), Costs{});
  EXPECT_EQ(r.per_rank[0].peak_activations, 2);
  EXPECT_EQ(r.per_rank[0].peak_held, 2);
  r = simulate(one_rank(2, 2, {"0F0", "1F0", "1I0", "0I0", "0F1", "1W0", "0W0", "1F1", "1B1", "0B1"}), Costs{});
  EXPECT_EQ(r.per_rank[0].peak_activations, 2);
  EXPECT_EQ(r.per_rank[0].peak_held, 3);  // after 0F1: two W's pending and one activation
}

// ZB1P's rank r keeps r W's pending (issued at the end) beside its P-r
// activations: P held on every rank, where 1F1B holds P-r (nothing split).
TEST(Simulate, ZeroBubbleHoldsPOnEveryRank) {
  for (int P : {2, 4, 8}) {
    SimResult z = simulate(zb1p(Shape{P, 4 * P}), Costs{});
    SimResult a = simulate(one_f_one_b(Shape{P, 4 * P}), Costs{});
    for (int r = 0; r < P; ++r) {
      EXPECT_EQ(z.per_rank[r].peak_activations, P - r) << "P=" << P << " r=" << r;
      EXPECT_EQ(z.per_rank[r].peak_held, P) << "P=" << P << " r=" << r;
      EXPECT_EQ(a.per_rank[r].peak_held, a.per_rank[r].peak_activations) << "P=" << P << " r=" << r;
    }
  }
}

TEST(Simulate, TransfersCostLatencyPlusBytesOverBandwidth) {
  // Two cross-rank hops of 0.5 each: 6 + 2 * 0.5.
  Costs lat;
  lat.latency = 0.5;
  EXPECT_DOUBLE_EQ(simulate(one_f_one_b(Shape{2, 1}), lat).makespan, 7);
  Costs bw;
  bw.latency = 0.25;
  bw.act_bytes = 100;
  bw.bandwidth = 400;  // 0.25 + 100/400 = 0.5 per hop
  EXPECT_DOUBLE_EQ(simulate(one_f_one_b(Shape{2, 1}), bw).makespan, 7);
  // Stages on one rank talk for free: DualPipeV on one rank has no hops.
  EXPECT_DOUBLE_EQ(simulate(dualpipev(Shape{1, 2}), lat).makespan, simulate(dualpipev(Shape{1, 2}), Costs{}).makespan);
}

TEST(Simulate, PerStageCosts) {
  // rank 1's forward costs 3: F0 [0,1], F1 [1,4], B1 [4,6], B0 [6,8].
  SimResult r = simulate(one_f_one_b(Shape{2, 1}), parse_costs("F=1:3"));
  EXPECT_DOUBLE_EQ(r.makespan, 8);
  EXPECT_DOUBLE_EQ(r.per_rank[1].busy, 5);
}

TEST(Simulate, OverlappedPairAndSplitBackward) {
  // F0 [0,1], (F1;B0) [1,3.5], I1 [3.5,4.5], W1 [4.5,5.5]; B=2, W=1 so I=1.
  Costs c;
  c.FB = 2.5;
  SimResult r = simulate(one_rank(1, 2, {"0F0", "(0F1;0B0)OVERLAP_F_B", "0I1", "0W1"}), c);
  EXPECT_DOUBLE_EQ(r.makespan, 5.5);
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end, 3.5);
  EXPECT_DOUBLE_EQ(r.timeline[0][2].end, 4.5);
  // Live activations: 1 after F0, 2 while the pair runs, back to 1, then 0.
  EXPECT_EQ(r.per_rank[0].peak_activations, 2);
  // Without FB the pair costs F + B.
  EXPECT_DOUBLE_EQ(simulate(one_rank(1, 2, {"0F0", "(0F1;0B0)OVERLAP_F_B", "0I1", "0W1"}), Costs{}).makespan, 6);
}

TEST(Simulate, DualPipeFiguresOfPipelinesMd) {
  Schedule s = dualpipe(Shape{8, 20});
  Costs c = parse_costs("F=1,B=2,W=1,FB=3");
  SimResult r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.makespan, 66);
  for (const RankStats& st : r.per_rank) {
    EXPECT_DOUBLE_EQ(st.idle, 6);
    EXPECT_EQ(st.peak_activations, 9);  // PP + 1
    EXPECT_EQ(st.stages_held, 2);
    EXPECT_DOUBLE_EQ(st.param_copies, 2);
  }
  c.FB = 2.5;
  r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.makespan, 59);
  const double idle[] = {3.5, 4, 4.5, 4.5, 4.5, 4.5, 4, 3.5};
  for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(r.per_rank[i].idle, idle[i]) << "rank " << i;
  EXPECT_DOUBLE_EQ(r.bubble, 4.5);
}

TEST(Simulate, DualPipeBubbleFormulaOverARangeOfRanks) {
  // (PP/2 - 1)(F&B + B - 3W) with N = 2P and the published costs.
  for (int P = 2; P <= 32; P += 2) {
    for (double fb : {3.0, 2.5}) {
      Costs c = parse_costs("F=1,B=2,W=1");
      c.FB = fb;
      SimResult r = simulate(dualpipe(Shape{P, 2 * P}), c);
      EXPECT_DOUBLE_EQ(r.bubble, (P / 2.0 - 1) * (fb + 2 - 3)) << "P=" << P << " FB=" << fb;
    }
  }
}

TEST(Simulate, ShortDualPipeRunsOnlyAddBubble) {
  // N < 2P works; it costs more idle time than N = 2P, never less work.
  Costs c = parse_costs("F=1,B=2,W=1,FB=3");
  const int P = 8;
  double full_bubble = simulate(dualpipe(Shape{P, 2 * P}), c).bubble;
  for (int N = 2; N < 2 * P; N += 2) {
    SimResult r = simulate(dualpipe(Shape{P, N}), c);
    EXPECT_GT(r.bubble, full_bubble) << "N=" << N;
    EXPECT_DOUBLE_EQ(r.per_rank[0].busy, N * 3.0) << "N=" << N;
  }
}

TEST(Simulate, ParsesAndValidatesCosts) {
  Costs c = parse_costs("F=1.5,B=3,W=1,FB=4");
  EXPECT_DOUBLE_EQ(c.f(0), 1.5);
  EXPECT_DOUBLE_EQ(c.i(0), 2);
  EXPECT_DOUBLE_EQ(c.fb(0, 0), 4);
  EXPECT_DOUBLE_EQ(parse_costs("F=1:2:3").f(2), 3);
  for (const char* bad : {"F", "F=", "X=1", "F=abc", "F=1;B=2", "F=1,,B=2", "F=nan", "F=1e999"})
    EXPECT_THROW(parse_costs(bad), Error) << bad;
  EXPECT_THROW(parse_costs("F=-1").validate(2), Error);
  EXPECT_THROW(parse_costs("W=3").validate(2), Error);   // W > B
  EXPECT_THROW(parse_costs("F=1:2:3").validate(2), Error);  // 3 values for 2 stages
  EXPECT_THROW(parse_costs("FB=-2").validate(2), Error);
  Costs neg;
  neg.latency = -1;
  EXPECT_THROW(neg.validate(1), Error);
  // simulate validates too
  EXPECT_THROW(simulate(one_f_one_b(Shape{2, 2}), parse_costs("F=1:1:1")), Error);
}

TEST(Simulate, TimelineCanBeSkipped) {
  SimResult r = simulate(dualpipe(Shape{4, 8}), Costs{}, SimOptions{false});
  EXPECT_TRUE(r.timeline.empty());
  EXPECT_DOUBLE_EQ(r.makespan, simulate(dualpipe(Shape{4, 8}), Costs{}).makespan);
}

TEST(Simulate, FbPerPairOfStagesGeneralisesOneFbTime) {
  // The same time for every pair of stages simulates as one FB time; a
  // faster pair of stages (0, 3) on ranks 0 and 3 shortens the step.
  const Schedule s = dualpipe(Shape{4, 8});
  Costs one;
  one.FB = 2.5;
  Costs pairs;
  pairs.FB_pair.assign(16, 2.5);
  pairs.FB_pair_stages = 4;
  EXPECT_DOUBLE_EQ(simulate(s, pairs).makespan, simulate(s, one).makespan);
  pairs.FB_pair[0 * 4 + 3] = pairs.FB_pair[3 * 4 + 0] = 2.0;
  EXPECT_LT(simulate(s, pairs).makespan, simulate(s, one).makespan);
  pairs.FB_pair.resize(15);
  EXPECT_THROW(pairs.validate(4), Error);
}

// Measured chunk times become costs one way for train and bench alike: a
// whole backward where the stage ran one, else its two halves; W within B.
TEST(Costs, FromMeasuredStageTimes) {
  Costs c = costs_from_stage_times({{1.0, 3.0, -1, 1.5}, {2.0, -1, 2.5, 1.0}, {0.5, 1.0, -1, 4.0}, {}});
  EXPECT_EQ(c.F, (std::vector<double>{1.0, 2.0, 0.5, 0.0}));
  EXPECT_EQ(c.B, (std::vector<double>{3.0, 3.5, 1.0, 0.0}));
  EXPECT_EQ(c.W, (std::vector<double>{1.5, 1.0, 1.0, 0.0}));
  EXPECT_FALSE(c.FB.has_value());
}

}  // namespace
}  // namespace dualpipe
