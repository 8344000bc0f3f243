// Lowering: the communication each rank needs, and nothing more.
#include <gtest/gtest.h>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/sim/simulate.h"
#include "test_util.h"

namespace dualpipe {
namespace {

std::string row(const Schedule& s, int r) {
  std::string out;
  for (const Action& a : s.actions[r]) out += (out.empty() ? "" : ",") + to_string(a);
  return out;
}

TEST(Lower, OneFOneBOnTwoRanks) {
  Schedule low = lower(one_f_one_b(Shape{2, 2}));
  EXPECT_EQ(row(low, 0), "0F0,0SEND_F0,0F1,0SEND_F1,0RECV_B0,0B0,0RECV_B1,0B1");
  EXPECT_EQ(row(low, 1), "1RECV_F0,1F0,1B0,1SEND_B0,1RECV_F1,1F1,1B1,1SEND_B1");
}

TEST(Lower, OverlappedPairReceivesBothInputsFirstAndSendsBothOutputsAfter) {
  // DualPipe P=4 N=8, rank 1 position 6 is (2F6;1B0): forward input from rank 2
  // (stage 1 of direction 1 lives on rank 2), gradient from rank 2 (stage 2 of
  // direction 0); it sends the forward to rank 0 and the gradient to rank 0.
  Schedule low = lower(dualpipe(Shape{4, 8}));
  const auto& r1 = low.actions[1];
  std::size_t at = 0;
  while (at < r1.size() && to_string(r1[at]) != "(2F6;1B0)OVERLAP_F_B") ++at;
  ASSERT_LT(at + 2, r1.size());
  EXPECT_EQ(to_string(r1[at - 2]), "2RECV_F6");
  EXPECT_EQ(to_string(r1[at - 1]), "1RECV_B0");
  EXPECT_EQ(to_string(r1[at + 1]), "2SEND_F6");
  EXPECT_EQ(to_string(r1[at + 2]), "1SEND_B0");
}

TEST(Lower, NoTransfersBetweenStagesOnOneRank) {
  // DualPipeV's last rank holds stages P-1 and P: the turn of the V is local.
  const int P = 4;
  Schedule low = lower(dualpipev(Shape{P, 8}));
  for (const Action& a : low.actions[P - 1]) {
    EXPECT_FALSE(a.op == Op::SEND_F && a.stage == P - 1) << to_string(a);
    EXPECT_FALSE(a.op == Op::SEND_B && a.stage == P) << to_string(a);
  }
  // A single rank needs no communication at all.
  EXPECT_FALSE(lower(one_f_one_b(Shape{1, 4})).has_comm());
}

TEST(Lower, CountsMatchTheCrossRankEdges) {
  // 1F1B: every micro-batch crosses P-1 boundaries each way.
  const int P = 5, N = 7;
  Schedule low = lower(one_f_one_b(Shape{P, N}));
  int sends = 0, recvs = 0;
  for (const auto& r : low.actions)
    for (const Action& a : r) {
      sends += a.op == Op::SEND_F || a.op == Op::SEND_B;
      recvs += a.op == Op::RECV_F || a.op == Op::RECV_B;
    }
  EXPECT_EQ(sends, 2 * N * (P - 1));
  EXPECT_EQ(recvs, 2 * N * (P - 1));
}

TEST(Lower, SimulatesLikeTheComputeOnlySchedule) {
  Costs c;
  c.FB = 2.5;
  c.latency = 0.25;
  for (const char* m : {"dualpipe", "dualpipev", "1f1b"}) {
    Schedule s = generate(m, Shape{4, 10});
    EXPECT_DOUBLE_EQ(simulate(lower(s), c).makespan, simulate(s, c).makespan) << m;
  }
}

// DualPipe P=2 opens with three forwards on each rank: the last two (one
// arriving from the other rank, one of the rank's own first stage) become
// a pair; the first, which needs nothing but its input, stays alone.
TEST(PairForwards, PairsTheLastTwoOfARunOfForwards) {
  Schedule s = pair_forwards(dualpipe(Shape{2, 8}));
  EXPECT_TRUE(check(s).ok());
  EXPECT_EQ(row(s, 0).substr(0, 28), "0F0,(1F4;0F1)OVERLAP_F_F,1B4");
  EXPECT_EQ(row(s, 1).substr(0, 28), "0F4,(1F0;0F5)OVERLAP_F_F,1B0");
  // Nothing else changes: the rest of each list is the generator's.
  Schedule plain = dualpipe(Shape{2, 8});
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(s.actions[r].size() + 1, plain.actions[r].size());
    for (std::size_t p = 2; p < s.actions[r].size(); ++p) EXPECT_EQ(s.actions[r][p], plain.actions[r][p + 1]);
  }
}

// DualPipeV's middle rank runs stage 1 then stage 2 of one micro-batch back
// to back: the second needs the first's output, so they never pair.
TEST(PairForwards, NeverPairsTwoForwardsOfOneMicroBatch) {
  for (const char* m : {"dualpipev", "zbv", "1f1b", "interleaved-1f1b", "dualpipe"}) {
    Schedule s = pair_forwards(generate(m, Shape{4, 8, 2}));
    EXPECT_TRUE(check(s).ok()) << m;
    int pairs = 0;
    for (const auto& list : s.actions)
      for (const Action& a : list)
        if (a.op == Op::FF) {
          ++pairs;
          EXPECT_NE(a.mb, a.mb2) << m << ": " << to_string(a);
        }
    EXPECT_GT(pairs, 0) << m;
  }
}

// Rank 1 forwards micro-batch 1 before 0, so rank 0's 2F0 waits for 0F1's
// output through rank 1: pairing 0F1 with 2F0 would stall the schedule.
// pair_forwards pairs a forward only with one whose input is on the rank
// from the start: it leaves them apart, and pairs 0F0 with 0F1 (stage 0:
// the model's input) instead.
TEST(PairForwards, PairsOnlyForwardsWhoseSecondInputIsOnTheRank) {
  Schedule s = test::schedule_of(3, 2, {{"0F0", "0F1", "2F0", "2B0", "2F1", "2B1", "0B0", "0B1"},
                                        {"1F1", "1F0", "1B0", "1B1"}});
  ASSERT_TRUE(check(s).ok());
  Schedule all = s;
  all.actions[0][1] = Action::forward_pair(0, 1, 2, 0);
  all.actions[0].erase(all.actions[0].begin() + 2);
  EXPECT_FALSE(check(all).ok()) << "the pairing this test is about must stall";
  Schedule p = pair_forwards(s);
  EXPECT_TRUE(check(p).ok());
  EXPECT_EQ(row(p, 0), "(0F0;0F1)OVERLAP_F_F,2F0,2B0,2F1,2B1,0B0,0B1");
  EXPECT_EQ(row(p, 1), row(s, 1));
}

// A pair takes both forwards' inputs before it starts and sends both outputs
// after it ends; the simulator without all-to-alls runs it as its two
// forwards back to back once both inputs are there.
TEST(PairForwards, LowersAndSimulates) {
  Schedule s = pair_forwards(dualpipe(Shape{2, 8}));
  Schedule low = lower(s);
  const auto& r0 = low.actions[0];
  std::size_t at = 0;
  while (at < r0.size() && r0[at].op != Op::FF) ++at;
  ASSERT_LT(at + 1, r0.size());
  EXPECT_EQ(to_string(r0[at - 1]), "1RECV_F4");
  EXPECT_EQ(to_string(r0[at + 1]), "0SEND_F1");
  Costs c;
  EXPECT_DOUBLE_EQ(simulate(low, c).makespan, simulate(s, c).makespan);
  EXPECT_THROW(pair_forwards(low), Error);
}

TEST(Lower, RefusesInvalidOrAlreadyLoweredInput) {
  Schedule s = one_f_one_b(Shape{2, 2});
  EXPECT_THROW(lower(lower(s)), Error);
  s.actions[1].pop_back();
  EXPECT_THROW(lower(s), Error);
}

}  // namespace
}  // namespace dualpipe
