// The dualpipe program end to end: outputs, files and exit codes.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include "test_util.h"

namespace dp {
namespace {

struct CliRun {
  int code;
  std::string out;  // stdout and stderr together
};

CliRun run(const std::string& args) {
  std::string cmd = std::string(DUALPIPE_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  CliRun r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "dualpipe_cli_" + name; }

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

bool one_line(const std::string& s) {
  return !s.empty() && s.find('\n') == s.size() - 1;
}

TEST(Cli, ScheduleCsvMatchesTheReference) {
  CliRun r = run("schedule --method dualpipe --ranks 4 --micro-batches 8 --format csv");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream ref(test::shared_dir() + "/reference/dualpipe_P4_N8.csv");
  std::string want((std::istreambuf_iterator<char>(ref)), {});
  EXPECT_EQ(r.out, want);
}

TEST(Cli, ScheduleFromFileRoundTripsWithComm) {
  std::string path = temp_path("lowered.csv");
  ASSERT_EQ(run("schedule -m 1f1b -p 3 -n 4 --with-comm -f csv -o " + path).code, 0);
  CliRun r = run("schedule --from " + path + " -f json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ranks"], 3);
  EXPECT_EQ(j["actions"][1][0], "1RECV_F0");
  // The default table form checks and draws it.
  CliRun t = run("schedule --from " + path);
  EXPECT_EQ(t.code, 0) << t.out;
  EXPECT_NE(t.out.find("valid"), std::string::npos);
}

TEST(Cli, SimulateJsonHasTheDocumentedFields) {
  CliRun r = run("simulate -m dualpipe -p 8 -n 20 --cost F=1,B=2,W=1,FB=3 --format json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_DOUBLE_EQ(j["makespan"].get<double>(), 66);
  EXPECT_DOUBLE_EQ(j["bubble"].get<double>(), 6);
  EXPECT_DOUBLE_EQ(j["bubble_ratio"].get<double>(), 6.0 / 66);
  ASSERT_EQ(j["per_rank"].size(), 8u);
  for (const auto& rank : j["per_rank"]) {
    EXPECT_DOUBLE_EQ(rank["busy"].get<double>(), 60);
    EXPECT_DOUBLE_EQ(rank["idle"].get<double>(), 6);
    EXPECT_EQ(rank["peak_activations"], 9);
  }
}

TEST(Cli, SimulateWritesPictures) {
  std::string svg = temp_path("t.svg"), trace = temp_path("t.json");
  CliRun r = run("simulate -m dualpipe -p 4 -n 8 --svg " + svg + " --trace " + trace);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream s(svg);
  std::string text((std::istreambuf_iterator<char>(s)), {});
  EXPECT_NE(text.find("<svg"), std::string::npos);
  std::ifstream t(trace);
  EXPECT_TRUE(nlohmann::json::accept(t));
}

TEST(Cli, LatencyChangesTheStepTime) {
  auto j0 = nlohmann::json::parse(run("simulate -m 1f1b -p 2 -n 1 -f json").out);
  auto j1 = nlohmann::json::parse(run("simulate -m 1f1b -p 2 -n 1 -f json --comm-latency 0.5").out);
  EXPECT_DOUBLE_EQ(j0["makespan"].get<double>(), 6);
  EXPECT_DOUBLE_EQ(j1["makespan"].get<double>(), 7);
}

TEST(Cli, CompareListsEveryMethod) {
  CliRun r = run("compare --ranks 8 --micro-batches 20 --cost F=1,B=2,W=1,FB=3 --format json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.size(), 8u);
  CliRun t = run("compare -p 8 -n 20");
  EXPECT_EQ(t.code, 0);
  for (const char* m : {"dualpipe", "dualpipev", "1f1b", "gpipe", "interleaved-1f1b", "zb1p", "zbv", "chimera"})
    EXPECT_NE(t.out.find(m), std::string::npos) << m;
}

// Bad input: one line naming the problem, exit code 2, never a crash.
TEST(Cli, BadInputGivesOneLineAndExitCode2) {
  std::string garbage = temp_path("garbage.csv"), missing = temp_path("missing.csv"), empty = temp_path("e.csv");
  std::string deadlock = temp_path("deadlock.csv");
  write_file(garbage, "0F0,0B0\n1F0,hello\n");
  write_file(missing, "0F0,0B0\n1F0\n");
  write_file(empty, "");
  write_file(deadlock, "0F0,0B0,0F1,0B1\n1F1,1B1,1F0,1B0\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"simulate -m dualpipe -p 3 -n 8", "even number of ranks"},
      {"simulate -m dualpipe -p 4 -n 7", "even number of micro-batches"},
      {"simulate -m dualpipe -p 4 -n 0", "--micro-batches must be at least 1"},
      {"simulate -m 1f1b -p 0 -n 4", "--ranks must be at least 1"},
      {"simulate -m nosuch -p 4 -n 8", "unknown method 'nosuch'"},
      {"simulate -p 4 -n 8", "--method"},
      {"simulate -m 1f1b -p 4 -n 8 --cost F=-1", "must not be negative"},
      {"simulate -m 1f1b -p 4 -n 8 --cost F=", "missing value"},
      {"simulate -m 1f1b -p 4 -n 8 --cost Q=1", "unknown cost 'Q'"},
      {"simulate -m 1f1b -p 4 -n 8 --cost F=1:2", "one per stage"},
      {"simulate -m 1f1b -p 4 -n 8 --comm-latency -1", "latency must not be negative"},
      {"simulate -m 1f1b -p 4 -n 8 --ranks", "--ranks"},
      {"simulate -m 1f1b -p four -n 8", "four"},
      {"schedule --from " + garbage, "cell 2: malformed action 'hello'"},
      {"schedule --from " + missing, "backward of stage 1, micro-batch 0 is missing"},
      {"schedule --from " + empty, "empty schedule file"},
      {"schedule --from " + deadlock, "deadlock"},
      {"schedule --from /nonexistent.csv", "cannot open"},
      {"schedule --from " + garbage + " -m 1f1b", "drop --method"},
      {"schedule -m 1f1b -p 2 -n 2 -f xml", "xml"},
      {"compare -p 0 -n 4", "at least 1 stage"},
      {"frobnicate", "frobnicate"},
  };
  for (const auto& [args, fragment] : cases) {
    CliRun r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(fragment), std::string::npos) << args << "\n" << r.out;
    if (args.find("deadlock") == std::string::npos && args.find(missing) == std::string::npos) {
      EXPECT_TRUE(one_line(r.out)) << args << "\n" << r.out;
    }
  }
}

TEST(Cli, HelpAndVersionExitZero) {
  CliRun h = run("--help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("simulate"), std::string::npos);
  EXPECT_EQ(run("simulate --help").code, 0);
  EXPECT_EQ(run("--version").code, 0);
}

}  // namespace
}  // namespace dp
