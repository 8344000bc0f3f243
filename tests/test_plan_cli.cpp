// dualpipe plan and dualpipe search end to end: outputs, files, and bad
// input as one line with exit code 2.
#include <gtest/gtest.h>

#include <fstream>
#include <iomanip>
#include <iterator>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "cli_run.h"

namespace dualpipe {
namespace {

using test_support::CliRun;
CliRun run(const std::string& args) { return test_support::run_cli(args, "", 120); }
std::string temp_path(const std::string& name) { return test_support::temp_file("dualpipe_plan_", name); }
void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

const char* kModel = R"({"name": "tiny", "layers": 8, "hidden": 256, "ffn": 1024, "heads": 4, "vocab": 1000,
  "seq_len": 128, "dtype": "bf16"})";
const char* kCluster = R"({"name": "eight", "devices": 8, "devices_per_node": 4, "memory_gib": 16,
  "matmul_tflops": 100, "intra_node_gbps": 100, "inter_node_gbps": 10})";

TEST(PlanCli, JsonHasRankedPlansAndWritesTheBestSchedule) {
  const std::string model = temp_path("model.json"), cluster = temp_path("cluster.json");
  const std::string csv = temp_path("best.csv"), svg = temp_path("best.svg");
  write_file(model, kModel);
  write_file(cluster, kCluster);
  // The report to a file: the "wrote ..." lines go to stderr.
  const std::string report = temp_path("report.json");
  CliRun r = run("plan --model " + model + " --cluster " + cluster + " --global-batch 64 --format json --csv " + csv +
                 " --svg " + svg + " -o " + report);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream report_in(report);
  const auto j = nlohmann::json::parse(report_in);
  ASSERT_FALSE(j["plans"].empty());
  const auto& best = j["plans"][0];
  for (const char* key : {"method", "pp", "tp", "dp", "ep", "micro_batches", "step_s", "bubble_ratio",
                          "exposed_comm_s", "dp_sync_s", "dp_sync_total_s", "memory_gib", "layout", "breakdown_s",
                          "executable", "not_executable"})
    EXPECT_TRUE(best.contains(key)) << key;
  EXPECT_LE(best["memory_gib"]["total"].get<double>(), 16.0);
  // The breakdown adds up to the step; the memory parts to the total.
  double sum = 0;
  for (const auto& [part, seconds] : best["breakdown_s"].items()) sum += seconds.get<double>();
  EXPECT_NEAR(sum, best["step_s"].get<double>(), 1e-9 * best["step_s"].get<double>());
  const auto& mem = best["memory_gib"];
  EXPECT_NEAR(mem["params"].get<double>() + mem["grads"].get<double>() + mem["optimizer"].get<double>() +
                  mem["activations"].get<double>() + mem["reserve"].get<double>(),
              mem["total"].get<double>(), 1e-9);
  EXPECT_EQ(best["executable"].get<bool>(), best["not_executable"].empty());
  EXPECT_TRUE(best["recompute"] == "none" || best["recompute"] == "selective" || best["recompute"] == "full");
  // --tp fixes the tensor degree; the text explains each row.
  CliRun tp = run("plan --model " + model + " --cluster " + cluster + " --global-batch 64 --tp 2 --top 2");
  ASSERT_EQ(tp.code, 0) << tp.out;
  EXPECT_NE(tp.out.find("runs on this project's runtime: no (tensor parallelism"), std::string::npos) << tp.out;
  EXPECT_NE(tp.out.find("  1: step "), std::string::npos) << tp.out;
  EXPECT_NE(tp.out.find("  2: step "), std::string::npos) << tp.out;
  // The CSV is the best plan's schedule: it reads back, checks and has pp ranks.
  CliRun back = run("schedule --from " + csv + " --format json");
  ASSERT_EQ(back.code, 0) << back.out;
  EXPECT_EQ(nlohmann::json::parse(back.out)["ranks"], best["pp"]);
  std::ifstream in(svg);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("<svg"), std::string::npos);
}

TEST(PlanCli, PresetTableAndOverride) {
  CliRun r = run("plan --preset llama-70b --global-batch 512 --top 3");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("plan llama-70b"), std::string::npos);
  EXPECT_NE(r.out.find("peak GiB"), std::string::npos);
  // The cluster of the preset replaced by a file: 8 devices now.
  const std::string cluster = temp_path("cluster2.json");
  write_file(cluster, kCluster);
  // Standard output alone: a slow machine may print progress lines on standard error.
  CliRun o = test_support::run_cli_stdout("plan --preset llama-70b --cluster " + cluster +
                                          " --global-batch 64 --memory-limit 1000 --format json");
  ASSERT_EQ(o.code, 0) << o.out;
  const auto j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["cluster"], "eight");
  EXPECT_EQ(j["plans"][0]["pp"].get<int>() * j["plans"][0]["dp"].get<int>(), 8);
}

TEST(PlanCli, MeasuredProfileDrivesThePlan) {
  // A profile whose layers take 1 ms each: the step can be no shorter than
  // one device's share of the work (8 layers x 3 ms x 64 sequences / 8 devices).
  const std::string model = temp_path("pm.json"), cluster = temp_path("pc.json"), profile = temp_path("pp.json");
  write_file(model, kModel);
  write_file(cluster, kCluster);
  write_file(profile, R"({"micro_batch_size": 1, "layer": {"f": 0.001, "i": 0.001, "w": 0.001, "act_bytes": 1000},
    "embedding": {"f": 0, "i": 0, "w": 0, "act_bytes": 0}, "head": {"f": 0, "i": 0, "w": 0, "act_bytes": 0}})");
  CliRun r = run("plan --model " + model + " --cluster " + cluster + " --profile " + profile +
                 " --global-batch 64 --recompute none --format json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GE(j["plans"][0]["pipeline_s"].get<double>(), 8 * 0.003 * 64 / 8 * 0.999);
  EXPECT_LT(j["plans"][0]["pipeline_s"].get<double>(), 8 * 0.003 * 64 / 8 * 1.5);
  write_file(profile, R"({"micro_batch_size": 1, "layer": {"f": -1}})");
  CliRun bad = run("plan --model " + model + " --cluster " + cluster + " --profile " + profile + " --global-batch 64");
  EXPECT_EQ(bad.code, 2);
  // Worded as model files' errors are: the file, then the field.
  EXPECT_NE(bad.out.find(profile + ": profile.layer.f must be a finite number >= 0 (got -1)"), std::string::npos)
      << bad.out;
}

TEST(PlanCli, SearchJsonHasTheDocumentedFields) {
  const std::string csv = temp_path("search.csv");
  CliRun r = run("search --ranks 4 --micro-batches 16 --cost F=1:1.2:1.4:1.6,B=2:2.4:2.8:3.2,W=1:1.2:1.4:1.6 "
                 "--iterations 200 --format json --csv " + csv);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_LT(j["makespan"].get<double>(), j["baseline"].get<double>());
  EXPECT_EQ(j["peak_activations"].size(), 4u);
  CliRun back = run("simulate --from " + csv + " --cost F=1:1.2:1.4:1.6,B=2:2.4:2.8:3.2,W=1:1.2:1.4:1.6 --format json");
  ASSERT_EQ(back.code, 0) << back.out;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(back.out)["makespan"].get<double>(), j["makespan"].get<double>());
}

std::string read_doc(const std::string& relative) {
  std::ifstream in(std::string(DUALPIPE_TEST_DATA_DIR) + "/../../docs/" + relative);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(PlanCli, DocsQuoteTheCandidateCountsTheProgramPrints) {
  // docs/planner.md and the manual quote the DeepSeek-V3 example's counts;
  // they once said 595 plans fit where the program said 601.
  // Standard output alone: progress lines go to standard error, never into the JSON.
  CliRun r = test_support::run_cli_stdout("plan --preset deepseek-v3 --global-batch 15360 --top 5 --format json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  std::smatch m;
  const std::string planner = read_doc("planner.md");
  ASSERT_TRUE(std::regex_search(
      planner, m, std::regex(R"(enumerates (\d+) candidates, simulates (\d+) of those that fit and prunes (\d+))")));
  EXPECT_EQ(std::stoll(m[1]), j["candidates"].get<long long>());
  EXPECT_EQ(std::stoll(m[2]), j["simulated"].get<long long>());
  EXPECT_EQ(std::stoll(m[3]), j["pruned"].get<long long>());
  const std::string manual = read_doc("manual/plan.md");
  ASSERT_TRUE(std::regex_search(
      manual, m,
      std::regex(R"((\d+) candidates, (\d+) fit and were simulated, (\d+) fit but were pruned \(bounded slower than row 5\), (\d+) over memory)")));
  EXPECT_EQ(std::stoll(m[1]), j["candidates"].get<long long>());
  EXPECT_EQ(std::stoll(m[2]), j["simulated"].get<long long>());
  EXPECT_EQ(std::stoll(m[3]), j["pruned"].get<long long>());
  EXPECT_EQ(std::stoll(m[4]), j["over_memory"].get<long long>());
}

using test_support::one_line;

TEST(PlanCli, BadInputGivesOneLineAndExitCode2) {
  const std::string model = temp_path("m.json"), cluster = temp_path("c.json");
  write_file(cluster, kCluster);
  struct BadCase {
    std::string model_json, args, want;
  };
  const std::string base = std::string(kModel);
  auto with = [&](const std::string& field) {  // kModel with one more (overriding) field
    return base.substr(0, base.size() - 1) + ", " + field + "}";
  };
  const std::vector<BadCase> cases = {
      {with(R"("hidden": -4)"), "--global-batch 64", "model.hidden must be in [1, 16777216] (got -4)"},
      {R"({"name": "x", "hidden": 64})", "--global-batch 64", "model.layers is missing"},
      {"{not json", "--global-batch 64", "is not valid JSON"},
      {with(R"("moe": {"experts": 8, "top_k": 2, "expert_ffn": 64})"), "--global-batch 64 --ep 3",
       "--ep must divide model.moe.experts (8) (got 3)"},
      {with(R"("moe": {"experts": 4, "top_k": 5, "expert_ffn": 64})"), "--global-batch 64",
       "model.moe.top_k must be in [1, 4] (got 5)"},
      {kModel, "--global-batch 64 --memory-limit 0.0001", "no plan fits --memory-limit 0.0001 GiB per device: the smallest"},
      {kModel, "--global-batch 64 --memory-limit -3", "--memory-limit must be in (0, 1e9] GiB (got -3)"},
      {kModel, "--global-batch 0", "--global-batch must be a whole number of sequences in [1, 1099511627776] (got '0')"},
      {kModel, "--global-batch 64 --ranks 3", "--ranks must divide cluster.devices (8) (got 3)"},
      {kModel, "--global-batch 64 --layout 1,1", "--layout '1,1' places 2 layers; the model has 8"},
      {kModel, "--global-batch 64 --layout 1,1,1", "--layout '1,1,1' places 3 layers; the model has 8"},
      {kModel, "--global-batch 64 --layout 3,3,2", "--layout '3,3,2' has 3 stages: no method"},
      {kModel, "--global-batch 64 --top 0", "--top must be at least 1 (got 0)"},
      {with(R"("kv_head": 2)"), "--global-batch 64", "model.kv_head is not a field of model (did you mean kv_heads?)"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.want);
    write_file(model, c.model_json);
    CliRun r = run("plan --model " + model + " --cluster " + cluster + " " + c.args);
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_TRUE(one_line(r.out)) << r.out;
    EXPECT_NE(r.out.find(c.want), std::string::npos) << r.out;
  }
  // The file is named once, at the start, and the fields without it.
  write_file(model, with(R"("kv_heads": 3)"));
  CliRun twice = run("plan --model " + model + " --cluster " + cluster + " --global-batch 64");
  EXPECT_EQ(twice.code, 2);
  EXPECT_NE(twice.out.find(model + ": model.kv_heads (3) must divide model.heads (4)"), std::string::npos) << twice.out;
  EXPECT_EQ(twice.out.find(model), twice.out.rfind(model)) << twice.out;
  write_file(model, kModel);
  CliRun dir = run("plan --model " + model + " --cluster " + ::testing::TempDir() + " --global-batch 64");
  EXPECT_EQ(dir.code, 2);
  EXPECT_TRUE(one_line(dir.out)) << dir.out;
  EXPECT_NE(dir.out.find("cannot read '" + ::testing::TempDir() + "': it is a directory"), std::string::npos)
      << dir.out;
  const std::vector<std::pair<std::string, std::string>> other = {
      {"plan --preset llama-70b --global-batch 99999999999999999999",
       "--global-batch must be a whole number of sequences in [1, 1099511627776] (got '99999999999999999999')"},
      {"plan --preset nosuch --global-batch 8", "unknown preset 'nosuch' (presets: deepseek-v3"},
      {"plan --global-batch 8", "give --preset NAME, or both --model"},
      {"plan --preset deepseek-v3 --global-batch 1099511627776",
       "micro-batches per pipeline"},  // a batch with very many shapes: refused, not minutes of work
      {"search --ranks 4 --micro-batches 8 --from-method nosuch", "unknown method 'nosuch'"},
      {"search --ranks 0 --micro-batches 8", "--ranks must be in [1, 1024] (got 0)"},
      {"search --ranks 4 --micro-batches 8 --cost F=1:1:1", "no placement puts 3 stages on 4 ranks"},
      {"search --ranks 4 --micro-batches 99999", "--micro-batches must be in [1, 4096]"},
      {"search --ranks 1000 --micro-batches 4000", "too large to search"},
  };
  for (const auto& [args, want] : other) {
    SCOPED_TRACE(args);
    CliRun r = run(args);
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_TRUE(one_line(r.out)) << r.out;
    EXPECT_NE(r.out.find(want), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace dualpipe

namespace dualpipe {
namespace {

// Time bounds. A model of 4096 layers with sequences of 2^24 tokens fits
// no plan: every candidate is over memory by its floor alone, before its
// layers are cut (cutting them took minutes). A search whose work is past
// the limit is refused in one line, before it starts.
TEST(PlanCli, HopelessAndHugeRequestsEndInSeconds) {
  const std::string model = temp_path("deep_long.json"), cluster = temp_path("deep_long_cluster.json");
  write_file(model, R"({"name": "deep-long", "layers": 4096, "hidden": 8192, "ffn": 28672, "heads": 64,
    "kv_heads": 8, "vocab": 32000, "seq_len": 16777216, "dtype": "bf16"})");
  write_file(cluster, R"({"name": "64", "devices": 64, "devices_per_node": 8, "memory_gib": 80,
    "matmul_tflops": 600, "intra_node_gbps": 450, "inter_node_gbps": 50})");
  // A hang guard, not a timing: it takes seconds here, and took minutes.
  const CliRun r =
      test_support::run_cli("plan --model " + model + " --cluster " + cluster + " --global-batch 512", "", 60);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("no plan fits --memory-limit 80 GiB per device: the smallest"), std::string::npos) << r.out;
  test_support::expect_cli_error("search -p 128 -n 1024",
                                 "--ranks 128 --micro-batches 1024 with --iterations 3000: about 1.36e+09 action "
                                 "simulations");
  test_support::expect_cli_error("search -p 128 -n 1024", "at most 5e+08 (about a minute)");
}

// --svg-width as simulate has it; the picture's title gives the table's step.
TEST(PlanCli, SvgHasAWidthAndTheTablesStep) {
  const std::string model = temp_path("model_w.json"), cluster = temp_path("cluster_w.json");
  const std::string svg = temp_path("best_w.svg"), report = temp_path("report_w.json");
  write_file(model, kModel);
  write_file(cluster, kCluster);
  const std::string base = "plan --model " + model + " --cluster " + cluster + " --global-batch 64";
  const CliRun r = run(base + " --format json -o " + report + " --svg " + svg + " --svg-width 900");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in(report);
  const auto j = nlohmann::json::parse(in);
  std::ifstream svg_in(svg);
  const std::string picture((std::istreambuf_iterator<char>(svg_in)), std::istreambuf_iterator<char>());
  EXPECT_NE(picture.find("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\""), std::string::npos)
      << picture.substr(0, 200);
  std::ostringstream step;
  step << "; step " << std::setprecision(4) << j["plans"][0]["step_s"].get<double>() << " s<";
  EXPECT_NE(picture.find(step.str()), std::string::npos) << step.str();
  test_support::expect_cli_error(base + " --svg " + svg + " --svg-width 5",
                                 "--svg-width must be 0 (automatic) or 400..100000 px");
  test_support::expect_cli_error(base + " --svg-width 900", "--svg-width shapes the --svg picture: add --svg FILE");
}

}  // namespace
}  // namespace dualpipe
