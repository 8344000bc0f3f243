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

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(test_support::read_text(path)); }

TEST(ProfileCli, WritesPositiveLayerCostsThatPlanReads) {
  const std::string path = testing::TempDir() + "dualpipe_profile_test.json";
  CliRun r = run_cli("profile --reps 2 --hidden 32 --seq-len 8 -o " + path);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = read_json(path);
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

// DeepSeek's dense and MoE blocks are timed apart (two dense blocks by
// default, so that one is a middle stage); the experts all ran on this one
// process, so the plan made from the profile keeps the expert degree at 1.
TEST(ProfileCli, DeepSeekProfileTimesDenseAndMoeBlocks) {
  const std::string path = testing::TempDir() + "dualpipe_profile_deepseek.json";
  CliRun r = run_cli("profile --model deepseek --reps 2 --hidden 32 --seq-len 8 --experts 4 --top-k 2 -o " + path);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = read_json(path);
  EXPECT_EQ(j["stages"].size(), 5u);  // two dense blocks, three MoE blocks
  for (const char* part : {"layer", "dense_layer"})
    for (const char* key : {"f", "i", "w", "act_bytes"}) EXPECT_GT(j[part][key].get<double>(), 0.0) << part << key;
  // The head holds the MTP module's block beside the output head: it weighs.
  EXPECT_GT(j["head"]["f"].get<double>(), 0.0);
  EXPECT_EQ(j["expert_parallel"].get<int>(), 1);
  CliRun plan = run_cli("plan --preset this-machine --profile " + path + " --global-batch 16");
  EXPECT_EQ(plan.code, 0) << plan.out;
  CliRun ep = run_cli("plan --preset this-machine --profile " + path + " --global-batch 16 --ep 2");
  EXPECT_EQ(ep.code, 2) << ep.out;
  EXPECT_NE(ep.out.find("timed the experts on 1 device(s), so it fits --ep 1 only"), std::string::npos) << ep.out;
  std::remove(path.c_str());
}

TEST(ProfileCli, BadInputIsOneLineWithCode2) {
  for (const auto& [args, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"profile --reps 0", "--reps must be in [1, 10000] (got 0)"},
           {"profile --model deepseek --dense-layers 1", "profile needs a middle stage of each kind of block"},
           {"profile --layers 2", "--layers must be at least 3"},
       }) {
    CliRun r = run_cli(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(fragment), std::string::npos) << args << "\n" << r.out;
  }
}

}  // namespace
}  // namespace dualpipe
