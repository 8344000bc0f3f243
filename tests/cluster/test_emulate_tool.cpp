// dualpipe_emulate, the command-line way to run ranks over an emulated
// cluster: one-line errors with exit code 2, the torchrun variables in each
// rank, a failing rank's exit code, and nothing left afterwards.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <fstream>
#include <regex>
#include <sstream>

#include "cluster_test_util.h"

namespace dualpipe {
namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  std::remove(path.c_str());
  return s.str();
}

// Runs the tool through the shell, after `prefix` (e.g. a command that drops root).
Result run_tool(const std::string& args, const std::string& prefix = "") {
  const std::string base = "/tmp/dp_emulate_test_" + std::to_string(getpid());
  const int status =
      std::system((prefix + EMULATE_BINARY + " " + args + " >" + base + ".out 2>" + base + ".err").c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(base + ".out");
  r.err = slurp(base + ".err");
  return r;
}

TEST(EmulateTool, MoreHostsThanRanksIsOneLineExit2) {
  const Result r = run_tool("--emulate-hosts 5 --ranks 4 --link-rate 1gbit -- true");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "dualpipe_emulate: error: --emulate-hosts 5 needs at least 5 ranks (the run has 4)\n");
  const Result mesh = run_tool("--emulate-hosts 5 -p 2 --ep 2 -- true");
  EXPECT_EQ(mesh.code, 2);
  EXPECT_EQ(mesh.err, "dualpipe_emulate: error: --emulate-hosts 5 needs at least 5 ranks (the run has 4)\n");
}

// The mesh options are spelled as dualpipe train spells them (-p/--ranks,
// --ep); the tool's first spellings still work, and are not listed.
TEST(EmulateTool, MeshOptionsAreSpelledAsInTrain) {
  const Result help = run_tool("--help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("-p,--ranks"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("--ep"), std::string::npos) << help.out;
  EXPECT_EQ(help.out.find("--expert-ranks"), std::string::npos) << help.out;
  EXPECT_EQ(help.out.find("--pipeline-ranks"), std::string::npos) << help.out;
  const Result old = run_tool("--emulate-hosts 5 --pipeline-ranks 2 --expert-ranks 2 -- true");
  EXPECT_EQ(old.err, "dualpipe_emulate: error: --emulate-hosts 5 needs at least 5 ranks (the run has 4)\n");
  const Result both = run_tool("--emulate-hosts 2 -p 2 --ep 2 --expert-ranks 1 -- true");
  EXPECT_EQ(both.code, 2);
  EXPECT_EQ(both.err, "dualpipe_emulate: error: --expert-ranks is --ep by its first name: give one\n");
  const Result bogus = run_tool("--bogus");
  EXPECT_EQ(bogus.code, 2);
  EXPECT_EQ(bogus.err, "dualpipe_emulate: error: The following argument was not expected: --bogus (see "
                       "dualpipe_emulate --help)\n");
  const Result none = run_tool("--emulate-hosts 2 -- true");
  EXPECT_EQ(none.err, "dualpipe_emulate: error: give the ranks: --ranks P (and --ep E for a P x E mesh)\n");
}

// Every rank is a process of this machine: a run of more than it can hold is
// refused before anything starts (100000 ranks forked until the descriptors
// ran out; 65536 x 65536 wrapped to a run of 0 ranks).
TEST(EmulateTool, TooManyRanksIsOneLineExit2) {
  const Result many = run_tool("--hosts 2 --ranks 100000 -- true");
  EXPECT_EQ(many.code, 2);
  EXPECT_EQ(many.err, "dualpipe_emulate: error: 100000 x 1 = 100000 ranks, more than the 64 rank processes one "
                      "machine runs\n");
  const Result wide = run_tool("--hosts 2 -p 65536 --ep 65536 -- true");
  EXPECT_EQ(wide.code, 2);
  EXPECT_EQ(wide.err, "dualpipe_emulate: error: 65536 x 65536 = 4294967296 ranks, more than the 64 rank processes "
                      "one machine runs\n");
  const Result mesh = run_tool("--hosts 2 --ranks 65537 --ep 65536 -- true");
  EXPECT_EQ(mesh.code, 2);
  EXPECT_NE(mesh.err.find("= 4295032832 ranks, more than the 64"), std::string::npos) << mesh.err;
}

// The rendezvous port reaches every rank: a port no socket can have is refused.
TEST(EmulateTool, MasterPortOutsideThePortRangeIsOneLineExit2) {
  for (const std::string port : {"0", "-5", "70000"}) {
    const Result r = run_tool("--hosts 2 --ranks 2 --master-port " + port + " -- true");
    EXPECT_EQ(r.code, 2) << port;
    EXPECT_EQ(r.err, "dualpipe_emulate: error: --master-port must be in 1..65535 (got " + port + ")\n");
  }
}

TEST(EmulateTool, BadLinkRateIsOneLineExit2) {
  const Result r = run_tool("--emulate-hosts 2 --ranks 2 --link-rate abc -- true");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "dualpipe_emulate: error: --link-rate 'abc' is not a rate such as 1gbit or 100mbit\n");
  const Result low = run_tool("--emulate-hosts 2 --ranks 2 --link-rate 1kbit -- true");
  EXPECT_EQ(low.code, 2);
  EXPECT_EQ(low.err, "dualpipe_emulate: error: --link-rate '1kbit' is outside 100kbit..100gbit\n");
}

TEST(EmulateTool, WithoutRootIsOneLineExit2) {
  if (test::running_as_root() && std::system("command -v setpriv >/dev/null") != 0) GTEST_SKIP() << "no setpriv to drop root";
  const std::string as_user = test::running_as_root() ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
  if (std::system((as_user + "test -x " + EMULATE_BINARY).c_str()) != 0) GTEST_SKIP() << "nobody may not run the tool here";
  const Result r = run_tool("--emulate-hosts 2 --ranks 2 -- true", as_user);
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err,
            "dualpipe_emulate: error: --emulate-hosts needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network "
            "namespaces (unshare: Operation not permitted)\n");
}

TEST(EmulateTool, RanksGetTheTorchrunVariablesOnTheirHosts) {
  SKIP_UNLESS_NAMESPACES();
  // Three stages on two hosts: stages 0,1 on host 0 (10.231.0.1), stage 2 on host 1.
  const Result r = run_tool(
      "--emulate-hosts 2 --ranks 3 --link-rate 100mbit -- sh -c "
      "'echo \"$RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT $GLOO_SOCKET_IFNAME "
      "$(ip -4 -o addr show eth0 | tr -s \" \" | cut -d \" \" -f 4)\"'");
  EXPECT_EQ(r.code, 0) << r.err;
  std::vector<std::string> lines;
  std::istringstream in(r.out);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"0 0 3 10.231.0.1 29500 eth0 10.231.0.1/24",
                                             "1 1 3 10.231.0.1 29500 eth0 10.231.0.1/24",
                                             "2 0 3 10.231.0.1 29500 eth0 10.231.0.2/24"}));
}

TEST(EmulateTool, AFailingRankGivesItsExitCodeAndNothingRemains) {
  SKIP_UNLESS_NAMESPACES();
  // Each rank names its namespace; rank 1 then fails, rank 0 would sleep
  // and is stopped a second later (the supervision every launcher shares).
  const Result r = run_tool(
      "--emulate-hosts 2 --ranks 2 -- sh -c 'readlink /proc/self/ns/net; [ $RANK = 1 ] && exit 7; exec sleep 30'");
  EXPECT_EQ(r.code, 7);
  EXPECT_TRUE(std::regex_match(
      r.err, std::regex(R"(dualpipe_emulate: error: rank 1 \(pid \d+\) failed with exit code 7; stopped rank\(s\) 0 \(still running 1 s later\)\n)")))
      << r.err;
  std::set<ino_t> ns;
  std::istringstream in(r.out);
  for (std::string l; std::getline(in, l);)
    if (l.rfind("net:[", 0) == 0) ns.insert(static_cast<ino_t>(std::stoull(l.substr(5))));
  EXPECT_EQ(ns.size(), 2u) << r.out;
  EXPECT_EQ(test::join(test::leftovers("(none)", ns)), "");
}

}  // namespace
}  // namespace dualpipe
