// First-use polish of the command line: required options say so, errors
// point to the subcommand's help, options that do nothing alone are refused,
// outputs say what they wrote, counts of one are singular.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "cli_run.h"
#include "dualpipe/schedule/generators.h"
#include <nlohmann/json.hpp>

#include "dualpipe/pictures/plot.h"

namespace dualpipe {
namespace {

using test_support::CliRun;
CliRun run(const std::string& args) { return test_support::run_cli(args, "", 60); }

void expect_error(const std::string& args, const std::string& fragment) { test_support::expect_cli_error(args, fragment); }

TEST(CliOptions, MissingOptionsAreNamedAsRequired) {
  expect_error("simulate -m 1f1b -p 4", "--micro-batches is required (see dualpipe simulate --help)");
  expect_error("schedule -m 1f1b -n 4", "--ranks is required (see dualpipe schedule --help)");
  expect_error("simulate -m 1f1b", "--ranks and --micro-batches are required (see dualpipe simulate --help)");
  expect_error("schedule", "--method, --ranks and --micro-batches are required, or --from FILE.csv "
                           "(see dualpipe schedule --help)");
  // A value given but out of range says so, with the value.
  expect_error("simulate -m 1f1b -p 4 -n 0", "--micro-batches must be at least 1 (got 0) (see dualpipe simulate --help)");
  // compare's own required options and parse errors point to its help too.
  expect_error("compare -n 4", "--ranks is required (see dualpipe compare --help)");
  expect_error("simulate -m 1f1b -p 2 -n 2 --bogus", "(see dualpipe simulate --help)");
}

TEST(CliOptions, OptionsThatDoNothingAloneAreRefused) {
  expect_error("simulate -m 1f1b -p 4 -n 4 --comm-bandwidth 10", "--comm-bandwidth does nothing without --act-bytes");
  expect_error("simulate -m 1f1b -p 4 -n 4 --act-bytes 100", "--act-bytes does nothing without --comm-bandwidth");
  expect_error("compare -p 4 -n 4 --comm-bandwidth 10", "--comm-bandwidth does nothing without --act-bytes");
  EXPECT_EQ(run("simulate -m 1f1b -p 4 -n 4 --comm-bandwidth 10 --act-bytes 5").code, 0);
  expect_error("simulate -m 1f1b -p 4 -n 4 --svg-width 800", "add --svg FILE");
  // Bounded: 1e9 px once wrote a 1.69 GB file.
  for (const char* w : {"1e9", "100001", "-5", "10"})
    expect_error(std::string("simulate -m 1f1b -p 4 -n 4 --svg /dev/null --svg-width ") + w,
                 "--svg-width must be 0 (automatic) or 400..100000 px");
  EXPECT_EQ(run("simulate -m 1f1b -p 4 -n 4 --svg /dev/null --svg-width 100000").code, 0);
  expect_error("simulate -m 1f1b -p 4 -n 4 --svg-time 0:10", "add --svg FILE");
  expect_error("simulate -m 1f1b -p 4 -n 4 --chunks 3", "--chunks applies to interleaved-1f1b and combined-1f1b only, not 1f1b");
  EXPECT_EQ(run("simulate -m interleaved-1f1b -p 4 -n 4 --chunks 3").code, 0);
}

// Values CLI11 would take silently: '' as 0, -1 wrapped to the largest
// unsigned number.
TEST(CliOptions, EmptyAndWrappingNumbersAreRefused) {
  expect_error("simulate -m 1f1b -p 4 -n ''", "an empty value is not a number");
  expect_error("compare -p 4 -n ''", "an empty value is not a number");
  expect_error("simulate -m interleaved-1f1b -p 4 -n 4 --chunks ''", "an empty value is not a number");
  expect_error("search -p 2 -n 4 --seed -1", "'-1' is negative");
  expect_error("plan --preset llama-70b --global-batch 64 --top -1", "--top");
  expect_error("plan --preset llama-70b --global-batch 64 --top 0", "--top");
}

// A cost key given twice kept its last value without a word.
TEST(CliOptions, ARepeatedCostKeyIsRefused) {
  expect_error("simulate -m 1f1b -p 4 -n 4 --cost F=1,B=2,F=3", "cost F is given twice in 'F=1,B=2,F=3'");
}

// plan says what it wrote, as simulate does.
TEST(CliOptions, PlanSaysWhatItWrote) {
  const std::string csv = ::testing::TempDir() + "dualpipe_opts_plan.csv", svg = ::testing::TempDir() + "dualpipe_opts_plan.svg";
  const CliRun r = run("plan --preset llama-70b --global-batch 64 --top 1 -o /dev/null --csv " + csv + " --svg " + svg);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("wrote " + csv + " (the best plan's schedule)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("wrote " + svg + " (the best plan's simulated timeline)"), std::string::npos) << r.out;
}

TEST(CliOptions, SimulateSaysWhatItWrote) {
  const std::string svg = ::testing::TempDir() + "dualpipe_opts_t.svg";
  const std::string trace = ::testing::TempDir() + "dualpipe_opts_t.json";
  CliRun r = run("simulate -m 1f1b -p 2 -n 2 -f json -o /dev/null --svg " + svg + " --trace " + trace);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("wrote " + svg + " (timeline)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("wrote " + trace + " (Chrome trace"), std::string::npos) << r.out;
}

TEST(CliOptions, CountsOfOneAreSingular) {
  CliRun r = run("simulate -m 1f1b -p 1 -n 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("1 rank, 1 stage, 1 micro-batch;"), std::string::npos) << r.out;
  CliRun s = run("schedule -m 1f1b -p 1 -n 1");
  ASSERT_EQ(s.code, 0) << s.out;
  EXPECT_NE(s.out.find("1 rank, 1 stage, 1 micro-batch, 2 actions"), std::string::npos) << s.out;
  CliRun c = run("compare -p 2 -n 1");
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_NE(c.out.find("N=1 micro-batch,"), std::string::npos) << c.out;
}

TEST(CliOptions, LossPlotStepTicksAreWholeSteps) {
  // Three steps: ticks used to fall at 1.2, 1.4, ...
  const std::string svg = line_chart_svg("loss", "step", "loss", {1, 2, 3}, {3.0, 2.5, 2.2});
  std::size_t ticks = 0;
  for (std::size_t at = svg.find("text-anchor=\"middle\">"); at != std::string::npos;
       at = svg.find("text-anchor=\"middle\">", at + 1)) {
    const std::size_t from = at + 21, to = svg.find('<', from);
    const std::string label = svg.substr(from, to - from);
    if (label == "step" || label == "loss") continue;
    ++ticks;
    EXPECT_EQ(label.find('.'), std::string::npos) << label;
  }
  EXPECT_GE(ticks, 2u);
  EXPECT_LE(ticks, 3u);
}

}  // namespace
}  // namespace dualpipe

namespace dualpipe {
namespace {

// compare's JSON is an object holding its inputs, numbers as
// numbers, without float noise.
TEST(CliOptions, CompareJsonIsAnObjectWithItsInputs) {
  CliRun r =
      test_support::run_cli_stdout("compare -p 8 -n 20 --cost F=1.1,B=2.2,W=1.1 -f json --basis stages");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["ranks"], 8);
  EXPECT_EQ(j["micro_batches"], 20);
  EXPECT_EQ(j["basis"], "stages");
  EXPECT_DOUBLE_EQ(j["costs"]["F"][0].get<double>(), 1.1);
  ASSERT_EQ(j["rows"].size(), methods().size());
  for (const auto& row : j["rows"]) {
    if (row.contains("error")) continue;
    EXPECT_TRUE(row["published_activations"].is_number() || row["published_activations"].is_null() ||
                row["published_activations"].is_object())
        << row;
  }
  // Shortest round-trip printing of noisy sums (1.1 + 2.2 ...) shows as 17 digits.
  EXPECT_EQ(r.out.find("00000000"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("99999999"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\"~"), std::string::npos) << r.out;
}

// compare --basis devices runs every method on --ranks devices, as simulate does.
TEST(CliOptions, CompareBasisDevicesAgreesWithSimulate) {
  CliRun c = test_support::run_cli_stdout("compare -p 4 -n 8 -f json");  // devices is the default
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_EQ(nlohmann::json::parse(c.out)["basis"], "devices");
  c = test_support::run_cli_stdout("compare -p 4 -n 8 --basis devices -f json");
  ASSERT_EQ(c.code, 0) << c.out;
  const auto j = nlohmann::json::parse(c.out);
  CliRun s = run("simulate -m dualpipev -p 4 -n 8 --cost F=0.5,B=1,W=0.5 -f json");
  ASSERT_EQ(s.code, 0) << s.out;
  const auto sim = nlohmann::json::parse(s.out);
  for (const auto& row : j["rows"])
    if (row["method"] == "dualpipev") {
      EXPECT_EQ(row["devices"], 4);
      EXPECT_DOUBLE_EQ(row["makespan"].get<double>(), sim["makespan"].get<double>());
    }
  expect_error("compare -p 4 -n 8 --basis nodes", "--basis");
}

}  // namespace
}  // namespace dualpipe

namespace dualpipe {
namespace {

// End to end: a PyTorch dump with stage-only actions loads, checks,
// prints and simulates; a misplaced one is named by rank and position.
TEST(CliOptions, PyTorchDumpWithStageOnlyActionsLoads) {
  const std::string path = ::testing::TempDir() + "dualpipe_opts_fsdp.csv";
  std::ofstream(path) << "0UNSHARD,0F0,0F1,0B0,0B1,0REDUCE_GRAD,0RESHARD\n"
                         "1UNSHARD,1F0,1B0,1F1,1B1,1REDUCE_GRAD,1RESHARD\n";
  CliRun j = run("schedule --from " + path + " -f json");
  ASSERT_EQ(j.code, 0) << j.out;
  EXPECT_EQ(nlohmann::json::parse(j.out)["actions"][0][5], "0REDUCE_GRAD");
  CliRun grid = run("schedule --from " + path);
  EXPECT_EQ(grid.code, 0) << grid.out;
  EXPECT_NE(grid.out.find("UNSHARD, RESHARD, REDUCE_GRAD: not drawn"), std::string::npos) << grid.out;
  CliRun sim = run("simulate --from " + path + " -f json");
  ASSERT_EQ(sim.code, 0) << sim.out;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(sim.out)["makespan"].get<double>(), 9);  // 1F1B, P=2, N=2
  const std::string bad = ::testing::TempDir() + "dualpipe_opts_fsdp_bad.csv";
  std::ofstream(bad) << "0F0,0B0,1RESHARD\n1F0,1B0\n";
  expect_error("simulate --from " + bad, "rank 0, position 2 (1RESHARD)");
}

}  // namespace
}  // namespace dualpipe
