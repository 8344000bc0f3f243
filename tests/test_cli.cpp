// The dualpipe program end to end: outputs, files and exit codes.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "dualpipe/schedule/generators.h"

#include <array>
#include <atomic>
#include <cstdlib>
#include <future>
#include <cstdio>
#include <fstream>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "test_util.h"

namespace dualpipe {
namespace {

using test_support::CliRun;
CliRun run(const std::string& args) { return test_support::run_cli(args); }

std::string temp_path(const std::string& name) { return test_support::temp_file("dualpipe_cli_", name); }

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

using test_support::one_line;

TEST(Cli, ScheduleCsvMatchesTheReference) {
  CliRun r = run("schedule --method dualpipe --ranks 4 --micro-batches 8 --format csv");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream ref(test::data_dir() + "/dualpipe_P4_N8.csv");
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
  EXPECT_NEAR(j["bubble_ratio"].get<double>(), 6.0 / 66, 1e-12);  // JSON numbers carry 12 significant digits
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
  EXPECT_EQ(j["rows"].size(), methods().size());  // an object: inputs, then "rows"
  CliRun t = run("compare -p 8 -n 20");
  EXPECT_EQ(t.code, 0);
  for (const char* m : {"dualpipe", "dualpipev", "1f1b", "gpipe", "interleaved-1f1b", "zb1p", "zbv", "chimera"})
    EXPECT_NE(t.out.find(m), std::string::npos) << m;
}

// Runs every command line at once on a few threads: each start of the
// program costs a fraction of a second (it links LibTorch), and the bad-input
// tests below start dozens.
std::vector<CliRun> run_all(const std::vector<std::string>& args) {
  std::vector<CliRun> out(args.size());
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i; (i = next++) < args.size();) out[i] = run(args[i]);
  };
  std::vector<std::future<void>> pool;
  for (int k = 0; k < 6; ++k) pool.push_back(std::async(std::launch::async, worker));
  for (auto& f : pool) f.get();
  return out;
}

struct BadCase {
  std::string args;
  std::string fragment;   // the message must name the problem
  bool one_line = true;   // schedule --from lists every error, one line each
};

void expect_exit_2(const std::vector<BadCase>& cases) {
  std::vector<std::string> args;
  for (const BadCase& c : cases) args.push_back(c.args);
  const std::vector<CliRun> runs = run_all(args);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const BadCase& c = cases[i];
    const CliRun& r = runs[i];
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.fragment), std::string::npos) << c.args << "\n" << r.out;
    if (c.one_line) {
      EXPECT_TRUE(one_line(r.out)) << c.args << "\n" << r.out;
    }
    // Never an uncaught exception or a sanitizer report.
    EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_EQ(r.out.find("Sanitizer"), std::string::npos) << c.args << "\n" << r.out;
  }
}

// Bad input: one line naming the problem, exit code 2, never a crash.
TEST(Cli, BadInputGivesOneLineAndExitCode2) {
  std::string garbage = temp_path("garbage.csv"), missing = temp_path("missing.csv"), empty = temp_path("e.csv");
  std::string deadlock = temp_path("deadlock.csv"), lowered = temp_path("lowered.csv");
  write_file(garbage, "0F0,0B0\n1F0,hello\n");
  write_file(lowered, "0F0,0SEND_F0,0RECV_B0,0B0\n1RECV_F0,1F0,1B0,1SEND_B0\n");
  write_file(missing, "0F0,0B0\n1F0\n");
  write_file(empty, "");
  write_file(deadlock, "0F0,0B0,0F1,0B1\n1F1,1B1,1F0,1B0\n");
  expect_exit_2({
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
      // Finite costs whose sum is not: the report used to say "step time inf".
      {"simulate -m dualpipe -p 4 -n 8 --cost F=1e308,B=1e308", "step time overflows"},
      {"simulate -m 1f1b -p 4 -n 8 --comm-latency 1e308 --cost F=1e308", "step time overflows"},
      {"simulate -m 1f1b -p 4 -n 8 --ranks", "--ranks"},
      {"simulate -m 1f1b -p four -n 8", "four"},
      {"schedule --from " + garbage, "cell 2: malformed action 'hello'"},
      {"schedule --from " + missing, "backward of stage 1, micro-batch 0 is missing", false},
      {"schedule --from " + empty, "empty schedule file"},
      {"schedule --from " + deadlock, "deadlock", false},
      {"schedule --from /nonexistent.csv", "cannot open schedule file '/nonexistent.csv': No such file"},
      {"schedule --from " + garbage + " -m 1f1b", "drop --method"},
      {"schedule -m 1f1b -p 2 -n 2 -f xml", "xml"},
      {"schedule -m 1f1b -p 2 -n 2 --pair-forwards maybe", "--pair-forwards: maybe not in {on,off}"},
      {"simulate --from " + lowered + " --pair-forwards on", "pair the forwards of a compute-only schedule"},
      {"compare -p 0 -n 4", "at least 1 stage"},
      {"frobnicate", "frobnicate"},
  });
}

// Arguments the parser cannot place are named in our words, with the
// closest option where one is near: CLI11 said "The following arguments
// were not expected: 100 --svg-widht", in reverse order.
TEST(Cli, UnknownAndRepeatedOptionsAreNamed) {
  expect_exit_2({
      {"simulate -m 1f1b -p 2 -n 2 --svg-widht 100", "dualpipe simulate has no option --svg-widht (did you mean --svg-width?)"},
      {"simulate -m 1f1b -p 2 -n 2 --svg-widht=100", "dualpipe simulate has no option --svg-widht (did you mean --svg-width?)"},
      {"version --frobnicate", "dualpipe version has no option --frobnicate (see dualpipe version --help)"},
      {"schedule -m 1f1b -p 2 -n 2 extra", "dualpipe schedule takes no argument 'extra' (options only)"},
      {"simulate -m 1f1b -p 2 -p 3 -n 2", "is given more than once"},
      {"simulate -m 1f1b -p two -n 2", "--ranks: 'two' is not a whole number"},
      {"simulate -m 1f1b -p 2.5 -n 2", "--ranks: '2.5' is not a whole number"},
      {"simulate -m 1f1b -p 2 -n 2 --comm-latency x", "--comm-latency: 'x' is not a number"},
  });
}

// Everything a user can type wrong for the schedule tools, including the
// cases that used to hang for minutes (absurd sizes) or pass nonsense on
// (NaN and infinite numbers).
TEST(Cli, HostileArgumentsAndFilesGiveOneLineAndExitCode2) {
  const std::string dir = temp_path("dir");
  std::string mkdir = "mkdir -p " + dir;
  ASSERT_EQ(std::system(mkdir.c_str()), 0);
  const std::string binary = temp_path("binary.csv"), dup = temp_path("dup.csv"), huge = temp_path("huge.csv");
  const std::string overflow = temp_path("overflow.csv"), bigdecl = temp_path("bigdecl.csv");
  // Terminal escapes, a NUL, a carriage return inside a cell, a bell.
  write_file(binary, std::string("0F0,\x1b[31mred\x00\rx\x07", 16) + "\n");
  write_file(dup, "0F0,0B0\n0F0,0B0\n");
  write_file(huge, "0F99999999\n");
  write_file(overflow, "0F2147483648\n");
  // One forward names micro-batch 9999999: 10^7 (stage, micro-batch) pairs
  // from a 21-byte file must be refused without allocating tables for them.
  write_file(bigdecl, "0F9999999,0B9999999\n");
  const std::string sim = "simulate -m 1f1b -p 2 -n 2 ";
  expect_exit_2({
      // Files.
      {"schedule --from " + dir, "it is a directory"},
      {"schedule --from " + binary, "malformed action '\\x1b[31mred\\x00\\x0dx\\x07'"},
      {"simulate --from " + dup, "second forward of stage 0, micro-batch 0"},
      {"simulate --from " + dup, "(and more; 'dualpipe schedule --from"},
      {"schedule --from " + dup, "second backward of stage 0", false},
      {"schedule --from " + huge, "exceeds the limit of 10000000"},
      {"schedule --from " + overflow, "malformed action '0F2147483648'"},
      {"simulate --from " + bigdecl, "need 10000000 forwards but the schedule holds 1"},
      // Sizes: refused at once, with the limit in the message.
      {"simulate -m 1f1b -p 4 -n 99999999", "at most 16777216 are supported"},
      {"simulate -m gpipe -p 99999999 -n 4", "at most 16777216 are supported"},
      {"simulate -m dualpipe -p 4096 -n 2", "at most 16777216 are supported"},
      {"schedule -m interleaved-1f1b -p 4 -n 8 --chunks 100000000", "100000000 chunks is too large"},
      {"compare -p 99999999 -n 4", "at most 16777216 are supported"},
      {"compare -p 4 -n 99999999", "at most 16777216 are supported"},
      {"simulate -m 1f1b -p 2147483648 -n 4", "--ranks"},
      {"simulate -m 1f1b -p 4.5 -n 4", "--ranks"},
      {"simulate -m 1f1b -p 4 -n -5", "--micro-batches must be at least 1 (got -5)"},
      {"simulate -m interleaved-1f1b -p 4 -n 8 --chunks 0", "--chunks must be at least 1"},
      {"compare -p 4 -n 8 --chunks -1", "--chunks must be at least 1"},
      // Numbers that are not finite.
      {sim + "--comm-latency nan", "'nan' is not a finite number"},
      {sim + "--comm-bandwidth inf", "'inf' is not a finite number"},
      {sim + "--act-bytes 1e999", "'1e999' is not a finite number"},
      {sim + "--cost F=nan", "'nan' is not a number"},
      {sim + "--cost B=1e400", "'1e400' is not a number"},
      {"compare -p 4 -n 8 --comm-latency -inf", "not a finite number"},
      // Options and outputs.
      {sim + "--bogus", "--bogus"},
      {sim + "extra", "extra"},
      {sim + "-o /nonexistent/dir/out.txt", "cannot write '/nonexistent/dir/out.txt'"},
      {sim + "--svg /nonexistent/dir/t.svg", "cannot write"},
      {sim + "--trace /nonexistent/dir/t.json", "cannot write"},
      {"schedule -m 1f1b -p 2 -n 2 -f csv -o " + dir, "cannot write"},
      {"compare -p 4 -n 8 -o /nonexistent/dir/c.txt", "cannot write"},
  });
}

// PyTorch dumps that dualpipe cannot run: its lowered form (waits on sends
// and gradient reductions, which dualpipe's runtime does itself) and a stage
// count that does not fit (PyTorch 1F1B's drawn order names micro-batch N on
// its last rank and never its micro-batch 0).
TEST(Cli, PyTorchDumpsWithActionsWeDoNotExecuteGiveOneLine) {
  const std::string waits = temp_path("pt_comms.csv"), reduce = temp_path("pt_reduce.csv");
  const std::string shifted = temp_path("pt_1f1b.csv");
  write_file(waits, "0F0,0SEND_F0,0RECV_B0,0B0,0WAIT_SEND_F0\n1RECV_F0,1F0,1B0,1SEND_B0,1WAIT_SEND_B0\n");
  write_file(reduce, "0F0,0B0,0REDUCE_GRAD,0WAIT_REDUCE_GRAD\n");
  write_file(shifted, "0F0,0F1,0B0,0B1\n1F1,1B0,1F2,1B1\n");
  expect_exit_2({
      {"schedule --from " + waits, "cell 5: '0WAIT_SEND_F0' is PyTorch's WAIT_SEND_F, an action dualpipe does not execute"},
      {"simulate --from " + waits, "format=\"compute_only\""},
      {"schedule --from " + reduce, "'0WAIT_REDUCE_GRAD' is PyTorch's WAIT_REDUCE_GRAD"},
      {"schedule --from " + shifted, "need 6 forwards but the schedule holds 4"},
  });
}

TEST(Cli, CompareShowsAnOversizedInterleavedRowAsNotApplicable) {
  // One method's extra option must not sink the whole table.
  CliRun r = run("compare -p 4 -n 8 --chunks 99999999");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("interleaved-1f1b"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("too large"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dualpipe "), std::string::npos) << r.out;
}

TEST(Cli, UnreadableFileIsAnError) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads every file";
  const std::string path = temp_path("unreadable.csv");
  write_file(path, "0F0,0B0\n");
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  CliRun r = run("schedule --from " + path);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("Permission denied"), std::string::npos) << r.out;
  EXPECT_TRUE(one_line(r.out)) << r.out;
}

TEST(Cli, HelpAndVersionExitZero) {
  CliRun h = run("--help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("simulate"), std::string::npos);
  EXPECT_EQ(run("simulate --help").code, 0);
  EXPECT_EQ(run("--version").code, 0);
}

// Method names in any case, as papers and PyTorch's classes write them.
TEST(Cli, MethodNamesMatchInAnyCase) {
  const CliRun r = run("schedule -m DualPipe -p 4 -n 8 --format csv");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, run("schedule -m dualpipe -p 4 -n 8 --format csv").out);
  EXPECT_EQ(run("simulate -m ZB1P -p 4 -n 8").code, 0);
}

// `dualpipe` alone is a newcomer's first try: it prints the help (every
// command) and succeeds, rather than an error.
TEST(Cli, BareProgramPrintsTheHelp) {
  const CliRun r = run("");
  EXPECT_EQ(r.code, 0) << r.out;
  for (const char* command : {"schedule", "simulate", "compare", "plan", "search", "version"})
    EXPECT_NE(r.out.find(command), std::string::npos) << command << "\n" << r.out;
  EXPECT_EQ(r.out.find("error"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dualpipe


namespace dualpipe {
namespace {

// compare says how simulate gives each row, and it does: ZBV on 16
// devices is not 103.5 in one and 207 in the other. It names the fastest
// method, and warns on stderr (never in the JSON) when FB is left at F+B.
TEST(Cli, CompareRowsAreReproducedBySimulate) {
  const std::string args = "compare -p 16 -n 32 --cost F=1,B=2,W=1";
  const CliRun r = test_support::run_cli_stdout(args + " -f json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), methods().size());
  double best = 1e300;
  std::string best_method;
  for (const auto& row : j["rows"]) {
    ASSERT_TRUE(row.contains("simulate")) << row;
    if (row["makespan"].get<double>() < best) {
      best = row["makespan"].get<double>();
      best_method = row["method"];
    }
    const std::string cmd = row["simulate"];
    ASSERT_EQ(cmd.rfind("dualpipe simulate -m " + row["method"].get<std::string>() + " ", 0), 0u) << cmd;
    const CliRun s = test_support::run_cli_stdout(cmd.substr(9) + " -f json");
    ASSERT_EQ(s.code, 0) << cmd << "\n" << s.out;
    EXPECT_DOUBLE_EQ(nlohmann::json::parse(s.out)["makespan"].get<double>(), row["makespan"].get<double>()) << cmd;
  }
  EXPECT_EQ(j["fastest"], nlohmann::json::array({best_method}));
  const CliRun t = run(args);
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_NE(t.out.find(fmt::format("fastest: {} (step {:g})", best_method, best)), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("each row is dualpipe simulate -m dualpipe|1f1b|gpipe|zb1p|chimera -p 16 -n 32 --cost "
                       "F=1,B=2,W=1; -m dualpipev|zbv -p 16 -n 32 --cost F=0.5,B=1,W=0.5"),
            std::string::npos)
      << t.out;
  EXPECT_NE(t.out.find("warning: FB is not given"), std::string::npos) << t.out;
  EXPECT_EQ(run(args + ",FB=2.5").out.find("warning"), std::string::npos);
}

}  // namespace
}  // namespace dualpipe
