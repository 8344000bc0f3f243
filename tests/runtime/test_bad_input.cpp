// Bad input to the commands that run the LibTorch runtime (verify, train,
// bench): arguments, corpora and launcher variables. Each must end in one
// line on stderr and exit code 2 before any rank starts, never in a crash,
// an exception trace or a hang. The cases run at once on a few threads,
// since every start of the program loads LibTorch.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "dualpipe/runtime/launch.h"
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <string>
#include <vector>

namespace dualpipe {
namespace {

using test_support::CliRun;
using test_support::run_cli;

struct BadCase {
  std::string args;
  std::string fragment;  // the message must name the problem
  std::string env = "";
};

void expect_exit_2(const std::vector<BadCase>& cases) {
  std::vector<CliRun> runs(cases.size());
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i; (i = next++) < cases.size();) runs[i] = run_cli(cases[i].args, cases[i].env);
  };
  std::vector<std::future<void>> pool;
  for (int k = 0; k < 6; ++k) pool.push_back(std::async(std::launch::async, worker));
  for (auto& f : pool) f.get();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const BadCase& c = cases[i];
    const CliRun& r = runs[i];
    const std::string what = c.env + " " + c.args + "\n" + r.out;
    EXPECT_EQ(r.code, 2) << what;
    EXPECT_NE(r.out.find(c.fragment), std::string::npos) << what;
    // Exactly one line: an exception trace or a rank's output would add more.
    EXPECT_TRUE(!r.out.empty() && r.out.find('\n') == r.out.size() - 1) << what;
    EXPECT_EQ(r.out.rfind("dualpipe: error: ", 0), 0u) << what;
  }
}

std::string temp_path(const std::string& name) { return test_support::temp_file("dualpipe_bad_", name); }


TEST(BadInput, ModelAndRankArgumentsOfVerify) {
  const std::string v = "verify -m 1f1b -p 2 -n 2 --threads ";
  expect_exit_2({
      // Sizes that used to end in LibTorch's allocation failure (exit 134
      // with a stack trace) now name the valid range.
      {v + "--hidden 100000000", "--hidden must be in 1..1048576 (got 100000000)"},
      {v + "--seq-len 1000000000", "--seq-len must be in 1..1048576"},
      {v + "--micro-batch-size 99999999999", "--micro-batch-size must be in 1..1048576"},
      {v + "--ffn -1", "--ffn must be in 0..1048576"},
      {v + "--hidden 65536", "model too large"},
      {v + "--micro-batch-size 4096 --seq-len 4096 --hidden 256", "micro-batch too large"},
      {v + "--hidden 0", "--hidden must be in 1..1048576 (got 0)"},
      {v + "--hidden -5", "--hidden must be in"},
      {v + "--hidden abc", "--hidden"},
      {v + "--model foo", "unknown model 'foo'"},
      {v + "--dtype half", "half"},
      {v + "--model gpt --heads 0", "--heads must be in 1..32"},
      {v + "--model gpt --heads 5", "--heads (5) must be at least 1 and divide --hidden (32)"},
      {v + "--model gpt --layers -1", "--layers must be in 0..4096"},
      {v + "--model gpt --layers 100000000", "--layers must be in 0..4096"},
      {v + "--timeout 0", "--timeout must be in 1..86400 seconds (got 0)"},
      {v + "--timeout 86401", "--timeout must be in 1..86400"},
      {v + "--timeout 99999999999", "--timeout"},
      {v + "--bogus", "--bogus"},
      {v + "--sched fifo", "--sched: fifo not in {batch,normal}"},
      {"verify -m 1f1b -p 0 -n 2", "--ranks must be at least 1"},
      {"verify -m 1f1b -p 2 -n -1", "--micro-batches must be at least 1"},
      {"verify -m 1f1b -p two -n 2", "--ranks"},
      {"verify -m 1f1b -p 99999999 -n 2", "at most 16777216 are supported"},
      {"verify --from /nonexistent/s.csv", "cannot open schedule file"},
  });
}

TEST(BadInput, CorpusFiles) {
  const std::string empty = temp_path("empty.txt"), tiny = temp_path("tiny.txt"), dir = temp_path("dir");
  std::ofstream(empty).close();
  std::ofstream(tiny) << "abc";
  const std::string mkdir = "mkdir -p " + dir;
  ASSERT_EQ(std::system(mkdir.c_str()), 0);
  const std::string g = "--model gpt --threads --data ";
  expect_exit_2({
      {"train -p 2 -n 2 --steps 1 " + g + "/nonexistent/corpus.txt", "does not exist"},
      {"train -p 2 -n 2 --steps 1 " + g + empty, "is empty"},
      {"train -p 2 -n 2 --steps 1 " + g + dir, "is a directory"},
      {"train -p 2 -n 2 --steps 1 " + g + tiny, "fewer than"},
      {"verify -m 1f1b -p 2 -n 2 " + g + empty, "is empty"},
      {"bench -m 1f1b -p 2 -n 2 " + g + tiny, "fewer than"},
  });
}

TEST(BadInput, TrainAndBenchArguments) {
  const std::string t = "train -p 2 -n 2 --threads ";
  const std::string b = "bench -m 1f1b -p 2 -n 2 --threads ";
  expect_exit_2({
      {t + "--steps 0", "--steps must be at least 1 (got 0)"},
      {t + "--steps -3", "--steps must be at least 1"},
      {t + "--lr 0", "--lr must be positive"},
      {t + "--lr -1", "--lr must be positive"},
      {t + "--lr nan", "'nan' is not a finite number"},
      {t + "--lr inf", "'inf' is not a finite number"},
      {t + "--clip inf", "'inf' is not a finite number"},
      {t + "--weight-decay nan", "'nan' is not a finite number"},
      {t + "--weight-decay -1", "must not be negative"},
      {t + "--hidden 100000000", "--hidden must be in"},
      {"train -m dualpipe -p 3 -n 4 --threads", "even number of ranks"},
      // Output paths are checked before training, not after it.
      {t + "--loss-csv /nonexistent/loss.csv", "--loss-csv '/nonexistent/loss.csv': folder '/nonexistent' does not exist"},
      {t + "--loss-svg /nonexistent/loss.svg", "--loss-svg"},
      {t + "--trace /nonexistent/t.json", "--trace"},
      {t + "--svg " + ::testing::TempDir(), "is a folder"},
      {t + "--frobnicate", "--frobnicate"},
      {b + "--steps 0", "--steps must be at least 1"},
      {b + "--hidden -1", "--hidden must be in"},
      {b + "--format xml", "xml"},
      {b + "--seq-len 2000000", "--seq-len must be in"},
      {"bench -m 1f1b -p 0 -n 2", "--ranks must be at least 1"},
  });
}

TEST(BadInput, LauncherVariablesThatDoNotMatchTheSchedule) {
  const std::string port = std::to_string(free_local_port());
  const std::string env = "RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port;
  expect_exit_2({
      {"verify -m 1f1b -p 2 -n 2", "WORLD_SIZE=3 but the schedule has 2 ranks", env + " WORLD_SIZE=3"},
      {"verify -m 1f1b -p 2 -n 2", "WORLD_SIZE=1 but the schedule has 2 ranks", env + " WORLD_SIZE=1"},
      {"train -m 1f1b -p 2 -n 2 --steps 1", "WORLD_SIZE=3 but the schedule has 2 ranks", env + " WORLD_SIZE=3"},
      {"verify -m 1f1b -p 2 -n 2", "RANK=5 is not below WORLD_SIZE=2",
       "RANK=5 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port},
      {"verify -m 1f1b -p 2 -n 2", "WORLD_SIZE='two'", "RANK=0 WORLD_SIZE=two MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port},
      {"verify -m 1f1b -p 2 -n 2", "MASTER_PORT", "RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=99999"},
  });
}

}  // namespace
}  // namespace dualpipe
