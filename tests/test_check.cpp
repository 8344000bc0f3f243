// The checker: every kind of broken schedule is caught and named.
#include <gtest/gtest.h>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "test_util.h"

namespace dualpipe {
namespace {

using test::schedule_of;

// True if some error message contains every fragment.
::testing::AssertionResult has_error(const CheckReport& rep, std::initializer_list<const char*> fragments) {
  for (const std::string& e : rep.errors) {
    bool all = true;
    for (const char* f : fragments) all = all && e.find(f) != std::string::npos;
    if (all) return ::testing::AssertionSuccess();
  }
  auto fail = ::testing::AssertionFailure() << "no error with all fragments; errors:";
  for (const std::string& e : rep.errors) fail << "\n  " << e;
  return fail;
}

TEST(Check, AcceptsAValidHandWrittenSchedule) {
  Schedule s = schedule_of(2, 2, {{"0F0", "0F1", "0B0", "0I1", "0W1"}, {"1F0", "1B0", "1F1", "1B1"}});
  CheckReport rep = check(s);
  EXPECT_TRUE(rep.ok()) << rep.errors.front();
}

TEST(Check, NamesDuplicateForward) {
  Schedule s = schedule_of(2, 1, {{"0F0", "0F0", "0B0"}, {"1F0", "1B0"}});
  EXPECT_TRUE(has_error(check(s), {"rank 0, position 1 (0F0)", "second forward", "first at rank 0, position 0"}));
}

TEST(Check, NamesMissingForwardAndBackward) {
  Schedule s = schedule_of(2, 2, {{"0F0", "0F1", "0B0", "0B1"}, {"1F0", "1B0", "1F1"}});
  EXPECT_TRUE(has_error(check(s), {"backward of stage 1, micro-batch 1 is missing"}));
}

TEST(Check, WeightGradientRules) {
  EXPECT_TRUE(has_error(check(schedule_of(1, 1, {{"0F0", "0W0", "0I0"}})), {"rank 0, position 1 (0W0)", "before its I"}));
  EXPECT_TRUE(has_error(check(schedule_of(1, 1, {{"0F0", "0I0"}})), {"rank 0, position 1 (0I0)", "no W"}));
  EXPECT_TRUE(has_error(check(schedule_of(1, 1, {{"0F0", "0B0", "0W0"}})), {"(0W0)", "W without an I"}));
  EXPECT_TRUE(has_error(check(schedule_of(1, 1, {{"0F0", "0I0", "0W0", "0W0"}})), {"second weight-gradient"}));
}

TEST(Check, BackwardMustFollowItsForwardOnTheSameRank) {
  EXPECT_TRUE(has_error(check(schedule_of(1, 1, {{"0B0", "0F0"}})), {"(0B0)", "before its forward"}));
  EXPECT_TRUE(
      has_error(check(schedule_of(1, 1, {{"0F0"}, {"0B0"}})), {"rank 1, position 0 (0B0)", "forward (rank 0"}));
}

TEST(Check, IndicesOutOfRange) {
  Schedule s = schedule_of(2, 1, {{"0F0", "0B0"}, {"1F0", "1B0"}});
  s.actions[1][1] = Action::make(Op::B, 5, 0);
  EXPECT_TRUE(has_error(check(s), {"rank 1, position 1 (5B0)", "stage must be in 0..1"}));
  s.actions[1][1] = Action::make(Op::SEND_F, 1, 0);
  EXPECT_TRUE(has_error(check(s), {"(1SEND_F0)", "no neighbour"}));
}

TEST(Check, TooFewForwardsForTheDeclaredShape) {
  Schedule s = schedule_of(1, 1, {{"0F0", "0B0"}});
  s.micro_batches = 1'000'000;  // would need a million forwards; must not allocate for them
  EXPECT_TRUE(has_error(check(s), {"need 1000000 forwards", "holds 1"}));
}

TEST(Check, FindsDeadlockAndNamesEveryStalledRank) {
  // Rank 0 waits for the gradient of micro-batch 0, which rank 1 only
  // computes after a forward of micro-batch 1 that rank 0 has not issued.
  Schedule s = schedule_of(2, 2, {{"0F0", "0B0", "0F1", "0B1"}, {"1F1", "1B1", "1F0", "1B0"}});
  CheckReport rep = check(s);
  EXPECT_TRUE(has_error(rep, {"deadlock", "rank 0, position 1 (0B0)", "backward of stage 1, micro-batch 0"}));
  EXPECT_TRUE(has_error(rep, {"deadlock", "rank 1, position 0 (1F1)", "forward of stage 0, micro-batch 1"}));
}

TEST(Check, LoweredScheduleErrorsNameTheTransfer) {
  Schedule low = lower(one_f_one_b(Shape{2, 2}));
  ASSERT_TRUE(check(low).ok());
  // Drop rank 1's first receive.
  Schedule missing = low;
  ASSERT_EQ(to_string(missing.actions[1][0]), "1RECV_F0");
  missing.actions[1].erase(missing.actions[1].begin());
  EXPECT_TRUE(has_error(check(missing), {"missing 1RECV_F0 on rank 1", "(1F0)"}));
  // A send issued before what it sends.
  Schedule early = low;
  ASSERT_EQ(to_string(early.actions[0][1]), "0SEND_F0");
  std::swap(early.actions[0][0], early.actions[0][1]);
  EXPECT_TRUE(has_error(check(early), {"(0SEND_F0)", "before what it sends"}));
  // A transfer between stages on one rank.
  Schedule local = schedule_of(2, 1, {{"0F0", "0SEND_F0", "1RECV_F0", "1F0", "1B0", "0B0"}});
  EXPECT_TRUE(has_error(check(local), {"(0SEND_F0)", "same rank 0"}));
}

TEST(Check, ReceiveWaitingForASendThatComesTooLateIsADeadlock) {
  // Both ranks receive before they send: each waits for the other.
  Schedule s = schedule_of(2, 1, {{"0F0", "0RECV_B0", "0SEND_F0", "0B0"}, {"1RECV_F0", "1F0", "1B0", "1SEND_B0"}});
  CheckReport rep = check(s);
  EXPECT_TRUE(has_error(rep, {"deadlock", "rank 0, position 1 (0RECV_B0)", "SEND_B of stage 1"}));
  EXPECT_TRUE(has_error(rep, {"deadlock", "rank 1, position 0 (1RECV_F0)", "SEND_F of stage 0"}));
}

TEST(Check, EveryGeneratorIsValidWithAndWithoutCommunication) {
  for (const Method& m : methods()) {
    for (int P : {2, 4, 6, 8}) {
      for (int N : {P, 2 * P, 3 * P}) {
        Schedule s;
        try {
          s = m.generate(Shape{P, N, 2});
        } catch (const Error&) {
          continue;  // shapes a method refuses are tested with the method
        }
        CheckReport rep = check(s);
        ASSERT_TRUE(rep.ok()) << m.name << " P=" << P << " N=" << N << ": " << rep.errors.front();
        CheckReport low = check(lower(s));
        ASSERT_TRUE(low.ok()) << m.name << " lowered P=" << P << " N=" << N << ": " << low.errors.front();
      }
    }
  }
}

}  // namespace
}  // namespace dualpipe
