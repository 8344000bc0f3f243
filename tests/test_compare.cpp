// The comparison table: every method on the same model, against the
// published closed forms.
#include <gtest/gtest.h>

#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/sim/compare.h"

namespace dualpipe {
namespace {

const CompareRow& row(const std::vector<CompareRow>& rows, const std::string& m) {
  for (const CompareRow& r : rows)
    if (r.method == m) return r;
  throw std::runtime_error("no row " + m);
}

TEST(Compare, PublishedTableAtEightStages) {
  auto rows = compare(8, 20, parse_costs("F=1,B=2,W=1,FB=3"), 2, CompareBasis::Stages);
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
  auto rows = compare(5, 10, Costs{}, 2, CompareBasis::Stages);  // V shapes: 5 stages on 2.5 devices
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
}  // namespace dualpipe

namespace dualpipe {
namespace {

// on the same devices, DualPipeV runs on P ranks like DualPipe
// (2P stages of half the cost); on the same stages, on P/2.
TEST(Compare, DevicesBasisPutsEveryMethodOnTheSameDevices) {
  const Costs c = parse_costs("F=1,B=2,W=1,FB=2.5");
  auto stages = compare(8, 20, c, 2, CompareBasis::Stages);
  auto devices = compare(8, 20, c, 2, CompareBasis::Devices);
  for (const CompareRow& r : devices)
    if (r.error.empty()) {
      EXPECT_EQ(r.devices, 8) << r.method;
    }
  EXPECT_EQ(row(stages, "dualpipev").devices, 4);
  const CompareRow& dpv = row(devices, "dualpipev");
  EXPECT_EQ(dpv.stages, 16);
  // DualPipeV on 8 devices is DualPipe's half on 16 ranks of half-cost
  // stages: its bubble is the published (16/2 - 1)(FB + B - 3W) at half cost.
  ASSERT_TRUE(dpv.published_bubble.has_value());
  EXPECT_DOUBLE_EQ(*dpv.published_bubble, 7 * (2.5 + 2 - 3) / 2);
  EXPECT_DOUBLE_EQ(dpv.bubble, *dpv.published_bubble);
  // The same work on the same devices: no longer twice DualPipe's step.
  EXPECT_LT(dpv.makespan, 1.2 * row(devices, "dualpipe").makespan);
  EXPECT_GT(row(stages, "dualpipev").makespan, 1.8 * row(stages, "dualpipe").makespan);
  // Rows that do not depend on the basis do not change.
  EXPECT_DOUBLE_EQ(row(devices, "1f1b").makespan, row(stages, "1f1b").makespan);
  // Activations stay in units of one 1/P of the model: DualPipeV holds 2P+1
  // half-size ones.
  EXPECT_DOUBLE_EQ(*row(devices, "dualpipev").published_activations_value, 8.5);
  EXPECT_DOUBLE_EQ(*row(stages, "dualpipev").published_activations_value, 9);
}

// published activations as numbers, a range as two, approximate flagged.
TEST(Compare, PublishedActivationsAreNumbers) {
  auto rows = compare(8, 24, Costs{});
  EXPECT_DOUBLE_EQ(*row(rows, "1f1b").published_activations_value, 8);
  EXPECT_FALSE(row(rows, "1f1b").published_activations_approx);
  EXPECT_DOUBLE_EQ(*row(rows, "interleaved-1f1b").published_activations_value, 8 + 7 / 2.0);
  EXPECT_TRUE(row(rows, "interleaved-1f1b").published_activations_approx);
  EXPECT_DOUBLE_EQ(*row(rows, "chimera").published_activations_value, 5);
  EXPECT_DOUBLE_EQ(*row(rows, "chimera").published_activations_max, 8);
  EXPECT_FALSE(row(rows, "zbv").published_activations_value.has_value());
}

}  // namespace
}  // namespace dualpipe

namespace dualpipe {
namespace {

TEST(Compare, PublishedActivationsPrintWithoutExponents) {
  // Three significant digits printed 299.5 as "~300" (and 1001 as "1e+03").
  auto rows = compare(200, 400, Costs{});
  EXPECT_EQ(row(rows, "dualpipe").published_activations, "201");
  EXPECT_EQ(row(rows, "1f1b").published_activations, "200");
  EXPECT_EQ(row(rows, "interleaved-1f1b").published_activations, "~299.5");
}

}  // namespace
}  // namespace dualpipe

namespace dualpipe {
namespace {

// One meaning of a cost: the time of one stage on one micro-batch. Every
// row is what simulate gives for its method on its devices with the costs
// of its own stages (a V-shaped method on the same devices cuts the model
// into stages of half the cost), so compare and simulate agree.
TEST(Compare, EveryRowIsWhatSimulateGivesForItsOwnStages) {
  const Costs c = parse_costs("F=1,B=2,W=1");
  for (CompareBasis basis : {CompareBasis::Devices, CompareBasis::Stages}) {
    const auto rows = compare(16, 32, c, 2, basis);
    for (const CompareRow& r : rows) {
      ASSERT_TRUE(r.error.empty()) << r.method << ": " << r.error;
      const Schedule s = generate(r.method, Shape{r.devices, 32, 2});
      EXPECT_EQ(s.stages, r.stages) << r.method;
      EXPECT_DOUBLE_EQ(simulate(s, r.costs).makespan, r.makespan) << r.method;
    }
  }
  // The library means --ranks as the command line and simulate do: devices.
  const auto rows = compare(16, 32, c);
  EXPECT_EQ(row(rows, "zbv").devices, 16);
  EXPECT_DOUBLE_EQ(row(rows, "zbv").costs.f(0), 0.5);
  EXPECT_DOUBLE_EQ(row(rows, "1f1b").costs.f(0), 1);
}

}  // namespace
}  // namespace dualpipe
