// A rank that dies or stalls: every other rank, and the command, must exit
// in bounded time with one line that names the failed rank.
#include <gtest/gtest.h>

#include "cli_run.h"

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>
#include <regex>
#include <thread>

#include <fmt/format.h>

#include "dualpipe/runtime/launch.h"

namespace dualpipe {
namespace {

using Clock = std::chrono::steady_clock;

struct Timed {
  int code = -1;
  std::string out;
  double exit_time = 0;  // CLOCK_MONOTONIC seconds when the command had exited
  double fault_time = -1;  // when the fault fired (from its line), -1 if it did not
};

// Runs the CLI under `timeout` so that a hang fails the test instead of
// blocking it; 124 then means the command hung.
Timed run_timed(const std::string& env, const std::string& args, int hard_limit_s) {
  std::string cmd = fmt::format("{} timeout -k 5 {} {} {}", env, hard_limit_s, DUALPIPE_BINARY, args);
  Timed r;
  const test_support::CliRun run = test_support::run_command(cmd);
  r.out = run.out;
  r.code = run.code;
  r.exit_time = std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  std::smatch m;
  if (std::regex_search(r.out, m, std::regex("at monotonic ([0-9.]+) s"))) r.fault_time = std::stod(m[1]);
  return r;
}

int count_lines_with(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

const std::string kTrain = "train -m dualpipe -p 2 -n 4 --model mlp --hidden 16 --seq-len 4 --steps 6 "
                           "--loss-csv /dev/null --loss-svg /dev/null";

// How much slower than idle this machine runs now: the load average per
// core, at least 1. Time bounds are multiples of it, so that a test that
// passes on an idle machine does not fail on a busy one.
double load_factor() {
  double load = 0;
  std::ifstream("/proc/loadavg") >> load;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max(1.0, load / cores);
}

// A run with a stalled rank and --timeout 3: the command did not hang, failed,
// the fault fired, and every rank ended within the timeout plus 6 s of the
// stall (times the load factor). Returns the seconds from the stall to the
// command's exit.
double expect_stall_ends_in_time(const Timed& r) {
  EXPECT_NE(r.code, 124) << "the command hung\n" << r.out;
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_GE(r.fault_time, 0) << "the fault did not fire\n" << r.out;
  const double exit_after = r.exit_time - r.fault_time;
  EXPECT_LT(exit_after, 3.0 + 6.0 * load_factor()) << r.out;
  return exit_after;
}

TEST(RankFailure, KilledRankIsNamedAndEveryoneExits) {
  const int timeout_s = 20;
  Timed r = run_timed("DUALPIPE_TEST_FAULT=kill:1:3", kTrain + fmt::format(" --timeout {}", timeout_s), 120);
  ASSERT_NE(r.code, 124) << "the command hung\n" << r.out;
  EXPECT_NE(r.code, 0) << r.out;
  ASSERT_GE(r.fault_time, 0) << "the fault did not fire\n" << r.out;
  // The launcher's line: which rank, and how.
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(dualpipe: error: rank 1 \(pid \d+\) died: signal 9)")))
      << r.out;
  // Steps after the kill never complete.
  EXPECT_EQ(r.out.find("step     6/6"), std::string::npos) << r.out;
  const double exit_after = r.exit_time - r.fault_time;
  // A dead peer is seen at once (closed connection) or at worst after the timeout.
  EXPECT_LT(exit_after, timeout_s + 5.0 * load_factor()) << r.out;
  std::cout << "[ measured ] kill of rank 1: command exited " << exit_after << " s after the kill\n" << r.out;
  RecordProperty("exit_after_kill_s", std::to_string(exit_after));
}

// Expert parallelism: rank 2 (the second expert rank of pipeline stage 0)
// dies or stalls while its expert peers wait in a MoE all-to-all.
const std::string kMoeTrain = "train -m dualpipe -p 2 -n 4 --model moe --ep 2 --hidden 16 --seq-len 4 --heads 2 "
                              "--steps 4 --loss-csv /dev/null --loss-svg /dev/null";

TEST(RankFailure, RankKilledDuringAllToAllIsNamedAndEveryoneExits) {
  const int timeout_s = 20;
  Timed r = run_timed("DUALPIPE_TEST_FAULT=kill:2:2", kMoeTrain + fmt::format(" --timeout {}", timeout_s), 120);
  ASSERT_NE(r.code, 124) << "the command hung\n" << r.out;
  EXPECT_NE(r.code, 0) << r.out;
  ASSERT_GE(r.fault_time, 0) << "the fault did not fire\n" << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(dualpipe: error: rank 2 \(pid \d+\) died: signal 9)"))) << r.out;
  EXPECT_LT(r.exit_time - r.fault_time, timeout_s + 5.0) << r.out;
}

TEST(RankFailure, RankStalledDuringAllToAllIsReportedWithTheCollective) {
  Timed r = run_timed("DUALPIPE_TEST_FAULT=stall:2:2", kMoeTrain + " --timeout 3", 120);
  expect_stall_ends_in_time(r);
  // Its expert peer (rank 0) gives up on the all-to-all after 3 s and says which.
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(dualpipe: error: rank 0: timed out after 3 s waiting for the other ranks \(the MoE (token-count exchange|dispatch all-to-all|combine all-to-all) of block \d\))")))
      << r.out;
}

// Data parallelism: rank 3 (stage 1 of the second replica) stalls; rank 1,
// its data-parallel peer, gives up on their gradient reduction after the
// timeout and says which collective; every rank ends.
TEST(RankFailure, StalledDataParallelPeerEndsEveryRankNamingTheReduction) {
  Timed r = run_timed("DUALPIPE_TEST_FAULT=stall:3:2",
                      "train -m 1f1b -p 2 -n 4 --dp 2 --model mlp --hidden 16 --seq-len 4 --steps 4 "
                      "--loss-csv /dev/null --loss-svg /dev/null --timeout 3",
                      120);
  expect_stall_ends_in_time(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(timed out after 3 s waiting for (rank 3|the other ranks))"))) << r.out;
}

TEST(RankFailure, StalledRankIsNamedByItsPeerWithTheActionItWaitedFor) {
  Timed r = run_timed("DUALPIPE_TEST_FAULT=stall:1:3", kTrain + " --timeout 3", 120);
  const double exit_after = expect_stall_ends_in_time(r);
  // Rank 0 waits for rank 1 and gives up after 3 s, naming it and the action.
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(dualpipe: error: rank 0: timed out after 3 s waiting for rank 1 \((RECV_F|RECV_B|SEND_F|SEND_B) of stage \d, micro-batch \d, )")))
      << r.out;
  // The launcher then stops the stalled rank, and its one line names that
  // rank first: the culprit, not the healthy rank that gave up on it.
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(dualpipe: error: rank\(s\) 1 stopped responding \(still running 1 s after rank 0 \(pid \d+\) failed with exit code 2\); stopped)")))
      << r.out;
  EXPECT_EQ(count_lines_with(r.out, "dualpipe: error:"), 2) << r.out;
  EXPECT_GT(exit_after, 3.0) << r.out;  // it did wait for the timeout
  std::cout << "[ measured ] stall of rank 1, --timeout 3: command exited " << exit_after << " s after the stall\n"
            << r.out;
  RecordProperty("exit_after_stall_s", std::to_string(exit_after));
}

TEST(RankFailure, StallInALongerPipelineEndsEveryRank) {
  // 1F1B over 4 ranks, rank 2 stalls: ranks 1 and 3 wait for it directly,
  // rank 0 only through rank 1; all must end and the command with them.
  Timed r = run_timed("DUALPIPE_TEST_FAULT=stall:2:2",
                      "train -m 1f1b -p 4 -n 4 --model mlp --hidden 16 --seq-len 4 --steps 4 --loss-csv /dev/null "
                      "--loss-svg /dev/null --timeout 3",
                      120);
  const double exit_after = expect_stall_ends_in_time(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(rank [13]: timed out after 3 s waiting for rank 2 \()"))) << r.out;
  std::cout << "[ measured ] stall of rank 2 of 4, --timeout 3: command exited " << exit_after
            << " s after the stall\n"
            << r.out;
}

TEST(RankFailure, BadFaultHookIsABadInput) {
  Timed r = run_timed("DUALPIPE_TEST_FAULT=explode:1", kTrain, 60);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("DUALPIPE_TEST_FAULT='explode:1' is not KIND:RANK:STEP"), std::string::npos) << r.out;
}

// The wait itself, on thread ranks: a peer that never sends is named after
// the timeout; a peer whose process group is gone is named at once.
TEST(RankFailure, WaitNamesThePeerAndWhat) {
  std::string msg;
  const auto t0 = Clock::now();
  std::promise<void> waited;  // rank 1 lives, silent, until rank 0's wait has ended
  std::shared_future<void> wait_over = waited.get_future().share();
  run_thread_ranks(
      2,
      [&](std::shared_ptr<Comm> comm) {
        if (comm->rank == 1) {
          // Alive, but never sends; bounded so that a broken wait fails the test instead of hanging it.
          wait_over.wait_for(std::chrono::seconds(60));
          return;
        }
        torch::Tensor t = torch::empty({4});
        try {
          comm->wait(comm->irecv(t, 1, 7), 1, [] { return std::string("RECV_F of stage 1, micro-batch 3, at position 7"); });
        } catch (const PeerError& e) {
          msg = e.what();
        }
        waited.set_value();
      },
      std::chrono::milliseconds(1000));
  EXPECT_EQ(msg, "rank 0: timed out after 1 s waiting for rank 1 (RECV_F of stage 1, micro-batch 3, at position 7)");
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 10.0 * load_factor());
}

TEST(RankFailure, LostConnectionIsNamedWithoutWaitingForTheTimeout) {
  std::string msg;
  double waited = 0;
  run_thread_ranks(
      2,
      [&](std::shared_ptr<Comm> comm) {
        if (comm->rank == 1) return;  // its process group goes away: its connections close
        torch::Tensor t = torch::empty({4});
        const auto t0 = Clock::now();
        try {
          comm->wait(comm->irecv(t, 1, 7), 1, [] { return std::string("RECV_B of stage 0, micro-batch 1, at position 4"); });
        } catch (const PeerError& e) {
          msg = e.what();
        }
        waited = std::chrono::duration<double>(Clock::now() - t0).count();
      },
      std::chrono::milliseconds(20000));
  EXPECT_EQ(msg, "rank 0: lost connection to rank 1 while waiting for RECV_B of stage 0, micro-batch 1, at position 4");
  EXPECT_LT(waited, 10.0 * load_factor());
}

}  // namespace
}  // namespace dualpipe
