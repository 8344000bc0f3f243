// The runtime commands' options: ranges, seeding, defaults that follow the
// shape, wording of counts, checkpoint manifests, settings shared by ranks.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "thread_ranks.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <future>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/model_settings.h"
#include "train/remove_tree.h"
#include "dualpipe/train/lr_warmup.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe {
namespace {
namespace fs = std::filesystem;

using test_support::CliRun;
using test_support::run_cli;

std::string temp_file(const std::string& name) {
  return (fs::path(::testing::TempDir()) / fmt::format("dp_harden_{}_{}", getpid(), name)).string();
}

bool has(const std::string& text, const std::string& fragment) { return text.find(fragment) != std::string::npos; }

// A tiny training run on thread ranks: seconds, not minutes.
const std::string kTinyMlp = " --model mlp --hidden 8 --seq-len 2 --micro-batch-size 1 --threads --loss-csv /dev/null "
                             "--loss-svg /dev/null";

// CLI11 wraps -1 to 2^64-1 and clamps numbers beyond 2^64-1 for a
// uint64_t option; --seed must be refused instead, as every integer option.
TEST(RunOptions, SeedOutOfRangeIsRefused) {
  const std::string v = "verify -m 1f1b -p 2 -n 2 --threads --hidden 8 --seq-len 2 --seed ";
  for (const std::string bad : {"-1", "1e30", "18446744073709551616", "99999999999999999999999", "12abc"}) {
    CliRun r = run_cli(v + bad);
    EXPECT_EQ(r.code, 2) << bad << "\n" << r.out;
    EXPECT_TRUE(has(r.out, "dualpipe: error: --seed must be in 0..18446744073709551615 (got " + bad + ")"))
        << bad << "\n" << r.out;
  }
  // The ends of the range run.
  for (const std::string good : {"0", "18446744073709551615"}) {
    CliRun r = run_cli(v + good);
    EXPECT_EQ(r.code, 0) << good << "\n" << r.out;
  }
}

// every rank seeds LibTorch's default generator from the run's seed,
// so the random state a checkpoint saves (and any dropout) is reproducible.
TEST(RunOptions, TrainingSeedsTheDefaultGenerator) {
  at::set_num_threads(1);
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  TrainOptions t = test_support::small_train_options(s, "mlp", 1, torch::kFloat32);
  for (uint64_t seed : {4242u, 777u}) {
    t.model.seed = seed;
    torch::manual_seed(1);  // whatever state came before
    test_support::train_threads(s, t);
    EXPECT_EQ(at::detail::getDefaultCPUGenerator().current_seed(), seed);
  }
}

// `train --from FILE.csv` takes the schedule from the file although
// train has defaults for --method, --ranks and --micro-batches.
TEST(RunOptions, TrainFromCsv) {
  const std::string csv = temp_file("sched.csv");
  std::ofstream(csv) << "0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n";
  CliRun r = run_cli("train --from " + csv + " --steps 1" + kTinyMlp);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "2 ranks, 2 stages, 2 micro-batches")) << r.out;
  CliRun both = run_cli("train --from " + csv + " -n 4 --steps 1" + kTinyMlp);
  EXPECT_EQ(both.code, 2) << both.out;
  EXPECT_TRUE(has(both.out, "--from reads the whole schedule")) << both.out;
}

// without -n, N follows P (8, or 2P when that is more), so that
// `train -p 8` does not run DualPipe below the 2P micro-batches it needs.
TEST(RunOptions, TrainDefaultMicroBatchesFollowRanks) {
  CliRun r = run_cli("train -p 8 --steps 1" + kTinyMlp);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "train dualpipe: 8 ranks, 8 stages, 16 micro-batches")) << r.out;
  CliRun small = run_cli("train -p 2 --steps 1" + kTinyMlp);
  EXPECT_TRUE(has(small.out, "2 ranks, 2 stages, 8 micro-batches")) << small.out;
  CliRun given = run_cli("train -p 8 -n 10 --steps 1" + kTinyMlp);
  EXPECT_TRUE(has(given.out, "8 ranks, 8 stages, 10 micro-batches")) << given.out;
}

// counts of one are singular in train's output.
TEST(RunOptions, TrainSaysOneStepInTheSingular) {
  CliRun r = run_cli("train -m 1f1b -p 1 -n 1 --steps 1 --model mlp --hidden 8 --seq-len 2 --micro-batch-size 1 "
                     "--loss-csv /dev/null --loss-svg /dev/null");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "train 1f1b: 1 rank, 1 stage, 1 micro-batch of 1 x 2 tokens")) << r.out;
  EXPECT_TRUE(has(r.out, "; 1 step\n")) << r.out;
  EXPECT_TRUE(has(r.out, "over 1 step;")) << r.out;
  EXPECT_TRUE(has(r.out, "/ 1 activation\n")) << r.out;
  EXPECT_FALSE(has(r.out, " 1 steps") || has(r.out, " 1 activations") || has(r.out, " 1 ranks")) << r.out;
}

// the learning rate rises linearly over the warm-up, and train warms
// up by default over a tenth of the run (at most 50 steps).
TEST(RunOptions, LearningRateWarmUpValues) {
  EXPECT_DOUBLE_EQ(warmup_lr(1.0, 0, 4), 0.25);
  EXPECT_DOUBLE_EQ(warmup_lr(1.0, 1, 4), 0.5);
  EXPECT_DOUBLE_EQ(warmup_lr(1.0, 3, 4), 1.0);
  EXPECT_DOUBLE_EQ(warmup_lr(1.0, 9, 4), 1.0);
  EXPECT_DOUBLE_EQ(warmup_lr(2.0, 0, 0), 2.0);
  EXPECT_EQ(default_lr_warmup_steps(400), 40);
  EXPECT_EQ(default_lr_warmup_steps(5000), 50);
  EXPECT_EQ(default_lr_warmup_steps(6), 0);
}

// AdamW's update is proportional to the rate (weight decay included), so the
// first step of a 4-step warm-up must equal a step at a quarter of the rate,
// and differ from one at the full rate.
TEST(RunOptions, WarmUpStepIsTheStepAtTheLowerRate) {
  at::set_num_threads(1);
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  TrainOptions warm = test_support::small_train_options(s, "mlp", 1, torch::kFloat64);
  warm.lr_warmup_steps = 4;
  TrainOptions quarter = warm, full = warm;
  quarter.lr_warmup_steps = full.lr_warmup_steps = 0;
  quarter.lr = warm.lr / 4;
  auto a = test_support::train_threads(s, warm), b = test_support::train_threads(s, quarter),
       c = test_support::train_threads(s, full);
  for (int r = 0; r < s.ranks; ++r)
    for (const auto& [stage, flat] : a[r].final_params) {
      EXPECT_TRUE(torch::allclose(flat, b[r].final_params.at(stage), 1e-12, 1e-12)) << "stage " << stage;
      EXPECT_FALSE(torch::allclose(flat, c[r].final_params.at(stage), 1e-12, 1e-12)) << "stage " << stage;
    }
}

// Short runs on the default settings: without a warm-up the default GPT's
// loss jumped by 0.165 from step 5 to step 6 (3.093 -> 3.258) of a 30-step
// run; with the default warm-up no step of the first 12 rises by 0.1.
TEST(RunOptions, DefaultTrainingHasNoEarlySpike) {
  const std::string csv = temp_file("loss.csv");
  CliRun r = run_cli("train --steps 30 --threads --loss-svg /dev/null --loss-csv " + csv);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  std::vector<double> loss;
  while (std::getline(in, line)) loss.push_back(std::stod(line.substr(line.find(',') + 1)));
  ASSERT_EQ(loss.size(), 30u);
  for (std::size_t k = 1; k < 12; ++k) EXPECT_LT(loss[k] - loss[k - 1], 0.1) << "step " << k + 1;
}

// A fresh, empty folder for one test.
std::string fresh_dir(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / fmt::format("dp_harden_{}_{}", name, getpid());
  remove_tree(p.string());
  fs::create_directories(p);
  return p.string();
}

// a manifest whose fields have the wrong JSON type is skipped with a
// warning naming it, like any other corrupt checkpoint, never a raw
// json exception; and the older intact checkpoint is found.
TEST(RunOptions, ManifestFieldsOfTheWrongTypeAreSkipped) {
  at::set_num_threads(1);
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  TrainOptions t = test_support::small_train_options(s, "mlp", 2, torch::kFloat32);
  t.checkpoint.dir = fresh_dir("types");
  t.checkpoint.every = 1;
  t.checkpoint.keep = 5;
  t.checkpoint.identity = run_identity(s, t.model);
  test_support::train_threads(s, t);
  const std::string manifest = checkpoint_path(t.checkpoint.dir, 2) + "/manifest.json";
  const std::string original = [&] {
    std::ifstream in(manifest);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  auto edited = [&](const std::function<void(nlohmann::ordered_json&)>& edit) {
    auto m = nlohmann::ordered_json::parse(original);
    edit(m);
    std::ofstream(manifest) << m.dump(2);
  };
  const std::vector<std::function<void(nlohmann::ordered_json&)>> edits = {
      [](nlohmann::ordered_json& m) { m["step"] = "2"; },
      [](nlohmann::ordered_json& m) { m["version"] = "1"; },
      [](nlohmann::ordered_json& m) { m["run"]["hidden"] = "16"; },
      [](nlohmann::ordered_json& m) { m["run"]["ranks"] = "2"; },
      [](nlohmann::ordered_json& m) { m["files"][0]["bytes"] = "12"; },
      [](nlohmann::ordered_json& m) { m["files"][1]["fnv1a64"] = 7; },
  };
  for (std::size_t i = 0; i < edits.size(); ++i) {
    edited(edits[i]);
    std::vector<std::string> warnings;
    std::optional<FoundCheckpoint> found;
    try {
      found = find_checkpoint(t.checkpoint.dir, t.checkpoint.identity,
                              [&](const std::string& w) { warnings.push_back(w); });
    } catch (const std::exception& e) {
      ADD_FAILURE() << "edit " << i << " threw: " << e.what();
      continue;
    }
    ASSERT_TRUE(found.has_value()) << "edit " << i;
    EXPECT_EQ(found->step, 1) << "edit " << i;
    ASSERT_EQ(warnings.size(), 1u) << "edit " << i;
    EXPECT_TRUE(has(warnings[0], checkpoint_path(t.checkpoint.dir, 2)) && has(warnings[0], "corrupt"))
        << "edit " << i << ": " << warnings[0];
  }
}

// the corpus is identified by its text, not by the path as typed.
TEST(RunOptions, CheckpointIdentifiesTheCorpusByContent) {
  const std::string dir = fresh_dir("corpus");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  std::ofstream(dir + "/a.txt") << text;
  std::ofstream(dir + "/b.txt") << text;
  std::ofstream(dir + "/c.txt") << text << "and more";
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  ModelConfig m = test_support::small_train_options(s, "gpt", 1, torch::kFloat32).model;
  auto id = [&](const std::string& path) {
    m.data_path = path;
    return run_identity(s, m);
  };
  EXPECT_EQ(id(dir + "/a.txt"), id(dir + "/b.txt"));
  EXPECT_EQ(id(dir + "/a.txt"), id(dir + "/./a.txt"));
  EXPECT_NE(id(dir + "/a.txt"), id(dir + "/c.txt"));
  const auto before = id(dir + "/a.txt");
  std::ofstream(dir + "/a.txt") << "other text at the same path, long enough to be a corpus of its own. ";
  EXPECT_NE(id(dir + "/a.txt"), before);
}

// a second run on a checkpoint folder in use is refused with one line.
TEST(RunOptions, TwoRunsCannotShareACheckpointFolder) {
  const std::string dir = fresh_dir("lock");
  {
    CheckpointLock held(dir);
    EXPECT_THROW(CheckpointLock again(dir), Error);
    CliRun r = run_cli("train -m 1f1b -p 2 -n 2 --steps 1 --checkpoint-dir " + dir + kTinyMlp);
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_EQ(r.out, "dualpipe: error: checkpoint folder " + dir + " is in use by another run (it holds " + dir +
                         "/.lock): wait for it to end, or choose another --checkpoint-dir\n");
  }
  // Released with its holder: the next run may use the folder.
  CliRun r = run_cli("train -m 1f1b -p 2 -n 2 --steps 1 --checkpoint-dir " + dir + kTinyMlp);
  EXPECT_EQ(r.code, 0) << r.out;
}

// ranks started with different settings (torchrun-style, each with
// its own command line) are refused at start, with one line naming the first
// differing setting and both values, not a Gloo abort (exit 134).
void expect_ranks_refused(const std::string& common, const std::string& rank0, const std::string& rank1,
                          const std::string& fragment) {
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_local_port());
  auto a = std::async(std::launch::async, [&] { return run_cli(common + rank0, "RANK=0 " + env, 120); });
  auto b = std::async(std::launch::async, [&] { return run_cli(common + rank1, "RANK=1 " + env, 120); });
  const CliRun r0 = a.get(), r1 = b.get();
  for (const CliRun* r : {&r0, &r1}) {
    EXPECT_EQ(r->code, 2) << r->out;
    EXPECT_TRUE(has(r->out, "dualpipe: error: the ranks were started with different settings: " + fragment))
        << r->out;
    EXPECT_FALSE(has(r->out, "EnforceNotMet") || has(r->out, "terminate")) << r->out;
  }
}

TEST(RunOptions, RanksWithDifferentSettingsAreRefused) {
  const std::string common = "train -m 1f1b -p 2 -n 2 --steps 1 --model mlp --seq-len 2 "
                             "--loss-csv /dev/null --loss-svg /dev/null ";
  expect_ranks_refused(common, "--hidden 8 --dtype float32", "--hidden 8 --dtype float64",
                       "dtype is float32 on rank 0 but float64 on rank 1");
  expect_ranks_refused(common, "--hidden 16", "--hidden 8", "hidden is 16 on rank 0 but 8 on rank 1");
  expect_ranks_refused(common, "--hidden 8 --lr 0.001", "--hidden 8", "lr is 0.001 on rank 0 but 0.003 on rank 1");
  expect_ranks_refused("verify -m 1f1b -p 2 -n 2 --hidden 8 --seq-len 2 ", "--dtype float32", "--dtype float64",
                       "dtype is float32 on rank 0 but float64 on rank 1");
}

// Every moe setting that changes the computation is part of what the ranks
// share: ranks started with a different one are refused at start, naming it
// (they trained silently, or aborted in Gloo for --experts).
TEST(RunOptions, RanksWithDifferentMoeSettingsAreRefused) {
  const std::string corpus = temp_file("moe_corpus.txt"), other = temp_file("moe_other.txt");
  {
    std::string text;
    for (int i = 0; i < 40; ++i) text += "a mixture of experts reads this text, line after line. ";
    std::ofstream(corpus) << text;
    std::ofstream(other) << text << "and a little more";
  }
  const std::string common = "train -m 1f1b -p 2 -n 2 --steps 1 --model moe --hidden 8 --seq-len 4 "
                             "--micro-batch-size 1 --timeout 60 --loss-csv /dev/null --loss-svg /dev/null ";
  struct Case {
    std::string rank0, rank1, fragment;
  };
  const std::vector<Case> cases = {
      {"--top-k 2", "--top-k 1", "top_k is 2 on rank 0 but 1 on rank 1"},
      {"--heads 2", "--heads 4", "heads is 2 on rank 0 but 4 on rank 1"},
      {"--layers 2", "--layers 4", "layers is 2 on rank 0 but 4 on rank 1"},
      {"--data " + corpus, "--data " + other, "data is text of"},
      {"--aux-alpha 0.01", "--aux-alpha 0.02", "aux_alpha is 0.01 on rank 0 but 0.02 on rank 1"},
      {"--experts 8", "--experts 4", "experts is 8 on rank 0 but 4 on rank 1"},
      {"--shared-expert true", "--shared-expert false", "shared_expert is true on rank 0 but false on rank 1"},
      {"--expert-ffn 16", "--expert-ffn 32", "expert_ffn is 16 on rank 0 but 32 on rank 1"},
  };
  for (const Case& c : cases) expect_ranks_refused(common, c.rank0, c.rank1, c.fragment);
  fs::remove(corpus);
  fs::remove(other);
}

// A moe checkpoint is found only by a run of the same settings: resuming
// with another --data, --heads, --top-k, ... is refused before any rank
// starts, naming the difference (it continued silently, or failed later).
TEST(RunOptions, MoeResumeWithOtherSettingsIsRefused) {
  at::set_num_threads(1);
  const std::string dir = fresh_dir("moe_resume");
  const std::string corpus = dir + "/corpus.txt", other = dir + "/other.txt";
  {
    std::string text;
    for (int i = 0; i < 40; ++i) text += "a mixture of experts reads this text, line after line. ";
    std::ofstream(corpus) << text;
    std::ofstream(other) << text << "and a little more";
  }
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  TrainOptions t = test_support::small_train_options(s, "moe", 1, torch::kFloat32);
  t.model.hidden = 8;
  t.model.heads = 2;
  t.model.data_path = corpus;
  t.checkpoint.dir = dir + "/ck";
  t.checkpoint.identity = run_identity(s, t.model);
  test_support::train_threads(s, t);
  ASSERT_TRUE(find_checkpoint(t.checkpoint.dir, t.checkpoint.identity, {}).has_value());
  const std::vector<std::pair<std::string, std::function<void(ModelConfig&)>>> changes = {
      {"top_k", [](ModelConfig& m) { m.top_k = 1; }},
      {"heads", [](ModelConfig& m) { m.heads = 4; }},
      {"layers", [](ModelConfig& m) { m.layers = 6; }},
      {"data", [&](ModelConfig& m) { m.data_path = other; }},
      {"aux_alpha", [](ModelConfig& m) { m.aux_alpha = 0.5; }},
      {"experts", [](ModelConfig& m) { m.experts = 8; }},
      {"shared_expert", [](ModelConfig& m) { m.shared_expert = false; }},
      {"expert_ffn", [](ModelConfig& m) { m.expert_ffn = 64; }},
  };
  for (const auto& [name, change] : changes) {
    ModelConfig m = t.model;
    change(m);
    try {
      find_checkpoint(t.checkpoint.dir, run_identity(s, m), {});
      ADD_FAILURE() << name << ": a checkpoint of other settings was accepted";
    } catch (const Error& e) {
      EXPECT_TRUE(has(e.what(), "was made with " + name + " ")) << name << ": " << e.what();
    }
  }
  // Settings that are the same by value (the corpus by content) resume.
  ModelConfig same = t.model;
  same.data_path = dir + "/./corpus.txt";
  EXPECT_TRUE(find_checkpoint(t.checkpoint.dir, run_identity(s, same), {}).has_value());
}

// Every field of the model's configuration is either part of the run's
// identity or named as deliberately left out: a field added later cannot be
// forgotten (each model setting of the CLI changes the identity here).
TEST(RunOptions, EveryModelSettingIsPartOfTheIdentity) {
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  for (const std::string model : {"mlp", "gpt", "moe", "deepseek"}) {
    ModelConfig base = test_support::small_train_options(s, model, 1, torch::kFloat32).model;
    const auto id = run_identity(s, base);
    int changed = 0, settings = 0;
    for_each_model_setting(base, [&](const char* name, const nlohmann::ordered_json& value, bool used) {
      ++settings;
      const std::string key = name;
      if (!used) {
        // Left out, unless the schedule's part of the identity holds it.
        if (key != "stages" && key != "micro_batches") {
          EXPECT_FALSE(id.contains(key)) << model << ": " << key;
        }
        return;
      }
      ++changed;
      ASSERT_TRUE(id.contains(name)) << model << ": " << name;
      EXPECT_EQ(id[name], value) << model << ": " << name;
    });
    EXPECT_EQ(settings, model_config_fields()) << model;
    EXPECT_GT(changed, 5) << model;
  }
}

// with more ranks than cores the overhead yardstick is flagged as
// unreliable instead of printed (it came out as -19298 us per action).
TEST(RunOptions, BenchFlagsTheOverheadWhenRanksOutnumberCores) {
  // Two thread ranks on one core (the program counts the cores it may use),
  // whatever the size of the machine.
  const std::string args = "bench -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 1 --threads";
  const std::string one_core = "taskset -c 0";
  CliRun text = run_cli(args, one_core);
  EXPECT_EQ(text.code, 0) << text.out;
  EXPECT_TRUE(has(text.out, "overhead: unreliable (ranks outnumber cores)")) << text.out;
  EXPECT_FALSE(has(text.out, "us per compute action")) << text.out;
  CliRun json = run_cli(args + " --format json", one_core);
  ASSERT_EQ(json.code, 0) << json.out;
  auto j = nlohmann::json::parse(json.out);
  // JSON: no number to misread, and the reason instead.
  EXPECT_TRUE(j.at("overhead_per_action_us").is_null()) << json.out;
  EXPECT_EQ(j.at("overhead_unreliable"), "ranks outnumber cores") << json.out;
  // Where there is a number, it is not negative and there is no reason.
  CliRun two = run_cli("bench -m 1f1b -p 1 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 2 --format json");
  ASSERT_EQ(two.code, 0) << two.out;
  auto k = nlohmann::json::parse(two.out);
  if (!k.at("overhead_per_action_us").is_null()) {
    EXPECT_GE(k["overhead_per_action_us"].get<double>(), 0.0);
    EXPECT_TRUE(k.at("overhead_unreliable").is_null()) << two.out;
  } else {
    EXPECT_TRUE(k.at("overhead_unreliable").is_string()) << two.out;
  }
}

// Options that would do nothing in this run are refused in one line, before
// any rank starts: they were taken silently.
TEST(RunOptions, OptionsThatWouldDoNothingAreRefused) {
  const std::string mlp = "train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 2 --threads "
                          "--loss-csv /dev/null --loss-svg /dev/null";
  test_support::expect_cli_error(mlp + " --experts 8", "--experts applies to --model moe or deepseek, not mlp");
  test_support::expect_cli_error(mlp + " --data /etc/hostname", "--data applies to --model gpt, moe, deepseek or");
  test_support::expect_cli_error(mlp + " --node-limit 1", "--node-limit applies to --model deepseek, not mlp");
  test_support::expect_cli_error(mlp + " --link-rate 1gbit", "--link-rate shapes the links of emulated hosts");
  test_support::expect_cli_error(mlp + " --warmup-steps 3", "--warmup-steps 3 is more than --steps 2");
  const CliRun r = run_cli(mlp, "RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999", 60);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("RANK is set, so this process is one rank of an outside launcher: --threads"),
            std::string::npos)
      << r.out;
  // The same options where they apply still run.
  EXPECT_EQ(run_cli(mlp + " --warmup-steps 2").code, 0);
}

// --max-restarts restarts our own rank processes: not threads, not an outside
// launcher's ranks (that launcher restarts them), and a bounded count.
TEST(RunOptions, MaxRestartsIsRefusedWhereThereIsNothingToRestart) {
  const std::string mlp = "train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 2 "
                          "--loss-csv /dev/null --loss-svg /dev/null";
  test_support::expect_cli_error(mlp + " --threads --max-restarts 1",
                                 "--max-restarts restarts rank processes: it does not go with --threads");
  test_support::expect_cli_error(mlp + " --max-restarts 101", "--max-restarts must be in 0..100 (got 101)");
  const CliRun r = run_cli(mlp + " --max-restarts 1", "RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999", 60);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("restarts are that launcher's (torchrun --max-restarts)"), std::string::npos) << r.out;
  // Without checkpoints a restart starts again, and says so.
  const CliRun again = run_cli(mlp + " --max-restarts 1 --timeout 10", "DUALPIPE_TEST_FAULT=kill:1:2", 120);
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("restarted without --checkpoint-dir: starting again at step 1"), std::string::npos)
      << again.out;
}

// --from <(cmd): the pipe is read once, by the launcher, and every rank
// process gets the same schedule (each reported an empty file).
TEST(RunOptions, PipedScheduleReachesEveryRankProcess) {
  const CliRun r = test_support::run_command(
      "bash -c '" + std::string(DUALPIPE_BINARY) + " train --from <(" + DUALPIPE_BINARY +
      " schedule -m 1f1b -p 2 -n 4 -f csv) --model mlp --hidden 8 --seq-len 2 --steps 2 --loss-csv /dev/null "
      "--loss-svg /dev/null'");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("summary: loss"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dualpipe
