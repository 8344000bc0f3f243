// The schedule generators: every method is a valid training step over its
// whole documented range of shapes, and the simulator reproduces the
// published bubble and memory figures (docs/design.md) (under the cost
// conditions the literature assumes, stated where they matter).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/placement.h"
#include "dualpipe/sim/compare.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe {
namespace {

Costs costs(double F, double B, double W) {
  Costs c;
  c.F = {F};
  c.B = {B};
  c.W = {W};
  return c;
}

std::string shape_name(int P, int N, int V = 0) {
  std::string s = "P=" + std::to_string(P) + " N=" + std::to_string(N);
  return V > 0 ? s + " V=" + std::to_string(V) : s;
}

// The documented domain of each generator (see each gen_*.cpp).
bool supported(const std::string& m, int P, int N) {
  if (m == "dualpipe") return P % 2 == 0 && N % 2 == 0;
  if (m == "chimera") return P % 2 == 0 && N % P == 0;
  return true;
}

int expected_stages(const std::string& m, int P, int V) {
  if (m == "dualpipev" || m == "zbv") return 2 * P;
  if (m == "interleaved-1f1b" || m == "combined-1f1b") return V * P;
  return P;
}

SimResult sim(const Schedule& s, const Costs& c) { return simulate(s, c, SimOptions{false}); }

// ---------------------------------------------------------------- validity

// The registry's facts of a method are data that the planner, the
// comparison table and the pictures trust without building a schedule: they
// must agree with what the generator builds. Stage r is on rank r (chunk 0)
// in every style; TwoWay keeps it on ranks r and P-1-r; V puts stage 2P-1-r
// on rank r; interleaved puts stage r + kP on rank r.
TEST(Registry, PlacementStyleMatchesTheGeneratedSchedule) {
  const int P = 4, N = 8, V = 2;
  for (const Method& m : methods()) {
    const Schedule s = m.generate(Shape{P, N, V});
    ASSERT_EQ(s.stages, m.stage_count(P, V)) << m.name;
    EXPECT_EQ(m.takes_chunks(), m.placement == PlacementStyle::Interleaved) << m.name;
    const Placement pl = placement_of(s);
    for (int st = 0; st < s.stages; ++st) {
      int first = st, second = -1;  // the ranks that should hold stage st
      switch (m.placement) {
        case PlacementStyle::OnePerRank: break;
        case PlacementStyle::TwoWay:
          first = std::min(st, P - 1 - st);
          second = std::max(st, P - 1 - st);
          break;
        case PlacementStyle::V: first = st < P ? st : 2 * P - 1 - st; break;
        case PlacementStyle::Interleaved: first = st % P; break;
      }
      const std::vector<int>& got = pl.replicas[st];
      ASSERT_EQ(got.size(), second < 0 ? 1u : 2u) << m.name << " stage " << st;
      EXPECT_EQ(got[0], first) << m.name << " stage " << st;
      if (second >= 0) {
        EXPECT_EQ(got[1], second) << m.name << " stage " << st;
      }
    }
  }
}

// The style's rule, which the schedule search places work by before any
// schedule exists, is where every generator of that style puts each cell.
TEST(Registry, StyleRankIsWhereTheGeneratorPutsEveryCell) {
  for (const auto& [P, N] : {std::pair{2, 4}, {4, 8}, {4, 12}, {6, 12}}) {
    for (const Method& m : methods()) {
      if (!supported(m.name, P, N)) continue;
      const Schedule s = m.generate(Shape{P, N, 2});
      const Placement pl = placement_of(s);
      for (int st = 0; st < s.stages; ++st)
        for (int mb = 0; mb < N; ++mb)
          ASSERT_EQ(pl.rank(st, mb), style_rank(m.placement, P, N, st, mb))
              << m.name << " P=" << P << " N=" << N << " stage " << st << " micro-batch " << mb;
    }
  }
}

TEST(GenValid, EveryMethodOverItsWholeRange) {
  for (const Method& m : methods()) {
    for (int P = 1; P <= 12; ++P) {
      for (int N = 1; N <= 3 * P + 4; ++N) {
        const Shape shape{P, N};
        if (!supported(m.name, P, N)) {
          EXPECT_THROW(m.generate(shape), Error) << m.name << " " << shape_name(P, N);
          continue;
        }
        Schedule s = m.generate(shape);
        EXPECT_EQ(s.method, m.name);
        EXPECT_EQ(s.ranks, P);
        EXPECT_EQ(s.stages, expected_stages(m.name, P, shape.chunks));
        EXPECT_EQ(s.micro_batches, N);
        CheckReport rep = check(s);
        ASSERT_TRUE(rep.ok()) << m.name << " " << shape_name(P, N) << ": " << rep.errors.front();
      }
    }
  }
}

TEST(GenValid, InterleavedForEveryChunkCountAndAnyN) {
  // Including N < P and N not a multiple of P (a short last group).
  for (int V = 1; V <= 4; ++V)
    for (int P = 1; P <= 10; ++P)
      for (int N = 1; N <= 3 * P + 2; ++N) {
        Schedule s = interleaved_1f1b(Shape{P, N, V});
        EXPECT_EQ(s.stages, V * P);
        CheckReport rep = check(s);
        ASSERT_TRUE(rep.ok()) << shape_name(P, N, V) << ": " << rep.errors.front();
      }
}

// Combined 1F1B is interleaved 1F1B with its steady state merged into F&B
// pairs: taking every pair apart (forward half, then backward half) gives
// interleaved 1F1B's lists with one warm-up forward moved earlier; every
// pair's halves are independent (the checker's dependency walk runs a pair
// only when both inputs are there), for every chunk count and any N.
TEST(GenValid, CombinedIsInterleavedWithPairsAndOneMoreWarmupForward) {
  for (int V = 1; V <= 3; ++V)
    for (int P = 1; P <= 8; ++P)
      for (int N = 1; N <= 3 * P + 2; ++N) {
        Schedule c = combined_1f1b(Shape{P, N, V}), il = interleaved_1f1b(Shape{P, N, V});
        ASSERT_TRUE(check(c).ok()) << shape_name(P, N, V);
        int pairs = 0;
        for (int r = 0; r < P; ++r) {
          std::vector<Action> apart;
          for (const Action& a : c.actions[r])
            for (const Action& h : halves(a)) apart.push_back(h);
          for (const Action& a : c.actions[r]) pairs += a.op == Op::FB;
          // Same actions; the forwards and the backwards each in the same order.
          auto only = [](const std::vector<Action>& v, Op op) {
            std::vector<std::string> out;
            for (const Action& a : v)
              if (a.op == op) out.push_back(to_string(a));
            return out;
          };
          EXPECT_EQ(only(apart, Op::F), only(il.actions[r], Op::F)) << shape_name(P, N, V) << " rank " << r;
          EXPECT_EQ(only(apart, Op::B), only(il.actions[r], Op::B)) << shape_name(P, N, V) << " rank " << r;
        }
        // A steady state whenever the forwards outnumber the warm-up.
        if (N * V > 2 * P + (V - 1) * P + 1) {
          EXPECT_GT(pairs, 0) << shape_name(P, N, V);
        }
      }
}

TEST(GenValid, PlacementOfStagesOnRanks) {
  // Interleaved: rank r runs stages r, r+P, r+2P, ...
  Schedule il = interleaved_1f1b(Shape{4, 8, 3});
  for (int r = 0; r < 4; ++r)
    for (const Action& a : il.actions[r]) EXPECT_EQ(a.stage % 4, r) << to_string(a);
  // ZBV: rank r runs stages r and 2P-1-r; I's come before their W's.
  Schedule v = zbv(Shape{4, 8});
  for (int r = 0; r < 4; ++r)
    for (const Action& a : v.actions[r]) EXPECT_TRUE(a.stage == r || a.stage == 7 - r) << to_string(a);
  // Chimera: the first N/2 micro-batches go down (stage s on rank s), the
  // last N/2 go up (stage s on rank P-1-s).
  Schedule c = chimera(Shape{4, 8});
  for (int r = 0; r < 4; ++r)
    for (const Action& a : c.actions[r]) EXPECT_EQ(a.stage, a.mb < 4 ? r : 3 - r) << to_string(a);
  // ZB1P uses only F, I, W; the others here use full B.
  // Named: a range-for over zb1p(...).actions[2] would walk a vector of a
  // temporary destroyed before the loop (ASan: heap-use-after-free).
  const Schedule z = zb1p(Shape{4, 8});
  for (const Action& a : z.actions[2]) EXPECT_NE(a.op, Op::B);
  for (const Action& a : c.actions[0]) EXPECT_TRUE(a.op == Op::F || a.op == Op::B);
}

// ---------------------------------------------------------------- bubbles

// 1F1B and GPipe: (P-1)(F+B) whatever the costs and N.
TEST(GenBubble, OneFOneBAndGPipeMatchPublished) {
  for (const Costs& c : {costs(1, 2, 1), costs(1, 1, 0.5), costs(2, 3, 1)})
    for (int P = 2; P <= 16; ++P)
      for (int N : {P, 2 * P, 4 * P}) {
        const double want = *published_bubble("1f1b", P, c, 1);
        EXPECT_DOUBLE_EQ(sim(one_f_one_b(Shape{P, N}), c).bubble, want) << shape_name(P, N);
        EXPECT_DOUBLE_EQ(sim(gpipe(Shape{P, N}), c).bubble, *published_bubble("gpipe", P, c, 1)) << shape_name(P, N);
      }
}

// ZB1P: (P-1)(F+B-2W) = (P-1)(F+I-W) holds when W <= F and W <= I (= B-W),
// i.e. when a deferred W fits in the gap it is moved into. The paper's
// figures use F = I = W. Two settings inside the condition, and more.
TEST(GenBubble, ZB1PMatchesPublishedWhenWIsTheSmallest) {
  for (const Costs& c : {costs(1, 2, 1), costs(1, 2, 0.5), costs(2, 3, 1), costs(1, 4, 1), costs(1, 2, 0)})
    for (int P = 2; P <= 16; ++P)
      for (int N : {P, 2 * P, 4 * P}) {
        const double want = *published_bubble("zb1p", P, c, 1);
        EXPECT_NEAR(sim(zb1p(Shape{P, N}), c).bubble, want, 1e-9) << shape_name(P, N) << " " << describe(c);
      }
}

// Outside that condition the two unavoidable waits dominate: rank P-1 cannot
// start before (P-1)F, and rank 0, which holds at most P activations, waits
// (P-1)I for its first input gradient. The bubble is (P-1) max(F+I-W, F, I).
TEST(GenBubble, ZB1POutsideTheCondition) {
  for (const Costs& c : {costs(1, 2, 1.5), costs(1, 3, 1.5), costs(2, 2, 1.5), costs(1, 1, 1)})
    for (int P = 2; P <= 12; ++P)
      for (int N : {P, 3 * P}) {
        const double F = c.f(0), I = c.i(0), W = c.w(0);
        const double want = (P - 1) * std::max({F + I - W, F, I});
        EXPECT_NEAR(sim(zb1p(Shape{P, N}), c).bubble, want, 1e-9) << shape_name(P, N) << " " << describe(c);
      }
}

// Interleaved 1F1B: (P-1)(F+B)/V, with each chunk-stage costing F/V and B/V
// (the same model cut V times finer, as compare() does), for any N >= P:
// Megatron's multiples of P, and the other N with groups of at least P.
TEST(GenBubble, InterleavedMatchesPublished) {
  for (const Costs& full : {costs(1, 2, 1), costs(1, 1, 0), costs(2, 1, 0)})
    for (int V = 2; V <= 4; ++V) {
      const Costs chunk = costs(full.f(0) / V, full.b(0) / V, full.w(0) / V);
      for (int P = 2; P <= 12; ++P)
        for (int N : {P, P + 1, 2 * P - 1, 2 * P, 3 * P + 2, 4 * P}) {
          const double want = *published_bubble("interleaved-1f1b", P, full, V);
          EXPECT_NEAR(sim(interleaved_1f1b(Shape{P, N, V}), chunk).bubble, want, 1e-9)
              << shape_name(P, N, V) << " " << describe(full);
        }
    }
}

// Chimera: the paper counts F and B as one slot each; with F = B the
// bubble is exactly (P/2-1)(F+B) for every N (units concatenate without
// intermediate bubbles).
TEST(GenBubble, ChimeraMatchesPublishedWhenFEqualsB) {
  for (const Costs& c : {costs(1, 1, 0.5), costs(2, 2, 1)})
    for (int P = 2; P <= 16; P += 2)
      for (int N : {P, 2 * P, 4 * P}) {
        const double want = *published_bubble("chimera", P, c, 1);
        EXPECT_DOUBLE_EQ(sim(chimera(Shape{P, N}), c).bubble, want) << shape_name(P, N) << " " << describe(c);
      }
}

// With F != B the same order runs with idle time where a slot of the shorter
// kind waits on one of the longer kind: the first unit costs (P/2-1)|B-F| more
// than the formula, and each further unit 2(P/2-1)|B-F| (the paper's
// "intermediate bubbles" of direct concatenation). Measured, kept as a check.
TEST(GenBubble, ChimeraWithUnequalForwardAndBackward) {
  for (const Costs& c : {costs(1, 2, 1), costs(1, 3, 1), costs(2, 1, 0.5)})
    for (int P = 2; P <= 12; P += 2)
      for (int units = 1; units <= 3; ++units) {
        const double F = c.f(0), B = c.b(0);
        const double want = (P / 2 - 1) * ((F + B) + (2 * units - 1) * std::abs(B - F));
        EXPECT_DOUBLE_EQ(sim(chimera(Shape{P, units * P}), c).bubble, want) << shape_name(P, units * P);
      }
}

// ZB-V with F = I = W (the paper's setting, there called "zero bubble"):
// every rank does 2N(F+I+W) of work, and rank P-1 cannot start before the
// first micro-batch has gone through P-1 forwards, so no schedule with this
// placement beats a bubble of (P-1)F. Ours reaches that bound once the V is
// full (N >= 2P-1): the step is 6NF + (P-1)F, and the bubble ratio
// (P-1)/(6N+P-1) goes to zero as N grows.
TEST(GenBubble, ZBVReachesTheFillBoundWithEqualCosts) {
  for (double F : {1.0, 0.5})
    for (int P = 1; P <= 12; ++P)
      for (int N : {2 * P - 1, 2 * P, 3 * P, 4 * P + 1}) {
        if (N < 1) continue;
        SimResult r = sim(zbv(Shape{P, N}), costs(F, 2 * F, F));
        EXPECT_DOUBLE_EQ(r.bubble, (P - 1) * F) << shape_name(P, N);
        EXPECT_DOUBLE_EQ(r.makespan, 6 * N * F + (P - 1) * F) << shape_name(P, N);
      }
}

// ---------------------------------------------------------------- memory

int peak(const SimResult& r) {
  int p = 0;
  for (const RankStats& st : r.per_rank) p = std::max(p, st.peak_activations);
  return p;
}

TEST(GenPeak, OneFOneBAndZB1PHoldPOnRankZeroGPipeHoldsN) {
  const Costs c = costs(1, 2, 1);
  for (int P = 1; P <= 12; ++P)
    for (int N : {P, 2 * P + 1, 4 * P}) {
      SimResult a = sim(one_f_one_b(Shape{P, N}), c);
      SimResult z = sim(zb1p(Shape{P, N}), c);
      SimResult g = sim(gpipe(Shape{P, N}), c);
      EXPECT_EQ(a.per_rank[0].peak_activations, P) << shape_name(P, N);
      EXPECT_EQ(peak(a), P) << shape_name(P, N);
      EXPECT_EQ(z.per_rank[0].peak_activations, P) << shape_name(P, N);
      EXPECT_EQ(peak(z), P) << shape_name(P, N);
      for (const RankStats& st : g.per_rank) EXPECT_EQ(st.peak_activations, N) << shape_name(P, N);
    }
}

// Rank w holds its P/2 down activations plus the up ones that reach it:
// P/2 + 1 + min(w, P-1-w), from P/2+1 at the ends to P in the middle.
TEST(GenPeak, ChimeraBetweenHalfPPlusOneAndP) {
  for (int P = 2; P <= 16; P += 2)
    for (int N : {P, 3 * P}) {
      SimResult r = sim(chimera(Shape{P, N}), costs(1, 2, 1));
      for (int w = 0; w < P; ++w)
        EXPECT_EQ(r.per_rank[w].peak_activations, P / 2 + 1 + std::min(w, P - 1 - w)) << shape_name(P, N) << " w=" << w;
      EXPECT_EQ(peak(r), P) << shape_name(P, N);
    }
}

// ZB-V: 2P chunk activations on every rank (the ZB paper: the same memory
// as 1F1B, a chunk being half a 1F1B stage).
TEST(GenPeak, ZBVHoldsTwoPChunksOnEveryRank) {
  for (int P = 1; P <= 12; ++P)
    for (int N : {2 * P, 3 * P + 1}) {
      SimResult r = sim(zbv(Shape{P, N}), costs(1, 2, 1));
      for (int w = 0; w < P; ++w) EXPECT_EQ(r.per_rank[w].peak_activations, 2 * P) << shape_name(P, N) << " w=" << w;
    }
}

// Interleaved: rank 0 runs 2(P-1) + (V-1)P warm-up forwards before its first
// backward, so it holds VP+P-1 chunk activations, i.e. P + (P-1)/V full
// stages (Narayanan et al.); fewer when N*V is smaller than that.
TEST(GenPeak, InterleavedRankZeroHoldsPPlusPMinusOneOverVStages) {
  for (int V = 1; V <= 4; ++V)
    for (int P = 1; P <= 10; ++P)
      for (int N : {P, 2 * P, 4 * P}) {
        SimResult r = sim(interleaved_1f1b(Shape{P, N, V}), costs(1, 2, 1));
        EXPECT_EQ(r.per_rank[0].peak_activations, std::min(V * P + P - 1, N * V)) << shape_name(P, N, V);
        EXPECT_EQ(peak(r), r.per_rank[0].peak_activations) << shape_name(P, N, V);
      }
  // N = 7 on P = 4 runs as one group of G = 7: (V-1)(G-P) = 3 more chunks.
  EXPECT_EQ(sim(interleaved_1f1b(Shape{4, 7, 2}), costs(1, 2, 1)).per_rank[0].peak_activations, 11 + 3);
}

// ---------------------------------------------------------------- shapes

std::string error_of(Schedule (*gen)(const Shape&), const Shape& s) {
  try {
    gen(s);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(GenShape, UnsupportedShapesThrowWithTheRange) {
  EXPECT_NE(error_of(chimera, {3, 6}).find("even number of ranks"), std::string::npos);
  EXPECT_NE(error_of(chimera, {4, 6}).find("multiple of the ranks"), std::string::npos);
  EXPECT_NE(error_of(chimera, {4, 0}).find("at least 1 micro-batch"), std::string::npos);
  EXPECT_NE(error_of(chimera, {0, 4}).find("at least 1 rank"), std::string::npos);
  EXPECT_NE(error_of(interleaved_1f1b, {4, 8, 0}).find("at least 1 chunk"), std::string::npos);
  for (auto gen : {interleaved_1f1b, zb1p, zbv, chimera}) {
    EXPECT_THROW(gen(Shape{0, 4}), Error);
    EXPECT_THROW(gen(Shape{4, 0}), Error);
    EXPECT_THROW(gen(Shape{-1, 4}), Error);
  }
  // Each message is one line.
  for (auto gen : {interleaved_1f1b, zb1p, zbv, chimera})
    EXPECT_EQ(error_of(gen, {0, 0}).find('\n'), std::string::npos);
}

// Every method in the comparison table builds at PP = 8, N = 24 and the
// ones with an exact published bubble meet it under F=1, B=2, W=1.
TEST(GenCompare, NewMethodsInTheTable) {
  auto rows = compare(8, 24, costs(1, 2, 1), 2, CompareBasis::Stages);
  for (const CompareRow& r : rows) {
    EXPECT_TRUE(r.error.empty()) << r.method << ": " << r.error;
    if (r.method == "zb1p" || r.method == "interleaved-1f1b") {
      EXPECT_DOUBLE_EQ(r.bubble, *r.published_bubble) << r.method;
    }
    if (r.method == "zbv") {
      EXPECT_DOUBLE_EQ(r.bubble, 3);  // (P-1)F on its 4 ranks
    }
    if (r.method == "chimera") {
      EXPECT_DOUBLE_EQ(r.peak_activations, 8);
    }
  }
}

}  // namespace
}  // namespace dualpipe
