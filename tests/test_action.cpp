#include <gtest/gtest.h>

#include "dualpipe/schedule/action.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/schedule.h"

namespace dualpipe {
namespace {

TEST(ActionString, RoundTripsEveryKind) {
  for (const char* text : {"3F12", "0I5", "7W5", "2B0", "4SEND_F3", "5RECV_F3", "1SEND_B0", "0RECV_B9",
                           "(0F7;7B13)OVERLAP_F_B", "(1F8;0F1)OVERLAP_F_F"}) {
    EXPECT_EQ(to_string(parse_action(text)), text);
  }
}

TEST(ActionString, ParsesFields) {
  Action a = parse_action("(0F7;7B13)OVERLAP_F_B");
  EXPECT_EQ(a.op, Op::FB);
  EXPECT_EQ(a.stage, 0);
  EXPECT_EQ(a.mb, 7);
  EXPECT_EQ(a.stage2, 7);
  EXPECT_EQ(a.mb2, 13);
  Action ff = parse_action("(1F8;0F1)OVERLAP_F_F");
  EXPECT_EQ(ff.op, Op::FF);
  EXPECT_TRUE(is_pair(ff.op));
  EXPECT_EQ(to_string(ff.forward_half()), "1F8");
  EXPECT_EQ(to_string(ff.second_half()), "0F1");
  EXPECT_EQ(halves(ff).count, 2);
  Action s = parse_action(" 12SEND_B104 ");
  EXPECT_EQ(s.op, Op::SEND_B);
  EXPECT_EQ(s.stage, 12);
  EXPECT_EQ(s.mb, 104);
}

TEST(ActionString, RejectsMalformed) {
  for (const char* text : {"", "F3", "3F", "3X4", "3F4x", "-1F3", "3F-1", "(0F1;0F2)OVERLAP_F_B", "(0F1;1B2)",
                           "(0F1 1B2)OVERLAP_F_B", "3SEND4", "99999999999F1", "(0F1;1B2)OVERLAP_F_F",
                           "(0B1;1F2)OVERLAP_F_F"}) {
    EXPECT_THROW(parse_action(text), Error) << text;
  }
}

// An I may run its W's work early only when that W is the next compute
// action of the list: transfers between them do not count, other work does.
TEST(Action, WComesNextOnlyWhenNoComputeActionIsBetween) {
  auto list = [](std::initializer_list<const char*> texts) {
    std::vector<Action> v;
    for (const char* t : texts) v.push_back(parse_action(t));
    return v;
  };
  EXPECT_TRUE(w_comes_next(list({"1I3", "1SEND_B3", "1W3"}), 0));
  EXPECT_FALSE(w_comes_next(list({"1I3", "1F4", "1W3"}), 0));   // other work between
  EXPECT_FALSE(w_comes_next(list({"1I3", "1W2"}), 0));          // another micro-batch's W
  EXPECT_FALSE(w_comes_next(list({"1I3", "0W3"}), 0));          // another stage's W
  EXPECT_FALSE(w_comes_next(list({"1B3", "1W3"}), 0));          // not an I
  EXPECT_FALSE(w_comes_next(list({"1I3", "1SEND_B3"}), 0));     // no W at all
}

}  // namespace
}  // namespace dualpipe
