// Whatever ends the owner of an emulated cluster (the end of its scope, an
// exception, a failed construction, SIGTERM, Ctrl-C, SIGKILL), nothing of the
// cluster remains: no holder process, no process or descriptor in one of its
// namespaces (so the namespaces, their veths, bridge and addresses are gone),
// no named namespace, no link in the machine's namespace. And without the
// needed privileges the constructor refuses with one line.
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <sched.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <set>
#include <stdexcept>

#include "dualpipe/cluster/emulated_cluster.h"
#include "cluster_test_util.h"

namespace dualpipe {
namespace {

constexpr LinkRate kRate{100'000'000};

std::set<ino_t> namespaces_of(const EmulatedCluster& c) {
  std::set<ino_t> s;
  for (int h = -1; h < c.hosts(); ++h) s.insert(test::netns_inode(c.netns_path(h)));
  return s;
}

bool no_children_left() {
  int status = 0;
  return waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD;
}

TEST(ClusterCleanup, EndOfScopeRemovesEverything) {
  SKIP_UNLESS_NAMESPACES();
  std::set<ino_t> ns;
  std::string prefix;
  {
    EmulatedCluster c(3, kRate);
    ns = namespaces_of(c);
    prefix = c.name_prefix();
    c.spawn(1, {"sleep", "30"}, {});  // still running at the end: killed and reaped
    ASSERT_FALSE(test::leftovers(prefix, ns).empty());  // the search sees a live cluster
  }
  EXPECT_EQ(test::join(test::leftovers(prefix, ns)), "");  // at once: the destructor waited
  EXPECT_TRUE(no_children_left());
}

TEST(ClusterCleanup, ExceptionRemovesEverything) {
  SKIP_UNLESS_NAMESPACES();
  std::set<ino_t> ns;
  std::string prefix;
  try {
    EmulatedCluster c(2, kRate);
    ns = namespaces_of(c);
    prefix = c.name_prefix();
    c.spawn(0, {"sleep", "30"}, {});
    throw std::runtime_error("a rank failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(test::join(test::leftovers(prefix, ns)), "");
  EXPECT_TRUE(no_children_left());
}

TEST(ClusterCleanup, FailedConstructionRemovesWhatItMade) {
  SKIP_UNLESS_NAMESPACES();
  ClusterOptions o;
  o.name_prefix = "dpfail" + std::to_string(getpid() % 10000);
  o.tc_program = "/bin/false";  // the namespaces and veths exist when tc fails
  try {
    EmulatedCluster c(2, kRate, o);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("--emulate-hosts cannot shape a host's upload: '/bin/false qdisc add dev eth0 root handle 1: tbf", 0), 0u)
        << what;
    EXPECT_NE(what.find("failed: exit code 1"), std::string::npos) << what;
  }
  EXPECT_EQ(test::join(test::leftovers(o.name_prefix, {})), "");
  EXPECT_TRUE(no_children_left());
}

// The failure of a command carries its own first line on stderr.
TEST(ClusterCleanup, CommandErrorsAreOneLineWithTheirCause) {
  SKIP_UNLESS_NAMESPACES();
  ClusterOptions o;
  o.ip_program = "/nonexistent/ip";
  try {
    EmulatedCluster c(2, kRate, o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "--emulate-hosts needs iproute2's '/nonexistent/ip' (not found in PATH, /usr/sbin or /sbin)");
  }
  EmulatedCluster c(1, kRate);
  try {
    c.tc(0, {"qdisc", "add", "dev", "nosuchdev", "root", "tbf"});
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_NE(what.find("tc qdisc add dev nosuchdev root tbf' failed: "), std::string::npos) << what;
  }
}

// The owner, in a child process of its own: builds a cluster, starts a
// process in host 1, reports "NS NS NS PID PREFIX" and waits to be killed.
struct Owner {
  pid_t pid = -1;
  std::set<ino_t> ns;
  pid_t sleeper = -1;
  std::string prefix;
};

Owner start_owner() {
  int report[2];
  EXPECT_EQ(pipe(report), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(report[0]);
    setpgid(0, 0);  // its own process group, as a launcher run from a shell
    std::string line;
    try {
      EmulatedCluster c(2, kRate);
      for (int h = -1; h < 2; ++h) line += std::to_string(test::netns_inode(c.netns_path(h))) + " ";
      line += std::to_string(c.spawn(1, {"sleep", "30"}, {})) + " " + c.name_prefix() + "\n";
      (void)!write(report[1], line.data(), line.size());
      while (true) pause();
    } catch (const std::exception& e) {
      line = std::string("error ") + e.what() + "\n";
      (void)!write(report[1], line.data(), line.size());
    }
    _exit(1);
  }
  close(report[1]);
  std::string text;
  char buf[256];
  ssize_t n;
  while ((n = read(report[0], buf, sizeof buf)) > 0) {
    text.append(buf, static_cast<std::size_t>(n));
    if (text.find('\n') != std::string::npos) break;
  }
  close(report[0]);
  Owner o;
  o.pid = pid;
  std::istringstream in(text);
  for (int i = 0; i < 3; ++i) {
    ino_t ino = 0;
    in >> ino;
    o.ns.insert(ino);
  }
  in >> o.sleeper >> o.prefix;
  EXPECT_EQ(o.ns.size(), 3u) << text;
  EXPECT_FALSE(o.prefix.empty()) << text;
  return o;
}

void expect_clean_after_signal(int sig, bool whole_group) {
  // Orphans (the owner's holders and its sleeper, once it is dead) come to
  // this process instead of init, so that the test sees how they ended.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  const Owner o = start_owner();
  ASSERT_FALSE(o.prefix.empty());
  ASSERT_FALSE(test::leftovers(o.prefix, o.ns).empty());
  kill(whole_group ? -o.pid : o.pid, sig);
  int status = 0;
  ASSERT_EQ(waitpid(o.pid, &status, 0), o.pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig);
  // Its holders see their life pipe close and exit; the sleeper gets
  // SIGKILL from PR_SET_PDEATHSIG: all within moments.
  EXPECT_EQ(test::join(test::leftovers_after(o.prefix, o.ns, std::chrono::seconds(3))), "");
  const int sleeper = test::wait_for(o.sleeper, std::chrono::seconds(3));
  EXPECT_TRUE(sleeper >= 0 && WIFSIGNALED(sleeper) && WTERMSIG(sleeper) == (whole_group ? SIGINT : SIGKILL)) << sleeper;
  // The holders (3) end by themselves, with exit code 0.
  int holders = 0;
  for (pid_t p; (p = waitpid(-1, &status, 0)) > 0;) holders += WIFEXITED(status) && WEXITSTATUS(status) == 0;
  EXPECT_EQ(holders, 3);
  prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST(ClusterCleanup, SigtermOfTheOwnerRemovesEverything) {
  SKIP_UNLESS_NAMESPACES();
  expect_clean_after_signal(SIGTERM, false);
}

TEST(ClusterCleanup, CtrlCRemovesEverything) {
  SKIP_UNLESS_NAMESPACES();
  expect_clean_after_signal(SIGINT, true);  // the terminal signals the whole group
}

TEST(ClusterCleanup, SigkillOfTheOwnerRemovesEverything) {
  SKIP_UNLESS_NAMESPACES();
  expect_clean_after_signal(SIGKILL, false);
}

// Runs fn in a child process (to drop privileges there) and returns what it returned.
std::string in_child(const std::function<std::string()>& fn) {
  int out[2];
  if (pipe(out) != 0) return "pipe failed";
  const pid_t pid = fork();
  if (pid == 0) {
    close(out[0]);
    std::string s;
    try {
      s = fn();
    } catch (const std::exception& e) {
      s = std::string("exception: ") + e.what();
    }
    (void)!write(out[1], s.data(), s.size());
    _exit(0);
  }
  close(out[1]);
  std::string s;
  char buf[512];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0) s.append(buf, static_cast<std::size_t>(n));
  close(out[0]);
  waitpid(pid, nullptr, 0);
  return s;
}

std::string construction_error() {
  try {
    EmulatedCluster c(2, kRate);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string check_error() {
  try {
    require_root_and_netns();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Drops `caps` (bit masks of CAP_* numbers) from the bounding set, so that
// programs this process runs never get them, and from this process itself.
bool drop_capabilities(std::uint64_t caps) {
  for (int cap = 0; cap < 64; ++cap)
    if ((caps >> cap) & 1) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  for (int i = 0; i < 2; ++i) {
    const auto keep = static_cast<std::uint32_t>(~(caps >> (32 * i)));
    data[i].effective &= keep;
    data[i].permitted &= keep;
    data[i].inheritable &= keep;
  }
  return syscall(SYS_capset, &header, data) == 0;
}

const std::string kNeedsRoot = "--emulate-hosts needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces";

TEST(ClusterPrivileges, AnOrdinaryUserIsRefusedWithOneLine) {
  const std::string expected = kNeedsRoot + " (unshare: Operation not permitted)";
  auto as_nobody = [](std::function<std::string()> fn) {
    return [fn] {
      if (test::running_as_root() && (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0))
        return std::string("cannot become nobody");
      return fn();
    };
  };
  EXPECT_EQ(in_child(as_nobody(construction_error)), expected);
  EXPECT_EQ(in_child(as_nobody(check_error)), expected);
}

TEST(ClusterPrivileges, RootWithoutCapabilitiesIsRefusedWithOneLine) {
  SKIP_UNLESS_NAMESPACES();
  const std::string expected = kNeedsRoot + " (unshare: Operation not permitted)";
  auto no_caps = [](std::function<std::string()> fn) {
    return [fn] { return drop_capabilities(~0ull) ? fn() : std::string("capset failed"); };
  };
  EXPECT_EQ(in_child(no_caps(construction_error)), expected);
  EXPECT_EQ(in_child(no_caps(check_error)), expected);
}

// With CAP_SYS_ADMIN the namespaces come, but without CAP_NET_ADMIN ip may
// not configure them: the line says so with ip's own words, and what was
// made goes away.
TEST(ClusterPrivileges, WithoutNetAdminIpsRefusalIsReported) {
  SKIP_UNLESS_NAMESPACES();
  const std::string what = in_child([] {
    if (!drop_capabilities(1ull << CAP_NET_ADMIN)) return std::string("capset failed");
    std::string error = construction_error();
    return no_children_left() ? error : error + " (children left)";
  });
  EXPECT_EQ(what.rfind(kNeedsRoot + " (cannot bring up the switch's loopback: '", 0), 0u) << what;
  EXPECT_NE(what.find("ip link set lo up' failed: RTNETLINK answers: Operation not permitted)"), std::string::npos)
      << what;
  EXPECT_EQ(what.find('\n'), std::string::npos) << what;
}

// The check agrees with the kernel: it passes exactly where a process of
// ours may make a network namespace (in a container root may not).
TEST(ClusterPrivileges, CheckAgreesWithUnshare) {
  const std::string kernel = in_child([] { return std::string(unshare(CLONE_NEWNET) == 0 ? "" : std::strerror(errno)); });
  const std::string check = in_child([] { return check_error(); });
  if (kernel.empty())
    EXPECT_EQ(check, "no error");
  else if (kernel == std::strerror(EPERM) || kernel == std::strerror(EACCES))
    EXPECT_EQ(check, kNeedsRoot + " (unshare: " + kernel + ")");
  else
    EXPECT_EQ(check, "--emulate-hosts cannot create a network namespace (unshare: " + kernel + ")");
}

}  // namespace
}  // namespace dualpipe
