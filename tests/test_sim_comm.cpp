// Communication phases in the simulator: expert-parallel all-to-alls inside
// chunks, hidden by F&B overlap or exposed (docs/simulation.md,
// "Communication phases"). Figures are derived by hand in the comments.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <utility>

#include "cli_run.h"
#include "dualpipe/pictures/svg.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/sim/compare.h"
#include "dualpipe/sim/simulate.h"
#include "test_util.h"
#include "sim/link.h"

namespace dualpipe {
namespace {

using test_support::run_cli;

Schedule one_rank(int stages, int mbs, const std::vector<std::string>& actions) {
  return test::schedule_of(stages, mbs, {actions});
}

// F, B, W compute; every chunk has `phases` all-to-alls moving `fwd_bytes`
// (forward) and `bwd_bytes` (backward) in all at rate 1 byte per time unit.
Costs a2a_costs(double F, double B, double W, int phases, double fwd_bytes, double bwd_bytes) {
  Costs c;
  c.F = {F};
  c.B = {B};
  c.W = {W};
  c.a2a_phases = {phases};
  c.a2a_bytes = {fwd_bytes};
  c.a2a_bwd_bytes = {bwd_bytes};
  c.a2a_rate = 1;
  return c;
}

// ---- one F&B pair -------------------------------------------------------

// F: compute 3 in pieces of 1; B: compute 6 in pieces of 2; each has two
// all-to-alls of 1. With the baton (F first):
//   F [0,1]  F-a2a [1,2]   B [1,3]  B-a2a [3,4]   F [3,4]  F-a2a [4,5]
//   B [4,6]  B-a2a [6,7]   F [6,7]  B [7,9]
// Someone computes at every instant: 9 = cF + cB, nothing exposed.
TEST(SimComm, PairHidesAllToAllsShorterThanTheOtherHalfsPieces) {
  PairTime p = overlapped_pair({3, 2, 1}, {6, 2, 1});
  EXPECT_DOUBLE_EQ(p.duration, 9);
  EXPECT_DOUBLE_EQ(p.exposed, 0);
  EXPECT_TRUE(p.waits.empty());
}

// Both halves: compute 3 in pieces of 1, two all-to-alls of 2 each. The
// link carries 8 in all, one all-to-all at a time, and it can start only
// after the first piece and the last piece runs after the last all-to-all:
// at least 1 + 8 + 1 = 10. The baton rule reaches that bound:
//   F [0,1] F-a2a [1,3] | B [1,2] B-a2a [3,5] | wait [2,3] | F [3,4]
//   F-a2a [5,7] | wait [4,5] | B [5,6] B-a2a [7,9] | wait [6,7] | F [7,8]
//   | wait [8,9] | B [9,10]
// 10 - 6 of compute = 4 exposed of 8 on the link.
TEST(SimComm, PairExposesWhatTheLinkCannotHide) {
  PairTime p = overlapped_pair({3, 2, 2}, {3, 2, 2});
  EXPECT_DOUBLE_EQ(p.duration, 10);
  EXPECT_DOUBLE_EQ(p.exposed, 4);
  ASSERT_EQ(p.waits.size(), 4u);
  EXPECT_DOUBLE_EQ(p.waits[0].start, 2);
  EXPECT_DOUBLE_EQ(p.waits[0].end, 3);
  EXPECT_DOUBLE_EQ(p.waits[3].start, 8);
  EXPECT_DOUBLE_EQ(p.waits[3].end, 9);
}

// Without overlap the halves run one after the other: 3+4 then 3+4.
TEST(SimComm, SerialPairExposesEveryPhase) {
  PairTime p = serial_pair({3, 2, 2}, {3, 2, 2});
  EXPECT_DOUBLE_EQ(p.duration, 14);
  EXPECT_DOUBLE_EQ(p.exposed, 8);
  ASSERT_EQ(p.waits.size(), 4u);
  EXPECT_DOUBLE_EQ(p.waits[0].start, 1);  // after F's first piece
  EXPECT_DOUBLE_EQ(p.waits[2].start, 8);  // F ends at 7, B's first piece at 8
}

// One forward phase (dispatch+combine of a layer written as one), nothing
// for the backward: F [0,1] a2a [1,5]... B computes [1,5] meanwhile, F's
// last piece [5,6]. 4 of compute hide 4 of a2a.
TEST(SimComm, PairWithOneSidedCommunication) {
  PairTime p = overlapped_pair({2, 1, 4}, {4, 0, 0});
  EXPECT_DOUBLE_EQ(p.duration, 6);
  EXPECT_DOUBLE_EQ(p.exposed, 0);
  p = overlapped_pair({2, 1, 5}, {4, 0, 0});  // 1 more than B's compute: exposed
  EXPECT_DOUBLE_EQ(p.duration, 7);
  EXPECT_DOUBLE_EQ(p.exposed, 1);
}

// Bounds that hold for any pair: at least both computes, at least the link's
// total, never more than running them one after the other.
TEST(SimComm, PairBounds) {
  for (double cf : {0.0, 1.0, 3.0})
    for (double cb : {0.0, 2.0, 6.0})
      for (int kf : {0, 1, 2, 4})
        for (int kb : {0, 1, 2, 3})
          for (double af : {0.0, 0.5, 1.0, 4.0})
            for (double ab : {0.0, 0.25, 2.0}) {
              const ChunkWork f{cf, kf, af}, b{cb, kb, ab};
              const PairTime p = overlapped_pair(f, b), q = serial_pair(f, b);
              const double link = kf * af + kb * ab;
              const double eps = 1e-9;
              SCOPED_TRACE(::testing::Message() << cf << " " << kf << " " << af << " | " << cb << " " << kb << " "
                                                << ab);
              EXPECT_GE(p.duration, cf + cb - eps);
              EXPECT_GE(p.duration, link - eps);
              EXPECT_LE(p.duration, q.duration + eps);
              EXPECT_NEAR(q.duration, cf + cb + link, eps);
              EXPECT_NEAR(p.exposed, p.duration - cf - cb, eps);
              EXPECT_LE(p.exposed, link + eps);
              EXPECT_GE(p.exposed, -eps);
            }
}

// ---- whole schedules ----------------------------------------------------

// One rank, one stage: F0, then the pair (F1; B0), then B1. F=3, B=6, two
// phases of 1 in each chunk (bytes 2 at rate 1).
// F0: 3 + 2 = 5; pair: 9 (first test); B1: 6 + 2 = 8. Step 22; exposed
// 2 + 0 + 2 of 2 + 4 + 2 on the link: half hidden.
TEST(SimComm, PlainChunksExposeThePairHides) {
  Schedule s = one_rank(1, 2, {"0F0", "(0F1;0B0)OVERLAP_F_B", "0B1"});
  Costs c = a2a_costs(3, 6, 1, 2, 2, 2);
  SimResult r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.makespan, 22);
  EXPECT_DOUBLE_EQ(r.timeline[0][1].start, 5);
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end, 14);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 4);
  EXPECT_DOUBLE_EQ(r.per_rank[0].a2a_total, 8);
  EXPECT_DOUBLE_EQ(r.per_rank[0].busy, 22);  // exposed all-to-all is part of the actions
  EXPECT_DOUBLE_EQ(r.a2a_hidden, 0.5);
  // Waits: F0's at [1,2] and [3,4]; B1's pieces of 2 from 14: [16,17], [19,20].
  ASSERT_EQ(r.a2a_waits.size(), 1u);
  ASSERT_EQ(r.a2a_waits[0].size(), 4u);
  EXPECT_DOUBLE_EQ(r.a2a_waits[0][1].start, 3);
  EXPECT_DOUBLE_EQ(r.a2a_waits[0][2].start, 16);
  EXPECT_DOUBLE_EQ(r.a2a_waits[0][3].end, 20);

  c.fb_overlap = false;  // the pair takes 9 + 4: step 26, everything exposed
  r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.makespan, 26);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 8);
  EXPECT_DOUBLE_EQ(r.a2a_hidden, 0);
}

// An F&F pair (pair_forwards): two forwards of 3 in pieces of 1, each with
// two all-to-alls of 1, taking turns as an F&B pair's halves do (the second
// starts): F1 [0,1] its a2a [1,2]; F0 [1,2] a2a [2,3]; F1 [2,3] a2a [3,4];
// F0 [3,4] a2a [4,5]; F1 [4,5]; F0 [5,6]. Someone computes at every
// instant: 6, nothing exposed, where one forward after the other takes
// 2 x (3 + 2) = 10. The backwards after it expose their 2 each.
TEST(SimComm, ForwardPairHidesEachForwardsAllToAlls) {
  Schedule s = one_rank(1, 2, {"(0F0;0F1)OVERLAP_F_F", "0B0", "0B1"});
  Costs c = a2a_costs(3, 6, 1, 2, 2, 2);
  SimResult r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.timeline[0][0].end, 6);
  EXPECT_DOUBLE_EQ(r.makespan, 22);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 4);
  EXPECT_DOUBLE_EQ(r.per_rank[0].a2a_total, 8);
  c.fb_overlap = false;  // one forward after the other
  r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.timeline[0][0].end, 10);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 8);
}

// DualPipe P=2 at 1:1 (a forward's all-to-alls take as long as its
// compute): pairing its warm-up forwards hides part of what they exposed,
// and the step does not get longer.
TEST(SimComm, PairedWarmUpForwardsExposeLessOfDualPipesAllToAll) {
  Costs c = a2a_costs(1, 2, 1, 4, 1, 1);
  c.fill_waits = true;
  Schedule plain = dualpipe(Shape{2, 16});
  SimResult a = simulate(plain, c), b = simulate(pair_forwards(plain), c);
  EXPECT_DOUBLE_EQ(b.a2a_total, a.a2a_total);
  EXPECT_LT(b.exposed_a2a, a.exposed_a2a - 2.0);  // a forward's 1 on each rank, at least
  EXPECT_LE(b.makespan, a.makespan);
}

// A given FB is the pair's compute: 2.5 shared 1 : 2 between the halves.
// Without overlap the pair takes 2.5 + 4 phases of 0.5; with phases of 0.005
// everything hides and the pair takes its compute, 2.5.
TEST(SimComm, GivenFBIsThePairsCompute) {
  Schedule s = one_rank(1, 2, {"0F0", "(0F1;0B0)OVERLAP_F_B", "0B1"});
  Costs c = a2a_costs(1, 2, 1, 2, 1, 1);
  c.FB = 2.5;
  c.fb_overlap = false;
  SimResult r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end - r.timeline[0][1].start, 4.5);
  c.fb_overlap = true;
  c.a2a_bytes = c.a2a_bwd_bytes = {0.01};
  r = simulate(s, c);
  EXPECT_NEAR(r.timeline[0][1].end - r.timeline[0][1].start, 2.5, 1e-12);
  EXPECT_NEAR(r.per_rank[0].exposed_a2a, 0.02, 1e-12);  // the plain F0 and B1 only
}

// I carries the backward's all-to-alls, W has none: F 1+1, I (2-1)+1, W 1.
TEST(SimComm, WeightGradientsHaveNoAllToAll) {
  SimResult r = simulate(one_rank(1, 1, {"0F0", "0I0", "0W0"}), a2a_costs(1, 2, 1, 2, 1, 1));
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end, 4);
  EXPECT_DOUBLE_EQ(r.timeline[0][2].end - r.timeline[0][2].start, 1);
  EXPECT_DOUBLE_EQ(r.per_rank[0].a2a_total, 2);
}

// Costs::fill_waits: a B's weight-gradient work runs in its own all-to-all
// waits. F 3 and B 6 with two phases of 1. W 3: B's input-gradient pieces
// are 1, 1, 1 and each queues 1 of W; each wait (1) is filled whole, the
// last 1 runs after the B's output: B takes its compute, 6, from 5 to 11.
// W 1: pieces of 5/3 queue 1/3 each; each wait is 1/3 filled and 2/3
// exposed: B takes 6 + 4/3.
TEST(SimComm, WeightWorkFillsABackwardsWaits) {
  Schedule s = one_rank(1, 1, {"0F0", "0B0"});
  Costs c = a2a_costs(3, 6, 3, 2, 2, 2);
  c.fill_waits = true;
  SimResult r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.timeline[0][0].end, 5);
  EXPECT_DOUBLE_EQ(r.makespan, 11);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 2);  // the forward's two phases
  EXPECT_DOUBLE_EQ(r.per_rank[0].a2a_total, 4);
  c.W = {1};
  r = simulate(s, c);
  EXPECT_NEAR(r.makespan, 5 + 6 + 4.0 / 3, 1e-12);
  EXPECT_NEAR(r.per_rank[0].exposed_a2a, 2 + 4.0 / 3, 1e-12);
  c.fill_waits = false;  // inline: both waits exposed
  r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.makespan, 13);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 4);
}

// An I whose W is the rank's next compute action fills its waits with that
// W's work; the W then runs only what is left. F 3, B 6, W 3, phases of 1:
// I is 3 in pieces of 1, each queuing 1 of W; both waits are filled, the
// last 1 is left to W: I 5-10, W 10-11. With another action between an I
// and its W nothing moves: the step is the inline one.
TEST(SimComm, AnIFillsItsWaitsWithItsWWhenTheWComesNext) {
  Costs c = a2a_costs(3, 6, 3, 2, 2, 2);
  c.fill_waits = true;
  SimResult r = simulate(one_rank(1, 1, {"0F0", "0I0", "0W0"}), c);
  EXPECT_DOUBLE_EQ(r.timeline[0][1].start, 5);
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end, 10);
  EXPECT_DOUBLE_EQ(r.timeline[0][2].end - r.timeline[0][2].start, 1);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 2);  // the forward's
  const Schedule apart = one_rank(1, 2, {"0F0", "0F1", "0I0", "0I1", "0W0", "0W1"});
  const double filled = simulate(apart, c).makespan;
  c.fill_waits = false;
  EXPECT_DOUBLE_EQ(filled, simulate(apart, c).makespan);
}

// In a pair, the forward half's waits run the backward half's queued weight
// work too. F 3 (pieces of 1), B 6 with W 3, phases of 1.5 on one link, the
// backward first. Inline (B's pieces of 2): B 0-2 posts (done 3.5), F 2-3
// (done 5), B waits 0.5, 3.5-5.5 (done 7), F 5.5-6.5 (done 8.5), B waits
// 0.5, 7-9, F 9-10: 10. Filled (B's input-gradient pieces of 1, each
// queuing 1): B 0-1 (done 2.5), F 1-2 (done 4), B fills 2-2.5, 2.5-3.5
// (done 5.5), F fills 3.5-4, 4-5 (done 7), B fills 5-5.5, 5.5-6.5, its
// last 1.5 after its output, to 8, F 8-9: 9, the pair's compute.
TEST(SimComm, PairHalvesFillTheirWaitsWithTheBackwardsWeightWork) {
  Schedule s = one_rank(1, 2, {"0F0", "(0F1;0B0)OVERLAP_F_B", "0B1"});
  Costs c = a2a_costs(3, 6, 3, 2, 3, 3);
  SimResult r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end - r.timeline[0][1].start, 10);
  c.fill_waits = true;
  r = simulate(s, c);
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end - r.timeline[0][1].start, 9);
  // Exposed: F0's two phases (3) only; B1 alone fills its waits (1.5 each)
  // with 1 of W each: 0.5 + 0.5.
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 3 + 1);
}

// Per-stage values: stage 0 dense (no phases), stage 1 with 4 phases of
// latency 0.25 each and bytes 2:4 per forward chunk at rate 2 (0.5 and 1 per
// chunk, over 4 phases), backward the same bytes.
TEST(SimComm, PerStageValuesAndLatency) {
  Costs c;
  c.a2a_phases = {0, 4};
  c.a2a_bytes = {2, 4};
  c.a2a_rate = 2;
  c.a2a_latency = 0.25;
  EXPECT_DOUBLE_EQ(c.a2a_fwd(0), 0);               // no phases, nothing to time
  EXPECT_DOUBLE_EQ(c.a2a_fwd(1), 0.25 + 4.0 / 4 / 2);  // 0.75
  EXPECT_DOUBLE_EQ(c.a2a_bwd(1), 0.75);
  SimResult r = simulate(one_f_one_b(Shape{2, 1}), c);
  // rank 0: F 1; rank 1: F 1 + 3, B 2 + 3; rank 0: B 2. Step 1+4+5+2 = 12.
  EXPECT_DOUBLE_EQ(r.makespan, 12);
  EXPECT_DOUBLE_EQ(r.per_rank[0].a2a_total, 0);
  EXPECT_DOUBLE_EQ(r.per_rank[1].exposed_a2a, 6);
}

// Without overlap, all-to-alls are part of each chunk: the same step as
// chunk costs F + kF·aF, B + kB·aB (I grows by the same, W does not) with
// no all-to-all model at all. Checked on every method.
TEST(SimComm, NoOverlapEqualsInflatedChunkCosts) {
  for (const Method& m : methods()) {
    Shape shape{4, 8, 2};
    Schedule s = generate(m.name, shape);
    Costs c = a2a_costs(1, 2, 1, 2, 1, 1.5);  // phases of 0.5 and 0.75
    c.fb_overlap = false;
    Costs plain;
    plain.F = {1 + 1.0};
    plain.B = {2 + 1.5};
    plain.W = {1};
    SimResult a = simulate(s, c, SimOptions{false}), b = simulate(s, plain, SimOptions{false});
    EXPECT_DOUBLE_EQ(a.makespan, b.makespan) << m.name;
    for (int r = 0; r < s.ranks; ++r) {
      EXPECT_DOUBLE_EQ(a.per_rank[r].busy, b.per_rank[r].busy) << m.name;
      EXPECT_DOUBLE_EQ(a.per_rank[r].exposed_a2a, a.per_rank[r].a2a_total) << m.name;
    }
  }
}

// Overlap never makes a step slower (a pair never lasts longer, and no
// start time grows when durations shrink); exposed never exceeds the total.
TEST(SimComm, OverlapNeverSlowerAndExposedWithinTotal) {
  for (const Method& m : methods()) {
    for (double ratio : {0.25, 1.0, 3.0}) {
      Schedule s = generate(m.name, Shape{4, 8, 2});
      Costs on = a2a_costs(1, 2, 1, 2, ratio, ratio);
      Costs off = on;
      off.fb_overlap = false;
      SimResult a = simulate(s, on, SimOptions{false}), b = simulate(s, off, SimOptions{false});
      EXPECT_LE(a.makespan, b.makespan + 1e-9) << m.name << " ratio " << ratio;
      EXPECT_NEAR(a.a2a_total, b.a2a_total, 1e-9) << m.name;
      for (const RankStats& st : a.per_rank) {
        EXPECT_GE(st.exposed_a2a, -1e-12) << m.name;
        EXPECT_LE(st.exposed_a2a, st.a2a_total + 1e-9) << m.name;
      }
    }
  }
}

// Zero all-to-all time (phases but no bytes and no latency, or bytes with
// no phases) changes no figure.
TEST(SimComm, ZeroCommunicationChangesNothing) {
  Schedule s = dualpipe(Shape{4, 8});
  Costs base;
  base.FB = 2.5;
  Costs zero = base;
  zero.a2a_rate = 5;
  zero.a2a_phases = {0};
  zero.a2a_bytes = {7};
  EXPECT_FALSE(zero.has_a2a());
  SimResult a = simulate(s, base), b = simulate(s, zero);
  EXPECT_EQ(a.makespan, b.makespan);
  EXPECT_EQ(a.bubble, b.bubble);
  EXPECT_EQ(a.a2a_total, 0);
  EXPECT_TRUE(b.a2a_waits.empty());
  for (int r = 0; r < s.ranks; ++r) EXPECT_EQ(a.per_rank[r].busy, b.per_rank[r].busy);
}

// DeepSeek-V3's case: cross-node expert parallelism, a forward chunk's
// all-to-alls as long as its compute (1:1), the backward moving the same
// bytes. At P=4, N=16, F=1 B=2 W=1, 1F1B exposes every phase. In a DualPipe
// pair (F pieces 1/3, B pieces 2/3, phases of 1/2) only 1/3 of the pair's 2
// stays exposed; the chunks outside pairs expose theirs.
TEST(SimComm, DualPipeHidesWhat1F1BExposes) {
  const Shape shape{4, 16};
  EXPECT_DOUBLE_EQ(overlapped_pair({1, 2, 0.5}, {2, 2, 0.5}).exposed, 1.0 / 3);
  Costs c = a2a_costs(1, 2, 1, 2, 1, 1);
  Costs off = c;
  off.fb_overlap = false;
  SimResult d = simulate(dualpipe(shape), c), d_off = simulate(dualpipe(shape), off);
  SimResult o = simulate(one_f_one_b(shape), c);
  EXPECT_DOUBLE_EQ(o.exposed_a2a, o.a2a_total);
  EXPECT_DOUBLE_EQ(o.a2a_hidden, 0);
  EXPECT_DOUBLE_EQ(d_off.a2a_hidden, 0);
  // The same traffic in all: one forward and one backward per micro-batch and stage.
  EXPECT_DOUBLE_EQ(d.a2a_total, o.a2a_total);
  EXPECT_LT(d.exposed_a2a, 0.5 * o.exposed_a2a);
  EXPECT_GT(d.a2a_hidden, 0.5);
  EXPECT_LT(d.makespan, d_off.makespan);
  EXPECT_LT(d.makespan, o.makespan);
  for (int r = 0; r < 4; ++r) EXPECT_LT(d.per_rank[r].exposed_a2a, o.per_rank[r].exposed_a2a) << r;
}

// The SVG timeline hatches the waits, and only when there are some.
TEST(SimComm, SvgHatchesExposedAllToAll) {
  Schedule s = dualpipe(Shape{4, 8});
  const std::string with = timeline_svg(s, simulate(s, a2a_costs(1, 2, 1, 2, 1, 1)), SvgOptions());
  const std::string without = timeline_svg(s, simulate(s, Costs{}), SvgOptions());
  EXPECT_NE(with.find("<path fill=\"url(#a2a)\" d=\"M"), std::string::npos);
  EXPECT_NE(with.find("waiting for an all-to-all"), std::string::npos);
  EXPECT_EQ(without.find("a2a"), std::string::npos);
}

// ---- costs: validation and parsing ---------------------------------------

TEST(SimComm, ValidationRefusesBadValues) {
  auto refuses = [](Costs c, const char* what) {
    try {
      c.validate(4);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  Costs c;
  c.a2a_bytes = {1};
  refuses(c, "link rate");  // bytes with no rate
  c.a2a_rate = 1;
  EXPECT_NO_THROW(c.validate(4));
  Costs bad = c;
  bad.a2a_bytes = {1, 2};
  refuses(bad, "all-to-all bytes has 2 values");
  bad = c;
  bad.a2a_bytes = {-1};
  refuses(bad, "must not be negative");
  bad = c;
  bad.a2a_bwd_bytes = {NAN};
  refuses(bad, "finite");
  bad = c;
  bad.a2a_phases = {-2};
  refuses(bad, "phases must not be negative");
  bad = c;
  bad.a2a_phases = {1, 2, 3};
  refuses(bad, "phases has 3 values");
  bad = c;
  bad.a2a_rate = INFINITY;
  refuses(bad, "finite");
  bad = c;
  bad.a2a_latency = -1;
  refuses(bad, "latency must not be negative");
  bad = c;
  bad.a2a_bytes = {1e308};
  bad.a2a_rate = 1e-300;
  refuses(bad, "overflows");
}

TEST(SimComm, ParsesStageLists) {
  EXPECT_EQ(parse_stage_values("1e6", "--a2a-bytes"), std::vector<double>({1e6}));
  EXPECT_EQ(parse_stage_values("1:2.5:0", "--a2a-bytes"), std::vector<double>({1, 2.5, 0}));
  EXPECT_EQ(parse_stage_counts("2:0:4", "--a2a-phases"), std::vector<int>({2, 0, 4}));
  for (const char* bad : {"", "x", "1::2", "1:", "nan", "inf", "1e400"})
    EXPECT_THROW(parse_stage_values(bad, "--a2a-bytes"), Error) << bad;
  for (const char* bad : {"", "1.5", "-1", "2:x", "99999999999999999999"})
    EXPECT_THROW(parse_stage_counts(bad, "--a2a-phases"), Error) << bad;
}

// ---- compare and the command line ---------------------------------------

TEST(SimComm, CompareReportsExposedAllToAllOnlyWithCosts) {
  Costs c = a2a_costs(1, 2, 1, 2, 1, 1);
  std::vector<CompareRow> rows = compare(4, 16, c);
  bool saw_dualpipe = false;
  for (const CompareRow& r : rows) {
    if (!r.error.empty()) continue;
    EXPECT_GE(r.exposed_a2a, 0) << r.method;
    if (r.method == "1f1b") {
      EXPECT_GT(r.exposed_a2a, 0);
      EXPECT_DOUBLE_EQ(r.a2a_hidden, 0);
    }
    if (r.method == "dualpipe") {
      saw_dualpipe = true;
      EXPECT_GT(r.a2a_hidden, 0.5);
    }
  }
  EXPECT_TRUE(saw_dualpipe);
}

TEST(SimComm, CliSimulateReportsAllToAll) {
  const std::string base = "simulate -m dualpipe -p 4 -n 16 --cost F=1,B=2,W=1 --a2a-bytes 1 --a2a-rate 1 -f json";
  auto on = run_cli(base), off = run_cli(base + " --fb-overlap off");
  ASSERT_EQ(on.code, 0) << on.out;
  ASSERT_EQ(off.code, 0) << off.out;
  auto j = nlohmann::json::parse(on.out), k = nlohmann::json::parse(off.out);
  EXPECT_GT(j["a2a_hidden"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(k["a2a_hidden"].get<double>(), 0);
  EXPECT_LT(j["makespan"].get<double>(), k["makespan"].get<double>());
  ASSERT_EQ(j["per_rank"].size(), 4u);
  for (const auto& rank : k["per_rank"])
    EXPECT_DOUBLE_EQ(rank["exposed_a2a"].get<double>(), rank["a2a_total"].get<double>());

  auto text = run_cli("simulate -m 1f1b -p 4 -n 8 --a2a-bytes 1 --a2a-rate 1");
  ASSERT_EQ(text.code, 0) << text.out;
  EXPECT_NE(text.out.find("exposed a2a"), std::string::npos) << text.out;
  auto plain = run_cli("simulate -m 1f1b -p 4 -n 8");
  EXPECT_EQ(plain.out.find("a2a"), std::string::npos) << plain.out;
}

// --link takes each model by name, says which it used, and refuses others
// in one line. At P=4 DualPipe's transfers meet the receivers' all-to-alls
// on their downloads, which only duplex charges: a longer step than fifo.
TEST(SimComm, CliLinkModelsByName) {
  const std::string base =
      "simulate -m dualpipe -p 4 -n 8 --a2a-bytes 1 --a2a-rate 1 --act-bytes 1 --comm-bandwidth 1 -f json --link ";
  auto fifo = run_cli(base + "fifo"), duplex = run_cli(base + "duplex");
  ASSERT_EQ(fifo.code, 0) << fifo.out;
  ASSERT_EQ(duplex.code, 0) << duplex.out;
  auto f = nlohmann::json::parse(fifo.out), d = nlohmann::json::parse(duplex.out);
  EXPECT_EQ(f["costs"]["link"], "fifo");
  EXPECT_EQ(d["costs"]["link"], "duplex");
  EXPECT_GT(d["makespan"].get<double>(), f["makespan"].get<double>());
  auto bad = run_cli(base + "both");
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_NE(bad.out.find("--link"), std::string::npos) << bad.out;
}

TEST(SimComm, CliRefusesBadAllToAllOptions) {
  for (const char* args : {"--a2a-bytes 1", "--a2a-bytes 1 --a2a-rate -1", "--a2a-bytes x --a2a-rate 1",
                           "--a2a-bytes 1:2 --a2a-rate 1", "--a2a-phases 1.5", "--fb-overlap maybe",
                           "--a2a-latency nan"}) {
    auto r = run_cli(std::string("simulate -m 1f1b -p 4 -n 8 ") + args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.out;
  }
}

TEST(SimComm, CliCompareShowsTheColumnOnlyWithCosts) {
  auto with = run_cli("compare -p 4 -n 16 --a2a-bytes 1 --a2a-rate 1");
  ASSERT_EQ(with.code, 0) << with.out;
  EXPECT_NE(with.out.find("exposed a2a"), std::string::npos) << with.out;
  auto without = run_cli("compare -p 4 -n 16");
  ASSERT_EQ(without.code, 0) << without.out;
  EXPECT_EQ(without.out.find("a2a"), std::string::npos) << without.out;
}


// ---- the overlap engine's turn order ------------------------------------

// The halves swap at every post, the backward first: B [0,0.5] posts (link
// [0.5,1.5]); F [0.5,1.5] posts (link [1.5,2.5]); B runs [1.5,4.5], posts
// (link [4.5,5.5]); F runs [4.5,5.5], posts (link [5.5,6.5]); B runs its
// last piece [5.5,6]; F waits [6,6.5] and runs its last [6.5,7.5]. Half a
// unit exposed, one all-to-all on the link at a time.
TEST(SimComm, AlternatingPairSwapsAtEveryPost) {
  PairTime p = alternating_pair({3, 2, 1}, {4, 2, 1}, {1, 1, 1}, {0.5, 3, 0.5});
  EXPECT_DOUBLE_EQ(p.duration, 7.5);
  EXPECT_DOUBLE_EQ(p.exposed, 0.5);
  ASSERT_EQ(p.waits.size(), 1u);
  EXPECT_DOUBLE_EQ(p.waits[0].start, 6);
  EXPECT_DOUBLE_EQ(p.waits[0].end, 6.5);
}

// Why the backward starts: a stage whose blocks have little after the MoE
// layer (F: attention 2, experts 2, tail 0.1; B: tail 0.1, experts 4,
// attention 4), phases of 1.5. Forward first, F's dispatch has only B's
// tail to hide behind; backward first, every transfer travels while the
// other half runs attention or experts: B 0-0.1 posts (0.1-1.6); F
// 0.1-2.1 posts (2.1-3.6); B 2.1-6.1 posts (6.1-7.6); F 6.1-8.1 posts
// (8.1-9.6); B 8.1-12.1; F waits nothing and ends 12.2: nothing exposed.
TEST(SimComm, BackwardFirstHidesWhatForwardFirstExposes) {
  const PairTime p = alternating_pair({4.1, 2, 1.5}, {8.1, 2, 1.5}, {2, 2, 0.1}, {0.1, 4, 4});
  EXPECT_NEAR(p.duration, 12.2, 1e-12);
  EXPECT_NEAR(p.exposed, 0, 1e-12);
}

// Equal pieces: the cases the first-ready rule gets right give the same.
TEST(SimComm, AlternatingPairMatchesFirstReadyOnEqualPieces) {
  for (auto [f, b] : {std::pair<ChunkWork, ChunkWork>{{3, 2, 1}, {6, 2, 1}}, {{3, 2, 2}, {3, 2, 2}}}) {
    const PairTime a = alternating_pair(f, b), o = overlapped_pair(f, b);
    EXPECT_DOUBLE_EQ(a.duration, o.duration);
    EXPECT_DOUBLE_EQ(a.exposed, o.exposed);
  }
}

// The bounds of any pair hold for the alternating one too.
TEST(SimComm, AlternatingPairBounds) {
  for (double cf : {0.0, 1.0, 3.0})
    for (double cb : {0.0, 2.0, 6.0})
      for (int kf : {0, 1, 2, 4})
        for (int kb : {0, 1, 3})
          for (double af : {0.0, 0.5, 4.0})
            for (double ab : {0.0, 0.25, 2.0}) {
              const ChunkWork f{cf, kf, af}, b{cb, kb, ab};
              const PairTime p = alternating_pair(f, b), q = serial_pair(f, b);
              const double eps = 1e-9;
              EXPECT_GE(p.duration, cf + cb - eps);
              EXPECT_GE(p.duration, kf * af + kb * ab - eps);
              EXPECT_LE(p.duration, q.duration + eps);
              EXPECT_NEAR(p.exposed, p.duration - cf - cb, eps);
            }
}

// ---- pipeline transfers on the link (Costs::link) -------------------------

namespace link_case {

// Two ranks, one stage each, two micro-batches, 1F1B:
//   rank 0: 0F0 0F1 0B0 0B1      rank 1: 1F0 1B0 1F1 1B1
// F = 1, B = 2; stage 0's chunks have one all-to-all of 0.5 (pieces of
// half the chunk around it), stage 1's none; a pipeline transfer is 2 of
// link time (act_bytes 2 at bandwidth 1), no latency.
Schedule two_ranks() {
  return test::schedule_of(2, 2, {{"0F0", "0F1", "0B0", "0B1"}, {"1F0", "1B0", "1F1", "1B1"}});
}

Costs costs(Costs::Link link) {
  Costs c = a2a_costs(1, 2, 1, 1, 0.5, 0.5);
  c.a2a_phases = {1, 0};
  c.act_bytes = 2;
  c.bandwidth = 1;
  c.link = link;
  return c;
}

}  // namespace link_case

// apart: transfers off the link. Rank 0: F0 = [0, .5] a2a [.5, 1] [1, 1.5];
// F1 = [1.5, 2] a2a [2, 2.5] [2.5, 3]; B0 from 8.5 (rank 1's gradient: its
// B0 ends at 6.5, + 2), B1 from 11.5: makespan 14; four waits of 0.5.
TEST(SimComm, LinkApartKeepsTransfersOffTheLink) {
  SimResult r = simulate(link_case::two_ranks(), link_case::costs(Costs::Link::Apart));
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end, 3.0);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 2.0);
  EXPECT_DOUBLE_EQ(r.makespan, 14.0);
}

// fifo: F0's send goes on rank 0's link at 1.5 and holds it until 3.5, so
// F1's all-to-all, posted at 2, runs [3.5, 4]: F1 ends at 4.5 and waited 2;
// its send runs [4.5, 6.5], and rank 1's F1 still starts at 6.5 (its B0
// ends then). Exposed on rank 0: 0.5 + 2 + 0.5 + 0.5.
TEST(SimComm, LinkFifoQueuesAllToAllsBehindPipelineSends) {
  SimResult r = simulate(link_case::two_ranks(), link_case::costs(Costs::Link::Fifo));
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end, 4.5);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 3.5);
  EXPECT_DOUBLE_EQ(r.timeline[1][2].start, 6.5);
  EXPECT_DOUBLE_EQ(r.makespan, 14.0);
}

// shared: at 2 the send has 1.5 left and the all-to-all 0.5; sharing the
// link, both lose 0.5 by 3 and the all-to-all is done: F1 waited 1 and ends
// at 3.5. Exposed on rank 0: 0.5 + 1 + 0.5 + 0.5.
TEST(SimComm, LinkSharedSplitsTheRateAmongTransfersInFlight) {
  SimResult r = simulate(link_case::two_ranks(), link_case::costs(Costs::Link::Shared));
  EXPECT_DOUBLE_EQ(r.timeline[0][1].end, 3.5);
  EXPECT_DOUBLE_EQ(r.per_rank[0].exposed_a2a, 2.5);
  EXPECT_DOUBLE_EQ(r.makespan, 14.0);
}

// Without all-to-alls a send still waits for the one before it: rank 0's
// F0 and F1 end at 1 and 2, their sends run [1, 3] and [3, 5] (fifo) where
// apart they arrive at 3 and 4; rank 1 runs 1F0 [3, 4], 1B0 [4, 6], then
// 1F1 [6, 7] either way, so the schedule absorbs it; a 1F1 right after 1F0
// (GPipe order) shows it: it starts at 5, not 4.
TEST(SimComm, LinkFifoDelaysBackToBackSends) {
  Schedule s = link_case::two_ranks();
  s.actions[1] = {parse_action("1F0"), parse_action("1F1"), parse_action("1B0"), parse_action("1B1")};
  Costs c;
  c.act_bytes = 2;
  c.bandwidth = 1;
  SimResult apart = simulate(s, c);
  c.link = Costs::Link::Fifo;
  SimResult fifo = simulate(s, c);
  EXPECT_DOUBLE_EQ(apart.timeline[1][1].start, 4.0);
  EXPECT_DOUBLE_EQ(fifo.timeline[1][1].start, 5.0);
}

// duplex: a link has an upload and a download. Ranks A and B, by hand:
// A's all-to-all phase [0, 2] takes A's upload and download; B's send to A
// posted at 1 waits for A's download: [2, 5] (fifo: B's own link, [1, 4]);
// A's next phase posted at 3 waits for it too: [5, 6] (fifo: [3, 4]). A
// send posted out of time order (the simulation visits ranks in dependency
// order) takes the first stretch free on both ends: A's upload is free in
// [2, 5], B's download too: [2, 3]. B's phase posted at 2.5 waits for its
// upload (busy [2, 5] with its send) and finds its download free then: [5, 6].
TEST(SimComm, LinkDuplexTakesTheSendersUploadAndTheReceiversDownload) {
  RankLink a(Costs::Link::Duplex), b(Costs::Link::Duplex);
  EXPECT_DOUBLE_EQ(a.exchange(0, 2), 2.0);
  EXPECT_DOUBLE_EQ(b.send_to(1, 3, &a), 5.0);
  EXPECT_DOUBLE_EQ(a.exchange(3, 1), 6.0);
  EXPECT_DOUBLE_EQ(a.send_to(0.5, 1, &b), 3.0);
  EXPECT_DOUBLE_EQ(b.exchange(2.5, 1), 6.0);
  RankLink fa(Costs::Link::Fifo), fb(Costs::Link::Fifo);
  EXPECT_DOUBLE_EQ(fa.exchange(0, 2), 2.0);
  EXPECT_DOUBLE_EQ(fb.send_to(1, 3, &fa), 4.0);
  EXPECT_DOUBLE_EQ(fa.exchange(3, 1), 4.0);
}

// The duplex model on a whole schedule: the forward part of the fifo case
// above is the same (rank 0's sends and its all-to-alls share its upload),
// and rank 1's gradients now come down rank 0's link with its backward
// all-to-alls, so nothing can end earlier than with fifo.
TEST(SimComm, LinkDuplexKeepsFifosUploadAndAddsTheDownload) {
  SimResult fifo = simulate(link_case::two_ranks(), link_case::costs(Costs::Link::Fifo));
  SimResult duplex = simulate(link_case::two_ranks(), link_case::costs(Costs::Link::Duplex));
  EXPECT_DOUBLE_EQ(duplex.timeline[0][1].end, 4.5);
  EXPECT_DOUBLE_EQ(duplex.timeline[1][2].start, 6.5);
  EXPECT_GE(duplex.makespan, fifo.makespan);
  EXPECT_GE(duplex.per_rank[0].exposed_a2a, fifo.per_rank[0].exposed_a2a);
}

}  // namespace
}  // namespace dualpipe
