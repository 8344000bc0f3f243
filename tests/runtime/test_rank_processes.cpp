// The runtime commands' rank processes, as a user runs them: the rendezvous
// bounded by --timeout, output paths
// checked before any rank starts, errors in one line, runs too large for the
// machine refused, compute threads per rank, JSON summaries.
#include <gtest/gtest.h>

#include "cli_run.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <regex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace dualpipe {
namespace {
namespace fs = std::filesystem;

using test_support::CliRun;
using test_support::read_text;
using test_support::run_cli;
using Clock = std::chrono::steady_clock;

bool has(const std::string& text, const std::string& fragment) { return text.find(fragment) != std::string::npos; }

std::string temp_path(const std::string& name) { return test_support::temp_file("dp_cli_harden_", name); }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// A port that was free a moment ago (the kernel picks it).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

// One line, "dualpipe: error: ...", as every user error must be.
void expect_one_error_line(const CliRun& r, const std::string& fragment, const std::string& what) {
  EXPECT_EQ(r.code, 2) << what << "\n" << r.out;
  EXPECT_EQ(lines_of(r.out).size(), 1u) << what << "\n" << r.out;
  EXPECT_EQ(r.out.rfind("dualpipe: error: ", 0), 0u) << what << "\n" << r.out;
  EXPECT_TRUE(has(r.out, fragment)) << what << " should say: " << fragment << "\n" << r.out;
}

struct TimedRun {
  CliRun run;
  double seconds = 0;
};

TimedRun run_timed(const std::string& args, const std::string& env, int limit_s) {
  const auto t0 = Clock::now();
  TimedRun t;
  t.run = run_cli(args, env, limit_s);
  t.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return t;
}

// A listening socket on a free local port that never answers: the kernel
// completes connections into its backlog, as a busy program of another kind
// (or another job's store that ignores us) would.
// A listening socket on a free loopback port; sets `port` (0 on failure).
int listen_on_loopback(int& port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  port = 0;
  if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && listen(fd, 64) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  return fd;
}

struct SilentListener {
  int fd = -1, port = 0;
  SilentListener() { fd = listen_on_loopback(port); }
  ~SilentListener() {
    if (fd >= 0) close(fd);
  }
};

const std::string kVerify = "verify -m 1f1b -p 2 -n 2 --hidden 8 --seq-len 2 ";

// a non-zero rank whose MASTER_PORT is held by a program that is not
// the rendezvous store waited forever (the store client has no read timeout).
TEST(RankProcesses, RendezvousWithAForeignProgramOnThePortEndsWithinTheTimeout) {
  SilentListener other;
  ASSERT_GT(other.port, 0);
  const int timeout_s = 2;
  TimedRun t = run_timed(kVerify + fmt::format("--timeout {}", timeout_s),
                         fmt::format("RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={}", other.port), 30);
  ASSERT_NE(t.run.code, 124) << "hung past --timeout\n" << t.run.out;
  expect_one_error_line(t.run, "rank 1: cannot meet the other ranks at 127.0.0.1:" + std::to_string(other.port),
                        "foreign program on the port");
  // --timeout, the one-second grace, and the start of a LibTorch program on a loaded machine.
  EXPECT_LT(t.seconds, timeout_s + 1 + 5.0) << t.run.out;
  std::cout << "[ measured ] rank 1 against a silent program on its port, --timeout " << timeout_s << ": exit after "
            << t.seconds << " s\n";
}

// A program on the rendezvous port that sends bytes no store sends: on every
// connection, `bytes` (once), or 0xff without end when `bytes` is empty.
// Loopback only; stops its connections when it goes.
class ChattyListener {
 public:
  explicit ChattyListener(std::string bytes) : bytes_(std::move(bytes)) {
    fd_ = listen_on_loopback(port);
    if (port == 0) return;
    accepter_ = std::thread([this] { accept_loop(); });
  }
  ~ChattyListener() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    if (accepter_.joinable()) accepter_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int c : conns_) shutdown(c, SHUT_RDWR);
    }
    for (auto& t : talkers_) t.join();
    for (int c : conns_) close(c);
    if (fd_ >= 0) close(fd_);
  }
  ChattyListener(const ChattyListener&) = delete;
  ChattyListener& operator=(const ChattyListener&) = delete;
  int port = 0;

 private:
  void accept_loop() {
    while (!stop_) {
      const int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::lock_guard<std::mutex> lock(mu_);
      conns_.push_back(c);
      talkers_.emplace_back([this, c] { talk(c); });
    }
  }
  void talk(int c) {
    if (!bytes_.empty()) {
      (void)send(c, bytes_.data(), bytes_.size(), MSG_NOSIGNAL);
      char sink[256];
      while (!stop_ && recv(c, sink, sizeof sink, 0) > 0) {
      }
      return;
    }
    const std::string ff(4096, '\xff');
    while (!stop_ && send(c, ff.data(), ff.size(), MSG_NOSIGNAL) > 0) {
    }
  }
  std::string bytes_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<int> conns_;
  std::vector<std::thread> talkers_;
  std::thread accepter_;
};

// A rank whose MASTER_PORT is held by a program that sends bytes no
// rendezvous store sends ended in std::length_error or unordered_map::at and
// SIGABRT; it is one line and exit code 2, within the timeout.
TEST(RankProcesses, ForeignBytesOnTheRendezvousPortAreOneLine) {
  const std::vector<std::pair<std::string, std::string>> talkers = {{"0xff without end", ""},
                                                                    {"64 zero bytes", std::string(64, '\0')}};
  for (const auto& [what, bytes] : talkers) {
    for (const std::string& cmd : {std::string("train -m 1f1b -p 2 -n 4 --model mlp --hidden 16 --steps 3 "
                                               "--loss-csv /dev/null --loss-svg /dev/null --timeout 5"),
                                   kVerify + "--timeout 5"}) {
      ChattyListener other(bytes);
      ASSERT_GT(other.port, 0);
      TimedRun t = run_timed(cmd, fmt::format("RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={}", other.port),
                             60);
      expect_one_error_line(t.run, "rank 1: cannot meet the other ranks at 127.0.0.1:" + std::to_string(other.port),
                            what + ": " + cmd);
      EXPECT_TRUE(has(t.run.out, "not a rendezvous store")) << what << "\n" << t.run.out;
      EXPECT_LT(t.seconds, 5 + 1 + 5.0) << what << "\n" << t.run.out;
    }
  }
}

// rank 0 alone (its peers never come) took 8.8 s at --timeout 3.
TEST(RankProcesses, RankZeroWithoutPeersEndsWithinTheTimeout) {
  const int timeout_s = 6;
  TimedRun t = run_timed(kVerify + fmt::format("--timeout {}", timeout_s),
                         fmt::format("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={}", free_port()), 60);
  // The store knows who never came.
  expect_one_error_line(t.run, "rank 0: cannot meet the other ranks", "rank 0 alone");
  EXPECT_NE(t.run.out.find("rank(s) 1 never reached the store: are they started?"), std::string::npos) << t.run.out;
  EXPECT_LT(t.seconds, timeout_s + 1 + 5.0) << t.run.out;
  std::cout << "[ measured ] rank 0 without peers, --timeout " << timeout_s << ": exit after " << t.seconds << " s\n";
}

// Rank 0 cannot bind the store's port (another program holds it): said at
// once, as such; it read "cannot meet the other ranks within T s".
TEST(RankProcesses, AStorePortInUseIsSaidAtOnce) {
  SilentListener other;
  ASSERT_GT(other.port, 0);
  TimedRun t = run_timed(kVerify + "--timeout 20",
                         fmt::format("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={}", other.port), 60);
  expect_one_error_line(t.run,
                        fmt::format("rank 0: cannot start the rendezvous store on 127.0.0.1:{}: the port is in use by "
                                    "another program (choose another MASTER_PORT)",
                                    other.port),
                        "port in use");
  EXPECT_LT(t.seconds, 15.0) << t.run.out;  // not the 20 s timeout
}

// a name that does not resolve is final at once, in one line (c10d
// retried the lookup every second until --timeout, with a glog warning each).
TEST(RankProcesses, UnresolvableMasterAddrIsOneLineAtOnce) {
  TimedRun t = run_timed(kVerify + "--timeout 30",
                         "RANK=1 WORLD_SIZE=2 MASTER_ADDR=no-such-host.invalid MASTER_PORT=29500", 60);
  expect_one_error_line(t.run, "MASTER_ADDR 'no-such-host.invalid' has no address", "unresolvable MASTER_ADDR");
  EXPECT_LT(t.seconds, 15.0) << t.run.out;
}

// no library log lines (glog's "W1126 01:34:08.49 ... socket.cpp")
// around a rendezvous that times out, and one launcher line for a failed rank.
TEST(RankProcesses, NoLibraryLogLinesAndOneLauncherLine) {
  TimedRun alone = run_timed(kVerify + "--timeout 2",
                             fmt::format("RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={}", free_port()),
                             30);
  expect_one_error_line(alone.run, "rank 1: cannot meet the other ranks", "rank 1 alone");
  CliRun killed = run_cli("train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 4 --timeout 10 "
                          "--loss-csv /dev/null --loss-svg /dev/null",
                          "DUALPIPE_TEST_FAULT=kill:1:2", 120);
  EXPECT_NE(killed.code, 0) << killed.out;
  int launcher_lines = 0;
  for (const std::string& line : lines_of(killed.out)) {
    if (line.rfind("dualpipe: error: rank ", 0) == 0 && has(line, " (pid ")) ++launcher_lines;
    // glog's lines (Debian's LibTorch) start "W1126 ...", c10's own (LibTorch
    // without glog) "[W1126 ...".
    EXPECT_FALSE(has(line, "Logging before InitGoogleLogging") || line.rfind("W1", 0) == 0 ||
                 line.rfind("E1", 0) == 0 || line.rfind("[W1", 0) == 0 || line.rfind("[E1", 0) == 0 ||
                 line.rfind("[enforce fail", 0) == 0)
        << line << "\n" << killed.out;
  }
  EXPECT_EQ(launcher_lines, 1) << killed.out;
}

// every output is checked before any rank starts: an empty name, a
// place where no file can be made (/proc refuses new files, even to root),
// a file where a folder is wanted.
TEST(RankProcesses, OutputPathsAreCheckedBeforeTheRanksStart) {
  const std::string file = temp_path("a_file");
  std::ofstream(file) << "x";
  const std::string t = "train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 1 --threads ";
  const std::string quiet = "--loss-csv /dev/null --loss-svg /dev/null ";
  struct Case {
    std::string args, fragment;
  };
  const std::vector<Case> cases = {
      {t + "--loss-csv '' --loss-svg /dev/null", "--loss-csv is empty"},
      {t + "--loss-svg '' --loss-csv /dev/null", "--loss-svg is empty"},
      {t + "--loss-csv /proc/dp_loss.csv --loss-svg /dev/null", "--loss-csv '/proc/dp_loss.csv': cannot be written"},
      {t + "--loss-svg /proc/dp_loss.svg --loss-csv /dev/null", "--loss-svg '/proc/dp_loss.svg': cannot be written"},
      {t + quiet + "--trace ''", "--trace is empty"},
      {t + quiet + "--svg ''", "--svg is empty"},
      {t + quiet + "--svg /proc/dp_step.svg", "--svg '/proc/dp_step.svg': cannot be written"},
      {t + quiet + "--checkpoint-dir ''", "--checkpoint-dir is empty"},
      {t + quiet + "--checkpoint-dir " + file, "--checkpoint-dir '" + file + "': is a file, not a folder"},
      {"profile --model mlp --reps 1 -o ''", "--output is empty"},
      {"profile --model mlp --reps 1 -o /proc/dp_profile.json", "--output '/proc/dp_profile.json': cannot be written"},
  };
  std::vector<std::future<CliRun>> runs;
  for (const Case& c : cases) runs.push_back(std::async(std::launch::async, [&c] { return run_cli(c.args); }));
  for (std::size_t i = 0; i < cases.size(); ++i) expect_one_error_line(runs[i].get(), cases[i].fragment, cases[i].args);
  fs::remove(file);
}

// The outputs are checked once, by the process that writes them (the
// launcher, or rank 0 of a torchrun-style launch): every rank process
// probed them again and ranks raced on the probe ("File exists", 1 run in
// 10). A rank other than 0 does not refuse an output it never writes; it
// goes on to meet the others (here: nobody comes).
TEST(RankProcesses, OnlyTheWritingProcessChecksTheOutputs) {
  const std::string env = fmt::format("RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={}", free_port());
  const std::string args = "train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 1 --timeout 1 "
                           "--loss-svg /dev/null --loss-csv /proc/dp_loss.csv";
  CliRun other = run_cli(args, env, 60);
  expect_one_error_line(other, "rank 1: cannot meet the other ranks", "rank 1 with an output it does not write");
  CliRun lead = run_cli(args, "RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port()),
                        60);
  expect_one_error_line(lead, "--loss-csv '/proc/dp_loss.csv': cannot be written", "rank 0");
  // Process ranks started by the launcher, many times: never a probe race.
  const std::string dir = temp_path("race");
  fs::create_directories(dir);
  std::vector<std::future<CliRun>> runs;
  for (int i = 0; i < 4; ++i)
    runs.push_back(std::async(std::launch::async, [&, i] {
      return run_cli(fmt::format("train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 1 "
                                 "--loss-csv {0}/loss{1}.csv --loss-svg {0}/loss{1}.svg --svg {0}/step{1}.svg",
                                 dir, i),
                     "", 120);
    }));
  for (auto& r : runs) {
    const CliRun done = r.get();
    EXPECT_EQ(done.code, 0) << done.out;
  }
  fs::remove_all(dir);
}

// An output that is one of the run's inputs is refused before anything is
// written: --loss-csv naming the --data file cut the corpus to a CSV header.
TEST(RankProcesses, AnOutputThatIsAnInputIsRefused) {
  const std::string corpus = temp_path("corpus.txt"), link = temp_path("corpus_link.txt");
  std::string text;
  for (int i = 0; i < 50; ++i) text += "a corpus that must survive the run, line after line. ";
  std::ofstream(corpus) << text;
  fs::remove(link);
  fs::create_symlink(corpus, link);
  const std::string t = "train -m 1f1b -p 2 -n 2 --model gpt --hidden 8 --heads 2 --seq-len 4 --steps 1 --threads "
                        "--data " + corpus + " ";
  struct Case {
    std::string args, fragment;
  };
  const std::vector<Case> cases = {
      {t + "--loss-svg /dev/null --loss-csv " + corpus, "--loss-csv '" + corpus + "' is the --data file"},
      {t + "--loss-csv /dev/null --loss-svg " + link, "--loss-svg '" + link + "' is the --data file"},
      {t + "--loss-csv /dev/null --loss-svg /dev/null --svg " + corpus, "--svg '" + corpus + "' is the --data file"},
      {t + "--loss-csv /dev/null --loss-svg /dev/null --trace " + corpus,
       "--trace '" + corpus + "' is the --data file"},
  };
  for (const Case& c : cases) {
    expect_one_error_line(run_cli(c.args), c.fragment, c.args);
    EXPECT_EQ(read_text(corpus), text) << "the corpus changed: " << c.args;
  }
  fs::remove(link);
  fs::remove(corpus);
}

// A FIFO never stalls a run past --timeout: as --data, as an output, or in
// a checkpoint (rank file, manifest) with --resume. Inputs and outputs that
// are not regular files are refused or skipped with one line.
TEST(RankProcesses, FifosDoNotHang) {
  const std::string dir = temp_path("fifo");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string fifo = dir + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  const std::string t = "train -m 1f1b -p 2 -n 2 --steps 1 --timeout 5 ";
  const std::string gpt = t + "--model gpt --hidden 8 --heads 2 --seq-len 4 --loss-csv /dev/null --loss-svg /dev/null ";
  const std::string mlp = t + "--model mlp --hidden 8 --seq-len 2 ";
  expect_one_error_line(run_cli(gpt + "--data " + fifo, "", 30), "corpus file '" + fifo + "' is not a regular file",
                        "--data FIFO");
  expect_one_error_line(run_cli(mlp + "--loss-svg /dev/null --loss-csv " + fifo, "", 30),
                        "--loss-csv '" + fifo + "': cannot be written: not a regular file", "--loss-csv FIFO");
  // A run with checkpoints at steps 1 and 2; then step 2's rank file, and
  // then its manifest, become FIFOs: --resume skips step 2 and goes on from 1.
  const std::string ck = dir + "/ck";
  const std::string quiet = "--loss-csv /dev/null --loss-svg /dev/null --checkpoint-every 1 --checkpoint-dir " + ck;
  ASSERT_EQ(run_cli("train -m 1f1b -p 2 -n 2 --steps 2 --model mlp --hidden 8 --seq-len 2 " + quiet).code, 0);
  for (const std::string name : {"rank-1.pt", "manifest.json"}) {
    const std::string path = ck + "/step-000002/" + name;
    const std::string saved = path + ".saved";
    fs::rename(path, saved);
    ASSERT_EQ(mkfifo(path.c_str(), 0644), 0);
    CliRun r = run_cli("train -m 1f1b -p 2 -n 2 --steps 2 --model mlp --hidden 8 --seq-len 2 --timeout 5 --resume " +
                           quiet,
                       "", 60);
    EXPECT_EQ(r.code, 0) << name << "\n" << r.out;
    EXPECT_TRUE(has(r.out, "skipping checkpoint " + ck + "/step-000002: corrupt (" + name + " is not a regular file)"))
        << name << "\n" << r.out;
    EXPECT_TRUE(has(r.out, "resuming from " + ck + "/step-000001")) << name << "\n" << r.out;
    // The resumed run wrote step 2 again: put the original back for the next case.
    fs::remove_all(ck + "/step-000002");
    fs::create_directories(ck + "/step-000002");
    ASSERT_EQ(run_cli("train -m 1f1b -p 2 -n 2 --steps 2 --model mlp --hidden 8 --seq-len 2 --resume " + quiet)
                  .code,
              0);
  }
  fs::remove_all(dir);
}

// A rank file of a checkpoint is read only if its size is the manifest's:
// one replaced by a link to /dev/zero grew the launcher to 24 GB. Under a
// memory limit, so that the test cannot take the machine down if it fails.
TEST(RankProcesses, CheckpointReadsAreBoundedByTheManifest) {
  const std::string dir = temp_path("zero_ck");
  fs::remove_all(dir);
  const std::string run = "train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --timeout 10 "
                          "--loss-csv /dev/null --loss-svg /dev/null --checkpoint-every 1 --checkpoint-dir " + dir;
  ASSERT_EQ(run_cli(run + " --steps 2").code, 0);
  const std::string file = dir + "/step-000002/rank-0.pt";
  fs::remove(file);
  fs::create_symlink("/dev/zero", file);
  const std::string limited = "ulimit -v 6000000; ";
  CliRun r = test_support::run_command(limited + "timeout -k 5 60 " + DUALPIPE_BINARY + " " + run +
                                       " --steps 3 --resume");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "skipping checkpoint " + dir + "/step-000002: corrupt (rank-0.pt is not a regular file)"))
      << r.out;
  EXPECT_TRUE(has(r.out, "resuming from " + dir + "/step-000001")) << r.out;
  // A regular file of another size than the manifest says: skipped unread.
  fs::remove(file);
  std::ofstream(file) << std::string(1 << 20, 'x');
  fs::remove_all(dir + "/step-000003");
  CliRun big = run_cli(run + " --steps 3 --resume");
  EXPECT_EQ(big.code, 0) << big.out;
  EXPECT_TRUE(has(big.out, "rank-0.pt has 1048576 bytes, the manifest says")) << big.out;
  fs::remove_all(dir);
}

// bench's warm-up step added to --steps 2147483647 overflowed (signal 11).
TEST(RankProcesses, StepCountsNearTheIntLimitAreRefused) {
  const std::string b = "bench -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 2147483647";
  expect_one_error_line(run_cli(b), "--steps must be at most 10000000 (got 2147483647)", "bench");
  expect_one_error_line(run_cli(b + " --threads"), "--steps must be at most 10000000 (got 2147483647)", "bench --threads");
  expect_one_error_line(run_cli("train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 2147483647 "
                                "--loss-csv /dev/null --loss-svg /dev/null"),
                        "--steps must be at most 10000000 (got 2147483647)", "train");
}

// A run whose loss or gradient norm stops being finite (here --lr 1e308:
// NaN from step 2) stops with one line and exit code 3, as processes and as
// threads; its loss CSV and its checkpoints hold finite steps only (the NaN
// checkpoints used to rotate the good ones out, and the run exited 0).
TEST(RankProcesses, ADivergedRunStopsWithoutSavingIt) {
  for (const std::string kind : {"", " --threads"}) {
    const std::string dir = temp_path("diverged"), csv = temp_path("diverged.csv");
    fs::remove_all(dir);
    CliRun r = run_cli("train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 6 --lr 1e308 --timeout 20 "
                       "--loss-svg /dev/null --checkpoint-every 1 --keep-checkpoints 10 --checkpoint-dir " + dir +
                           " --loss-csv " + csv + kind,
                       "", 120);
    EXPECT_EQ(r.code, 3) << kind << "\n" << r.out;
    int error_lines = 0;
    for (const std::string& line : lines_of(r.out)) error_lines += line.rfind("dualpipe: error: ", 0) == 0;
    EXPECT_EQ(error_lines, 1) << kind << "\n" << r.out;
    const auto at = r.out.find("dualpipe: error: the run diverged at step ");
    ASSERT_NE(at, std::string::npos) << kind << "\n" << r.out;
    const int step = std::stoi(r.out.substr(at + std::string("dualpipe: error: the run diverged at step ").size()));
    EXPECT_GE(step, 2) << r.out;
    // Checkpoints of the steps before it, none of it or after.
    int newest = 0;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().rfind("step-", 0) == 0)
        newest = std::max(newest, std::stoi(e.path().filename().string().substr(5)));
    EXPECT_EQ(newest, step - 1) << kind << "\n" << r.out;
    const std::string text = read_text(csv);
    const auto rows = lines_of(text);
    EXPECT_EQ(static_cast<int>(rows.size()), step) << text;  // the header and steps 1..step-1
    EXPECT_FALSE(has(text, "nan") || has(text, "inf")) << text;
    fs::remove_all(dir);
    fs::remove(csv);
  }
}

// A resumed run continues the loss CSV of the run it resumes (rows up to its
// checkpoint kept, later ones made again), and its SVG draws the whole run:
// --resume cut the CSV to the resumed steps and the SVG started there.
// Ctrl-C (SIGINT to the whole process group, as a terminal sends it): the
// ranks finish their step together, keep a checkpoint of it and the loss
// curve, say so in one line, and exit 130; --resume goes on from there.
TEST(RankProcesses, CtrlCKeepsTheStepsMadeAndResumeGoesOn) {
  const std::string dir = temp_path("ctrl_c"), csv = temp_path("ctrl_c.csv"), svg = temp_path("ctrl_c.svg"),
                    out = temp_path("ctrl_c.out"), err = temp_path("ctrl_c.err");
  fs::remove_all(dir);
  const std::string train = std::string(DUALPIPE_BINARY) +
                            " train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --checkpoint-every 1000000 "
                            "--checkpoint-dir " + dir + " --loss-csv " + csv + " --loss-svg " + svg;
  // set -m: the run gets a process group of its own, which kill -INT -PID reaches whole.
  const CliRun r = test_support::run_command(
      "bash -c 'set -m; " + train + " --steps 1000000 >" + out + " 2>" + err + " & pid=$!; " +
      "for i in $(seq 600); do grep -q \"step \" " + out + " && break; sleep 0.1; done; sleep 0.5; " +
      "kill -INT -$pid; wait $pid; echo exit=$?'");
  const std::string said = read_text(err);
  ASSERT_TRUE(has(r.out, "exit=130")) << r.out << said << read_text(out);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(said, m, std::regex(R"(dualpipe: interrupted: stopped after step (\d+) of 1000000; kept checkpoint (\S+) and the loss curve)")))
      << said;
  const int done = std::stoi(m[1]);
  EXPECT_EQ(lines_of(said).size(), 1u) << said;  // that line alone
  EXPECT_TRUE(fs::exists(std::string(m[2]) + "/manifest.json")) << said;
  EXPECT_EQ(lines_of(read_text(csv)).size(), static_cast<std::size_t>(done + 1)) << read_text(csv);  // header and every step
  EXPECT_TRUE(fs::exists(svg));
  const CliRun resumed = run_cli(train.substr(std::string(DUALPIPE_BINARY).size() + 1) +
                                 fmt::format(" --steps {} --resume", done + 2));
  EXPECT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_TRUE(has(resumed.out, fmt::format("resuming from {}/step-{:06}", dir, done))) << resumed.out;
}

TEST(RankProcesses, ResumeContinuesTheLossCurve) {
  const std::string dir = temp_path("resume_curve"), csv = temp_path("resume_curve.csv"),
                    svg = temp_path("resume_curve.svg");
  fs::remove_all(dir);
  const std::string run = "train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --threads --checkpoint-every 2 "
                          "--keep-checkpoints 5 --checkpoint-dir " + dir + " --loss-csv " + csv + " --loss-svg " + svg;
  ASSERT_EQ(run_cli(run + " --steps 5").code, 0);  // checkpoints after steps 2, 4 and 5; rows 1..5
  const auto first = lines_of(read_text(csv));
  ASSERT_EQ(first.size(), 6u);
  // As if the run had died before step 4's checkpoint, having written rows 3 and more.
  fs::remove_all(dir + "/step-000004");
  fs::remove_all(dir + "/step-000005");
  CliRun r = run_cli(run + " --steps 6 --resume");
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(has(r.out, "resuming from " + dir + "/step-000002")) << r.out;
  const auto rows = lines_of(read_text(csv));
  ASSERT_EQ(rows.size(), 7u) << read_text(csv);  // the header and steps 1..6
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(rows[i], first[i]);  // header, steps 1 and 2 kept as they were
  for (std::size_t i = 1; i < rows.size(); ++i) EXPECT_EQ(rows[i].rfind(std::to_string(i) + ",", 0), 0u) << read_text(csv);
  // The SVG's curve has a point for every step of the run.
  const std::string picture = read_text(svg);
  const auto at = picture.find("<polyline");
  ASSERT_NE(at, std::string::npos) << picture;
  const auto from = picture.find("points=\"", at) + 8;
  const std::string points = picture.substr(from, picture.find('"', from) - from);
  EXPECT_EQ(std::count(points.begin(), points.end(), ','), 6) << points;
  fs::remove_all(dir);
  fs::remove(csv);
  fs::remove(svg);
}

// Under ZeRO-1 the bucket size shards the optimizer state: a resume with
// another --bucket-mb is refused before any rank starts, naming both values
// (it failed after the ranks started, in lines that read like corruption).
TEST(RankProcesses, ResumeWithAnotherZeroBucketIsRefused) {
  const std::string dir = temp_path("zero_bucket");
  fs::remove_all(dir);
  const std::string run = "train -m 1f1b -p 2 -n 2 --dp 2 --zero 1 --model mlp --hidden 8 --seq-len 2 --threads "
                          "--loss-csv /dev/null --loss-svg /dev/null --checkpoint-dir " + dir;
  ASSERT_EQ(run_cli(run + " --steps 2").code, 0);
  expect_one_error_line(run_cli(run + " --steps 3 --resume --bucket-mb 0.001"),
                        "was made with bucket_mb 25.0; this run has bucket_mb 0.001", "another bucket");
  EXPECT_EQ(run_cli(run + " --steps 3 --resume").code, 0);
  fs::remove_all(dir);
}

// What a checkpoint to come could not replace is found at the start, in one
// line: a rank file that became a folder (skipped on --resume, then "cannot
// rename into place" when its step came again), a file named like a step.
TEST(RankProcesses, CheckpointFolderShapeIsCheckedAtStart) {
  const std::string dir = temp_path("shape");
  fs::remove_all(dir);
  const std::string run = "train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --threads --loss-csv /dev/null "
                          "--loss-svg /dev/null --checkpoint-every 1 --checkpoint-dir " + dir;
  ASSERT_EQ(run_cli(run + " --steps 2").code, 0);
  fs::remove(dir + "/step-000002/rank-1.pt");
  fs::create_directories(dir + "/step-000002/rank-1.pt");
  CliRun r = run_cli(run + " --steps 4 --resume");
  expect_one_error_line(r, "checkpoint folder " + dir + ": step-000002/rank-1.pt is a folder where a checkpoint file "
                        "goes: remove it", "a rank file that is a folder");
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir + "/step-000002") << "x";
  expect_one_error_line(run_cli(run + " --steps 3"),
                        "checkpoint folder " + dir + ": step-000002 is not a folder, and a checkpoint may be written "
                        "there: remove it", "a file named like a step");
  fs::remove_all(dir);
}

// the loss CSV grows step by step, so a run that fails later (here a
// rank killed in step 3; as well a final write that fails) keeps its rows.
TEST(RankProcesses, LossCsvSurvivesAFailureLater) {
  const std::string csv = temp_path("loss.csv");
  fs::remove(csv);
  CliRun r = run_cli("train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 5 --timeout 10 "
                     "--loss-svg /dev/null --loss-csv " + csv,
                     "DUALPIPE_TEST_FAULT=kill:1:3", 120);
  EXPECT_NE(r.code, 0) << r.out;
  std::ifstream in(csv);
  ASSERT_TRUE(in.good()) << "no loss CSV after the failure\n" << r.out;
  std::stringstream text;
  text << in.rdbuf();
  const auto rows = lines_of(text.str());
  ASSERT_EQ(rows.size(), 3u) << text.str();  // the header, steps 1 and 2
  EXPECT_EQ(rows[0], "step,loss,grad_norm,step_seconds,pipeline_seconds");
  EXPECT_EQ(rows[1].rfind("1,", 0), 0u) << text.str();
  EXPECT_EQ(rows[2].rfind("2,", 0), 0u) << text.str();
  fs::remove(csv);
}

// a run larger than the memory available is refused before it
// starts, with the estimate and the memory. The machine's memory is stood in
// for (DUALPIPE_TEST_MEMORY_AVAILABLE) so that the test never allocates much.
// The parameters of the mlp are 2 matrices h x ffn per stage: 2 stages x
// 2 x 64 x 256 float64 = 512 KiB; gradients as much, AdamW twice that.
TEST(RankProcesses, RunTooLargeForTheMachineIsRefused) {
  const std::string args = "train -m 1f1b -p 2 -n 2 --model mlp --hidden 64 --ffn 256 --seq-len 2 --dtype float64 "
                           "--steps 1 --loss-csv /dev/null --loss-svg /dev/null";
  for (const std::string kind : {"", " --threads"}) {
    CliRun r = run_cli(args + kind, "DUALPIPE_TEST_MEMORY_AVAILABLE=1000000");
    expect_one_error_line(r, "parameters 512.0 KiB, gradients 512.0 KiB, AdamW state 1.0 MiB", kind);
    EXPECT_TRUE(has(r.out, "more than the 976.6 KiB (1000000 bytes) this machine has available")) << r.out;
  }
  // The same run fits where there is room (the estimate is 2 MiB and the activations).
  CliRun ok = run_cli(args + " --threads", "DUALPIPE_TEST_MEMORY_AVAILABLE=100000000");
  EXPECT_EQ(ok.code, 0) << ok.out;
  // verify holds no optimizer state: parameters and gradients only.
  CliRun v = run_cli("verify -m 1f1b -p 2 -n 2 --model mlp --hidden 64 --ffn 256 --seq-len 2 --threads",
                     "DUALPIPE_TEST_MEMORY_AVAILABLE=1000000");
  expect_one_error_line(v, "parameters 512.0 KiB, gradients 512.0 KiB, AdamW state 0 bytes", "verify");
}

nlohmann::json parse_json(const CliRun& r) {
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON: " << e.what() << "\n" << r.out;
    return nullptr;
  }
}

// Items 15 and 21: ranks started torchrun-style, without OMP_NUM_THREADS,
// compute on one thread each (LibTorch's pool and OpenBLAS's), as ranks our
// launcher spawns do; verify --format json reports it.
TEST(RankProcesses, TorchrunStyleRanksUseOneComputeThread) {
  const std::string port = std::to_string(free_port());
  const std::string env = "env -u OMP_NUM_THREADS -u OPENBLAS_NUM_THREADS WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 "
                          "MASTER_PORT=" + port + " RANK=";
  auto rank1 = std::async(std::launch::async, [&] { return run_cli(kVerify + "--format json", env + "1", 120); });
  CliRun r0 = run_cli(kVerify + "--format json", env + "0", 120);
  CliRun r1 = rank1.get();
  ASSERT_EQ(r0.code, 0) << r0.out;
  ASSERT_EQ(r1.code, 0) << r1.out;
  EXPECT_EQ(r1.out, "");  // rank 0 reports
  nlohmann::json j = parse_json(r0);
  ASSERT_TRUE(j.is_object()) << r0.out;
  EXPECT_EQ(j["threads"]["intra_op"], 1) << r0.out;
  if (!j["threads"]["blas"].is_null()) {
    EXPECT_EQ(j["threads"]["blas"], 1) << r0.out;
  }
}

// --intra-op-threads sets it for every kind of rank.
TEST(RankProcesses, IntraOpThreadsOptionReachesEveryKindOfRank) {
  for (const std::string kind : {" --threads", ""}) {
    CliRun r = run_cli(kVerify + "--format json --intra-op-threads 2" + kind);
    ASSERT_EQ(r.code, 0) << kind << "\n" << r.out;
    nlohmann::json j = parse_json(r);
    ASSERT_TRUE(j.is_object()) << r.out;
    EXPECT_EQ(j["threads"]["intra_op"], 2) << kind << "\n" << r.out;
    if (!j["threads"]["blas"].is_null()) {
      EXPECT_EQ(j["threads"]["blas"], 2) << kind << "\n" << r.out;
    }
    EXPECT_EQ(j["intra_op_threads"], 2) << r.out;
  }
  expect_one_error_line(run_cli(kVerify + "--threads --intra-op-threads 0"), "--intra-op-threads must be in 1..1024",
                        "zero threads");
}

// verify --format json is one object in the shape every command writes:
// the command, the inputs beside the results, numbers as numbers (the seed
// too).
TEST(RankProcesses, VerifyJsonSummary) {
  CliRun r = run_cli("verify -m dualpipe -p 2 -n 4 --hidden 8 --seq-len 2 --threads --format json");
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j = parse_json(r);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j["command"], "verify");
  EXPECT_FALSE(j.contains("inputs")) << r.out;
  EXPECT_EQ(j["method"], "dualpipe");
  EXPECT_EQ(j["ranks"], 2);
  EXPECT_EQ(j["micro_batches"], 4);
  EXPECT_EQ(j["model"]["hidden"], 8);
  EXPECT_EQ(j["model"]["dtype"], "float64");
  EXPECT_EQ(j["seed"], 1234);
  EXPECT_EQ(j["dp"], 1);
  EXPECT_TRUE(j["loss_error"].is_number()) << r.out;
  EXPECT_TRUE(j["grad_error"].is_number()) << r.out;
  EXPECT_EQ(j["tolerance"], 1e-12);
  EXPECT_EQ(j["pass"], true);
  EXPECT_TRUE(j["per_param"].is_object() && !j["per_param"].empty()) << r.out;
}

// train --format json: stdout is the one object (no progress lines),
// the inputs as given (lr 0.003, not 0.0030000000000000001).
TEST(RankProcesses, TrainJsonSummary) {
  const std::string csv = temp_path("json_loss.csv");
  CliRun r = run_cli("train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 3 --threads --format json "
                     "--loss-svg /dev/null --loss-csv " + csv);
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j = parse_json(r);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j["command"], "train");
  EXPECT_EQ(j["steps"], 3);
  EXPECT_EQ(j["lr"], 0.003);
  EXPECT_TRUE(has(r.out, "\"lr\": 0.003,")) << r.out;
  EXPECT_EQ(j["micro_batches"], 2);
  EXPECT_EQ(j["seed"], 1234);
  EXPECT_EQ(j["steps_run"], 3);
  EXPECT_TRUE(j["loss_first"].is_number() && j["loss_last"].is_number()) << r.out;
  EXPECT_GT(j["median_step_s"].get<double>(), 0.0);
  EXPECT_EQ(j["files"]["loss_csv"], csv);
  // The CSV holds the same steps.
  const std::string text = read_text(csv);
  EXPECT_EQ(lines_of(text).size(), 4u) << text;
  fs::remove(csv);
}

// -o FILE means what it means in every command: the report goes to FILE,
// not stdout (train, verify and bench printed it to stdout alone). An
// output that cannot be written is refused before any rank starts.
TEST(RankProcesses, ReportGoesToTheOutputFile) {
  const std::string out = temp_path("report.json"), csv = temp_path("o_loss.csv");
  const std::string small = " -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --threads ";
  CliRun v = run_cli("verify" + small + "--format json -o " + out);
  ASSERT_EQ(v.code, 0) << v.out;
  EXPECT_FALSE(has(v.out, "\"command\"")) << v.out;
  std::ifstream vin(out);
  EXPECT_EQ(nlohmann::json::parse(vin)["command"], "verify");
  CliRun t = run_cli("train" + small + "--steps 2 --loss-svg /dev/null --loss-csv " + csv + " -o " + out);
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_TRUE(has(t.out, "step ")) << t.out;  // progress stays on stdout
  EXPECT_FALSE(has(t.out, "summary: loss")) << t.out;
  std::ifstream tin(out);
  std::stringstream text;
  text << tin.rdbuf();
  EXPECT_TRUE(has(text.str(), "summary: loss")) << text.str();
  CliRun b = run_cli("bench" + small + "--steps 1 --format json -o " + out);
  ASSERT_EQ(b.code, 0) << b.out;
  std::ifstream bin(out);
  const nlohmann::json bj = nlohmann::json::parse(bin);
  EXPECT_EQ(bj["command"], "bench");
  EXPECT_EQ(bj["model"]["name"], "mlp");
  expect_one_error_line(run_cli("train" + small + "--steps 2 --loss-svg /dev/null --loss-csv " + csv + " -o " + csv),
                        "--output and --loss-csv both name '" + csv + "'", "the report over the loss curve");
  for (const std::string command : {"verify", "bench", "train"})
    expect_one_error_line(run_cli(command + small + "-o /nonexistent/dir/report.txt"),
                          "--output '/nonexistent/dir/report.txt': folder '/nonexistent/dir' does not exist",
                          command.c_str());
  fs::remove(out);
  fs::remove(csv);
}

}  // namespace
}  // namespace dualpipe

namespace dualpipe {
namespace {

// The table of a verify run: the lines after the verdict.
std::vector<std::string> table_lines(const std::string& out) {
  std::vector<std::string> lines;
  std::istringstream in(out.substr(out.find('\n', out.find("largest relative difference")) + 1));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// verify on moe compares dozens of parameters: the text gives one aligned
// line per parameter group (stage and numbers left out) with the largest
// difference in it, and every parameter with --all-params.
TEST(RankProcesses, VerifySummarisesParameterGroups) {
  const std::string args = "verify -m 1f1b -p 2 -n 4 --model moe --hidden 8 --seq-len 4 --threads";
  const CliRun json = run_cli(args + " --format json"), summary = run_cli(args), all = run_cli(args + " --all-params");
  ASSERT_EQ(json.code, 0) << json.out;
  ASSERT_EQ(summary.code, 0) << summary.out;
  ASSERT_EQ(all.code, 0) << all.out;
  const std::size_t params = parse_json(json)["per_param"].size();
  const std::vector<std::string> groups = table_lines(summary.out), each = table_lines(all.out);
  ASSERT_GE(groups.size(), 2u) << summary.out;
  EXPECT_LT(groups.size(), params / 2) << summary.out;
  EXPECT_TRUE(has(groups[0], "parameter group") && has(groups[0], "largest")) << summary.out;
  EXPECT_TRUE(has(summary.out, " blockN.moe.expertN.fc.weight ")) << summary.out;
  EXPECT_FALSE(has(summary.out, "stage 0")) << summary.out;
  EXPECT_EQ(each.size(), params + 1) << all.out;  // a header, then every parameter
  for (const auto* lines : {&groups, &each})
    for (const std::string& line : *lines) EXPECT_EQ(line.size(), lines->front().size()) << line;  // aligned
}

// train's measured timeline takes --svg-width as simulate's does.
TEST(RankProcesses, TrainSvgHasAWidth) {
  const std::string svg = temp_path("width.svg"), csv = temp_path("width.csv");
  const std::string args = "train -m 1f1b -p 2 -n 2 --model mlp --hidden 8 --seq-len 2 --steps 2 --threads "
                           "--loss-svg /dev/null --loss-csv " + csv;
  const CliRun r = run_cli(args + " --svg " + svg + " --svg-width 900");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in(svg);
  std::string head(200, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  EXPECT_TRUE(has(head, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\"")) << head;
  expect_one_error_line(run_cli(args + " --svg " + svg + " --svg-width 5"),
                        "--svg-width must be 0 (automatic) or 400..100000 px (got 5)", "train");
  expect_one_error_line(run_cli(args + " --svg-width 900"), "--svg-width shapes the --svg picture: add --svg FILE",
                        "train");
  fs::remove(svg);
  fs::remove(csv);
}

}  // namespace
}  // namespace dualpipe
