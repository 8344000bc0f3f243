// Lowering: the communication each rank needs, and nothing more.
#include <gtest/gtest.h>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/sim/simulate.h"

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

TEST(Lower, RefusesInvalidOrAlreadyLoweredInput) {
  Schedule s = one_f_one_b(Shape{2, 2});
  EXPECT_THROW(lower(lower(s)), Error);
  s.actions[1].pop_back();
  EXPECT_THROW(lower(s), Error);
}

}  // namespace
}  // namespace dualpipe
