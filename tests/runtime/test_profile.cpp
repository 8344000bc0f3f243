// dualpipe profile: measured per-layer costs of a shipped model, in the
// format `plan --profile` reads.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli_run.h"

namespace dualpipe {
namespace {

using test_support::CliRun;
using test_support::run_cli;

TEST(ProfileCli, WritesPositiveLayerCostsThatPlanReads) {
  const std::string path = testing::TempDir() + "dualpipe_profile_test.json";
  CliRun r = run_cli("profile --reps 2 --hidden 32 --seq-len 8 -o " + path);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str());
  // A block's forward, input and weight gradients take time and hold bytes.
  for (const char* key : {"f", "i", "w", "act_bytes"}) EXPECT_GT(j["layer"][key].get<double>(), 0.0) << key;
  EXPECT_EQ(j["model"]["hidden"].get<int>(), 32);
  EXPECT_EQ(j["micro_batch_size"].get<int>(), 4);
  // The plan made from it runs and ranks candidates.
  CliRun plan = run_cli("plan --preset this-machine --profile " + path + " --global-batch 16");
  EXPECT_EQ(plan.code, 0) << plan.out;
  EXPECT_NE(plan.out.find("  1 "), std::string::npos) << plan.out;
  std::remove(path.c_str());
}

TEST(ProfileCli, BadInputIsOneLineWithCode2) {
  for (const auto& [args, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"profile --reps 0", "--reps must be in [1, 10000] (got 0)"},
           {"profile --model moe", "--model must be gpt or mlp"},
           {"profile --layers 2", "--layers must be at least 3"},
       }) {
    CliRun r = run_cli(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(fragment), std::string::npos) << args << "\n" << r.out;
  }
}

}  // namespace
}  // namespace dualpipe
