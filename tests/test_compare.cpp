// The comparison table: every method on the same model, against the
// published closed forms.
#include <gtest/gtest.h>

#include "schedule/error.h"
#include "sim/compare.h"

namespace dp {
namespace {

const CompareRow& row(const std::vector<CompareRow>& rows, const std::string& m) {
  for (const CompareRow& r : rows)
    if (r.method == m) return r;
  throw std::runtime_error("no row " + m);
}

TEST(Compare, PublishedTableAtEightStages) {
  auto rows = compare(8, 20, parse_costs("F=1,B=2,W=1,FB=3"));
  const CompareRow& dp = row(rows, "dualpipe");
  EXPECT_EQ(dp.devices, 8);
  EXPECT_DOUBLE_EQ(dp.bubble, 6);
  EXPECT_DOUBLE_EQ(*dp.published_bubble, 6);
  EXPECT_DOUBLE_EQ(dp.params_per_device, 2);
  EXPECT_DOUBLE_EQ(dp.peak_activations, 9);
  const CompareRow& dpv = row(rows, "dualpipev");
  EXPECT_EQ(dpv.devices, 4);  // same 8 stages on half the devices
  EXPECT_EQ(dpv.stages, 8);
  EXPECT_DOUBLE_EQ(dpv.bubble, *dpv.published_bubble);
  EXPECT_DOUBLE_EQ(dpv.params_per_device, 2);
  const CompareRow& f1 = row(rows, "1f1b");
  EXPECT_DOUBLE_EQ(f1.bubble, 21);  // (8-1)(1+2)
  EXPECT_DOUBLE_EQ(f1.params_per_device, 1);
  EXPECT_DOUBLE_EQ(f1.peak_activations, 8);
  const CompareRow& gp = row(rows, "gpipe");
  EXPECT_DOUBLE_EQ(gp.bubble, 21);
  EXPECT_DOUBLE_EQ(gp.peak_activations, 20);  // all N micro-batches
}

TEST(Compare, UnsupportedShapesBecomeRowErrorsNotFailures) {
  auto rows = compare(5, 10, Costs{});
  EXPECT_FALSE(row(rows, "dualpipe").error.empty());
  EXPECT_FALSE(row(rows, "dualpipev").error.empty());
  EXPECT_TRUE(row(rows, "1f1b").error.empty());
}

TEST(Compare, RejectsBadArguments) {
  EXPECT_THROW(compare(0, 10, Costs{}), Error);
  EXPECT_THROW(compare(4, 0, Costs{}), Error);
  EXPECT_THROW(compare(4, 8, parse_costs("F=-1")), Error);
}

}  // namespace
}  // namespace dp
