// Checkpoints: a resumed run equals an uninterrupted one bit for bit; a
// checkpoint cut short or corrupted is skipped; one from another run is refused.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "thread_ranks.h"

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/checkpoint.h"
#include "train/remove_tree.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe {
namespace {
namespace fs = std::filesystem;

// A fresh, empty folder for one test.
std::string fresh_dir(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / fmt::format("dp_ckpt_{}_{}", name, getpid());
  remove_tree(p.string());
  fs::create_directories(p);
  return p.string();
}

TrainOptions tiny(const Schedule& s, const std::string& model, int steps) {
  return test_support::small_train_options(s, model, steps, torch::kFloat32);
}

using test_support::train_threads;

// Trains `total` steps straight, and `cut` steps + a resumed run to `total`;
// both must agree exactly.
void expect_resume_identical(const Schedule& s, const std::string& model, int cut, int total) {
  at::set_num_threads(1);
  const std::string dir = fresh_dir(model + "_" + s.method);
  TrainOptions straight = tiny(s, model, total);
  auto a = train_threads(s, straight);

  TrainOptions first = tiny(s, model, cut);
  first.checkpoint.dir = dir;
  first.checkpoint.identity = run_identity(s, first.model);
  train_threads(s, first);
  auto found = find_checkpoint(dir, first.checkpoint.identity, {});
  ASSERT_TRUE(found.has_value());
  ASSERT_EQ(found->step, cut);

  TrainOptions second = tiny(s, model, total);
  second.checkpoint = first.checkpoint;
  second.checkpoint.resume_step = found->step;
  auto b = train_threads(s, second);

  ASSERT_EQ(b[0].steps.size(), static_cast<std::size_t>(total - cut));
  std::string figures;
  for (int k = cut; k < total; ++k) {
    const StepStats &x = a[0].steps[static_cast<std::size_t>(k)], &y = b[0].steps[static_cast<std::size_t>(k - cut)];
    EXPECT_EQ(y.step, k);
    EXPECT_EQ(x.loss, y.loss) << "step " << k + 1;  // exact: bit for bit
    EXPECT_EQ(x.grad_norm, y.grad_norm) << "step " << k + 1;
    figures += fmt::format(" step {}: {:.9g} / {:.9g};", k + 1, x.loss, y.loss);
  }
  double max_diff = 0;
  for (int r = 0; r < s.ranks; ++r) {
    ASSERT_EQ(a[r].final_params.size(), b[r].final_params.size());
    for (const auto& [stage, flat] : a[r].final_params) {
      EXPECT_TRUE(torch::equal(flat, b[r].final_params.at(stage))) << "rank " << r << " stage " << stage;
      max_diff = std::max(max_diff, (flat - b[r].final_params.at(stage)).abs().max().item<double>());
    }
  }
  std::cout << "[ resume   ] " << model << " " << s.method << " P=" << s.ranks << ": " << total << " straight vs "
            << cut << " + resumed " << total - cut << "; losses (straight / resumed):" << figures
            << " max |param difference| " << max_diff << "\n";
  remove_tree(dir);
}

TEST(Checkpoint, ResumeIsBitIdenticalMlpDualPipe) {
  expect_resume_identical(lower(dualpipe(Shape{2, 4})), "mlp", 3, 6);
}

TEST(Checkpoint, ResumeIsBitIdenticalGptZb1p) {
  // GPT's data moves with the step; ZB1P's split backward defers weight work.
  expect_resume_identical(lower(zb1p(Shape{2, 4})), "gpt", 3, 6);
}

// Corruptions of the newest checkpoint, each detected and skipped for the older one.
TEST(Checkpoint, IncompleteAndCorruptCheckpointsAreSkipped) {
  at::set_num_threads(1);
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  const std::string dir = fresh_dir("corrupt");
  TrainOptions t = tiny(s, "mlp", 4);
  t.checkpoint.dir = dir;
  t.checkpoint.every = 2;
  t.checkpoint.identity = run_identity(s, t.model);
  train_threads(s, t);
  ASSERT_TRUE(fs::exists(fs::path(checkpoint_path(dir, 4)) / "manifest.json"));
  ASSERT_TRUE(fs::exists(fs::path(checkpoint_path(dir, 2)) / "manifest.json"));

  struct Case {
    std::string name, expect;
    std::function<void(const fs::path&)> spoil;
  };
  std::vector<Case> cases = {
      {"no manifest", "incomplete (no manifest.json", [](const fs::path& p) { fs::remove(p / "manifest.json"); }},
      {"bad json", "corrupt (manifest.json is not valid JSON)",
       [](const fs::path& p) { std::ofstream(p / "manifest.json") << "{\"format\": \"dualpipe-chec"; }},
      {"flipped byte", "corrupt (rank-1.pt fails its checksum)",
       [](const fs::path& p) {
         std::fstream f(p / "rank-1.pt", std::ios::in | std::ios::out | std::ios::binary);
         f.seekg(100);
         char c = 0;
         f.read(&c, 1);
         c = static_cast<char>(c ^ 0x40);
         f.seekp(100);
         f.write(&c, 1);
       }},
      {"truncated", "corrupt (rank-0.pt has 1000 bytes, the manifest says",
       [](const fs::path& p) { fs::resize_file(p / "rank-0.pt", 1000); }},
      {"missing file", "corrupt (rank-1.pt is missing)", [](const fs::path& p) { fs::remove(p / "rank-1.pt"); }},
  };
  for (const Case& c : cases) {
    const std::string copy = fresh_dir("corrupt_copy");
    fs::copy(dir, copy, fs::copy_options::recursive);
    c.spoil(fs::path(checkpoint_path(copy, 4)));
    std::vector<std::string> warnings;
    auto found = find_checkpoint(copy, t.checkpoint.identity, [&](const std::string& w) { warnings.push_back(w); });
    ASSERT_TRUE(found.has_value()) << c.name;
    EXPECT_EQ(found->step, 2) << c.name;
    ASSERT_EQ(warnings.size(), 1u) << c.name;
    EXPECT_NE(warnings[0].find("skipping checkpoint " + checkpoint_path(copy, 4) + ": " + c.expect), std::string::npos)
        << c.name << ": " << warnings[0];
    remove_tree(copy);
  }
  // Untouched, the newest is taken without a word.
  std::vector<std::string> warnings;
  auto found = find_checkpoint(dir, t.checkpoint.identity, [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->step, 4);
  EXPECT_TRUE(warnings.empty());
  remove_tree(dir);
}

TEST(Checkpoint, KeepsTheNewestAndRefusesAnotherRun) {
  at::set_num_threads(1);
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  const std::string dir = fresh_dir("keep");
  TrainOptions t = tiny(s, "mlp", 7);
  t.checkpoint.dir = dir;
  t.checkpoint.every = 2;
  t.checkpoint.keep = 2;
  t.checkpoint.identity = run_identity(s, t.model);
  train_threads(s, t);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  // Every 2 steps and after the last (7); the 2 newest stay.
  EXPECT_EQ(left, (std::vector<std::string>{"step-000006", "step-000007"}));

  // Another method, the same ranks: refused, naming both.
  Schedule other = lower(gpipe(Shape{2, 2}));
  try {
    find_checkpoint(dir, run_identity(other, t.model), {});
    ADD_FAILURE() << "a checkpoint of another method was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "checkpoint " + checkpoint_path(dir, 7) +
                                         " was made by 1f1b with 2 ranks; this run is gpipe with 2 ranks");
  }
  // Another model shape.
  ModelConfig wider = t.model;
  wider.hidden = 32;
  try {
    find_checkpoint(dir, run_identity(s, wider), {});
    ADD_FAILURE() << "a checkpoint of another model was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "checkpoint " + checkpoint_path(dir, 7) +
                                         " was made with hidden 16, ffn 64; this run has hidden 32, ffn 128");
  }
  remove_tree(dir);
}

// ---- through the command line, with rank processes ----

using test_support::CliRun;
using test_support::run_cli;

using test_support::read_text;

// The parameters of every stage in a rank file.
std::map<std::string, torch::Tensor> saved_params(const std::string& file) {
  std::map<std::string, torch::Tensor> out;
  torch::serialize::InputArchive ar;
  ar.load_from(file);
  for (const std::string& key : ar.keys()) {
    if (key.rfind("stage_", 0) != 0) continue;
    torch::serialize::InputArchive sa;
    ar.read(key, sa);
    torch::Tensor count;
    sa.read("count", count, true);
    for (int64_t i = 0; i < count.item<int64_t>(); ++i) {
      torch::Tensor v;
      sa.read(fmt::format("p{}", i), v, true);
      out[fmt::format("{}/p{}", key, i)] = v;
    }
  }
  return out;
}

// Six steps of DualPipe on two rank processes, a checkpoint every two.
const std::string kSixSteps = "train -m dualpipe -p 2 -n 4 --model gpt --hidden 32 --seq-len 8 --micro-batch-size 2 "
                              "--steps 6 --checkpoint-every 2 --loss-svg /dev/null";

// kSixSteps into `dir`, its loss CSV in it; the exit code.
int run_uninterrupted(const std::string& dir) {
  CliRun a = run_cli(kSixSteps + " --checkpoint-dir " + dir + " --loss-csv " + dir + "/loss.csv");
  EXPECT_EQ(a.code, 0) << a.out;
  return a.code;
}

// "step,loss" of each row of a loss CSV from step `from` on.
std::string loss_lines(const std::string& csv, int from) {
  std::string out;
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line))
    if (std::stoi(line.substr(0, line.find(','))) >= from) out += line.substr(0, line.find(',', line.find(',') + 1)) + "\n";
  return out;
}

// Every rank file of the checkpoints of `step` in two folders holds the same
// parameters, bit for bit.
void expect_same_params(const std::string& a, const std::string& b, int step, int ranks) {
  for (int r = 0; r < ranks; ++r) {
    const std::string f = "rank-" + std::to_string(r) + ".pt";
    auto pa = saved_params((fs::path(checkpoint_path(a, step)) / f).string());
    auto pb = saved_params((fs::path(checkpoint_path(b, step)) / f).string());
    ASSERT_EQ(pa.size(), pb.size());
    ASSERT_FALSE(pa.empty());
    for (const auto& [k, v] : pa) EXPECT_TRUE(torch::equal(v, pb.at(k))) << f << " " << k;
  }
}

TEST(CheckpointCli, KilledWhileWritingResumesFromThePreviousOne) {
  const std::string dir = fresh_dir("cli_kill"), ref = fresh_dir("cli_ref");
  const std::string base = kSixSteps;
  // Uninterrupted.
  ASSERT_EQ(run_uninterrupted(ref), 0);
  // Rank 0 dies after both rank files of step 4 are written, before the manifest.
  CliRun b = run_cli(base + " --checkpoint-dir " + dir + " --loss-csv /dev/null",
                     "DUALPIPE_TEST_FAULT=kill-before-manifest:0:4");
  EXPECT_NE(b.code, 0) << b.out;
  EXPECT_NE(b.out.find("rank 0 (pid"), std::string::npos) << b.out;
  const fs::path cut = checkpoint_path(dir, 4);
  EXPECT_TRUE(fs::exists(cut / "rank-0.pt") && fs::exists(cut / "rank-1.pt")) << b.out;
  EXPECT_FALSE(fs::exists(cut / "manifest.json")) << b.out;
  // A fresh run must not write into it.
  CliRun fresh = run_cli(base + " --checkpoint-dir " + dir + " --loss-csv /dev/null");
  EXPECT_EQ(fresh.code, 2) << fresh.out;
  EXPECT_NE(fresh.out.find("pass --resume"), std::string::npos) << fresh.out;
  // Resumed: skips step 4 with a warning, goes on from step 2.
  CliRun c = run_cli(base + " --checkpoint-dir " + dir + " --resume --loss-csv " + dir + "/loss.csv");
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_NE(c.out.find("dualpipe: warning: skipping checkpoint " + cut.string() + ": incomplete"), std::string::npos)
      << c.out;
  EXPECT_EQ(c.out.find("skipping checkpoint", c.out.find("skipping checkpoint") + 1), std::string::npos)
      << "the warning must be printed once, not once per process\n"
      << c.out;
  EXPECT_NE(c.out.find("resuming from " + checkpoint_path(dir, 2) + " after step 2"), std::string::npos) << c.out;
  // Steps 3..6 of both runs: the same losses, and the same final parameters.
  const std::string la = read_text(ref + "/loss.csv"), lc = read_text(dir + "/loss.csv");
  EXPECT_EQ(loss_lines(la, 3), loss_lines(lc, 3));
  EXPECT_EQ(loss_lines(lc, 1).substr(0, 2), "3,");  // the resumed run started with step 3
  expect_same_params(ref, dir, 6, 2);
  std::cout << "[ resume   ] gpt dualpipe P=2, rank processes, killed writing step 4, resumed from step 2:\n"
            << loss_lines(la, 3) << "vs\n"
            << loss_lines(lc, 3);
  remove_tree(dir);
  remove_tree(ref);
}

// --max-restarts: a rank killed in step 5 stops the run; the launcher starts
// every rank again, they go on from the checkpoint of step 4, and the
// finished run's parameters and losses equal an uninterrupted run's, bit for
// bit. Without restarts the same fault ends the run.
TEST(CheckpointCli, ARestartedRunEndsEqualToAnUninterruptedOne) {
  const std::string dir = fresh_dir("cli_restart"), ref = fresh_dir("cli_restart_ref");
  const std::string base = kSixSteps + " --timeout 20";
  ASSERT_EQ(run_uninterrupted(ref), 0);
  CliRun no_restart = run_cli(base + " --checkpoint-dir " + dir + " --loss-csv /dev/null", "DUALPIPE_TEST_FAULT=kill:1:5");
  EXPECT_NE(no_restart.code, 0) << no_restart.out;
  EXPECT_EQ(no_restart.out.find("restarting"), std::string::npos) << no_restart.out;
  remove_tree(dir);
  fs::create_directories(dir);
  CliRun b = run_cli(base + " --max-restarts 2 --checkpoint-dir " + dir + " --loss-csv " + dir + "/loss.csv",
                     "DUALPIPE_TEST_FAULT=kill:1:5");
  ASSERT_EQ(b.code, 0) << b.out;
  const auto restart = b.out.find("dualpipe: restarting all 2 ranks (restart 1 of 2)");
  EXPECT_NE(restart, std::string::npos) << b.out;
  EXPECT_EQ(b.out.find("dualpipe: restarting", restart + 1), std::string::npos) << "one restart only\n" << b.out;
  EXPECT_NE(b.out.find("resuming from " + checkpoint_path(dir, 4) + " after step 4"), std::string::npos) << b.out;
  // The loss curve has every step once, as the uninterrupted run's.
  EXPECT_EQ(loss_lines(read_text(ref + "/loss.csv"), 1), loss_lines(read_text(dir + "/loss.csv"), 1));
  expect_same_params(ref, dir, 6, 2);
  remove_tree(dir);
  remove_tree(ref);
}

TEST(CheckpointCli, AnotherRunsCheckpointIsRefusedWithCode2) {
  const std::string dir = fresh_dir("cli_mismatch");
  const std::string opts = " -p 2 -n 4 --model mlp --hidden 16 --seq-len 4 --steps 2 --threads --loss-csv /dev/null "
                           "--loss-svg /dev/null --checkpoint-dir " + dir;
  CliRun a = run_cli("train -m dualpipe" + opts);
  ASSERT_EQ(a.code, 0) << a.out;
  CliRun b = run_cli("train -m 1f1b --resume" + opts);
  EXPECT_EQ(b.code, 2) << b.out;
  EXPECT_EQ(b.out, "dualpipe: error: checkpoint " + checkpoint_path(dir, 2) +
                       " was made by dualpipe with 2 ranks; this run is 1f1b with 2 ranks\n");
  CliRun c = run_cli("train -m dualpipe --resume --seed 7" + opts);
  EXPECT_EQ(c.code, 2) << c.out;
  EXPECT_NE(c.out.find("was made with seed 1234; this run has seed 7"), std::string::npos) << c.out;
  // Resuming a finished run has nothing to do.
  CliRun d = run_cli("train -m dualpipe --resume" + opts);
  EXPECT_EQ(d.code, 0) << d.out;
  EXPECT_NE(d.out.find("nothing to train"), std::string::npos) << d.out;
  for (const char* bad : {" --resume --checkpoint-every -1", " --keep-checkpoints 0"}) {
    CliRun e = run_cli("train -m dualpipe" + opts + bad);
    EXPECT_EQ(e.code, 2) << bad << "\n" << e.out;
  }
  CliRun f = run_cli("train -m dualpipe --resume --model mlp --steps 2 --threads");
  EXPECT_EQ(f.code, 2) << f.out;
  EXPECT_NE(f.out.find("--resume needs --checkpoint-dir"), std::string::npos) << f.out;
  remove_tree(dir);
}

}  // namespace
}  // namespace dualpipe

namespace dualpipe {
namespace {

// remove_tree (used for old checkpoints) removes nested folders and files,
// removes a link without touching what it points to, and accepts a missing path.
TEST(RemoveTree, RemovesNestedFoldersButNotWhatALinkPointsTo) {
  const fs::path root = fs::path(::testing::TempDir()) / fmt::format("dp_rmtree_{}", getpid());
  const fs::path outside = root.string() + "_outside";
  fs::create_directories(root / "a" / "b");
  fs::create_directories(outside);
  std::ofstream(root / "a" / "b" / "f.pt") << "x";
  std::ofstream(outside / "keep.txt") << "y";
  fs::create_directory_symlink(outside, root / "a" / "link");
  EXPECT_TRUE(remove_tree(root.string()));
  EXPECT_FALSE(fs::exists(root));
  EXPECT_TRUE(fs::exists(outside / "keep.txt"));
  EXPECT_TRUE(remove_tree(root.string()));  // already gone
  EXPECT_TRUE(remove_tree(outside.string()));
  EXPECT_FALSE(fs::exists(outside));
}

}  // namespace
}  // namespace dualpipe
