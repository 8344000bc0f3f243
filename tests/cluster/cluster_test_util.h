#pragma once
// Helpers of the emulated cluster tests: TCP transfers between hosts
// (through net_probe) and a search for anything a cluster left behind.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dualpipe/cluster/emulated_cluster.h"

namespace dualpipe::test {

inline bool running_as_root() { return geteuid() == 0; }

// Why this process cannot build a cluster ("" if it can): not root, or root
// in a container that may not make network namespaces. Tests that build one
// skip with this reason; what happens without the privilege is tested apart.
inline const std::string& why_no_namespaces() {
  static const std::string why = [] {
    if (!running_as_root()) return std::string("needs root to create network namespaces");
    try {
      require_root_and_netns();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  return why;
}

#define SKIP_UNLESS_NAMESPACES() \
  if (!dualpipe::test::why_no_namespaces().empty()) GTEST_SKIP() << dualpipe::test::why_no_namespaces()

// Waits up to `limit` for `pid`; kills it after that. Returns its wait status, or -1.
inline int wait_for(pid_t pid, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (true) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() > until) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

inline bool exited_ok(int status) { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

struct Flow {
  int from, to;
};

struct Measured {
  long long bytes = 0;
  double seconds = 0;
  double bits_per_second() const { return seconds > 0 ? 8.0 * static_cast<double>(bytes) / seconds : 0; }
};

// Sends `bytes` over each flow at the same time and measures, at the
// receivers, from the first byte that arrived anywhere to the last EOF.
inline Measured transfer(EmulatedCluster& c, const std::vector<Flow>& flows, long long bytes) {
  static int run = 0;
  std::map<int, int> senders_to;  // destination host -> flows into it
  for (const Flow& f : flows) ++senders_to[f.to];
  std::vector<std::string> outs;
  std::vector<pid_t> servers, senders;
  const int port = 5201;
  for (const auto& [host, n] : senders_to) {
    outs.push_back("/tmp/dp_net_probe_" + std::to_string(getpid()) + "_" + std::to_string(run++));
    std::remove(outs.back().c_str());
    servers.push_back(c.spawn(host, {NET_PROBE_BINARY, "serve", std::to_string(port), outs.back(), std::to_string(n)}, {}));
  }
  for (const Flow& f : flows)
    senders.push_back(c.spawn(f.from, {NET_PROBE_BINARY, "send", c.address(f.to), std::to_string(port), std::to_string(bytes)}, {}));
  bool ok = true;
  for (pid_t p : senders) ok = exited_ok(wait_for(p)) && ok;
  for (pid_t p : servers) ok = exited_ok(wait_for(p)) && ok;
  Measured m;
  if (!ok) return m;
  double first = 1e300, last = 0;
  for (const auto& out : outs) {
    std::ifstream in(out);
    long long b = 0;
    double f = 0, l = 0;
    in >> b >> f >> l;
    std::remove(out.c_str());
    m.bytes += b;
    first = std::min(first, f);
    last = std::max(last, l);
  }
  m.seconds = last - first;
  return m;
}

// The median round trip in seconds of `count` one-byte messages over TCP from
// host `from` to host `to` and back, while `bulk_bytes` stream from `from`
// to host `bulk_to` on another connection (0: on an idle link); the pings
// start once the stream has had 100 ms to fill the queues. -1 on failure.
inline double ping_under_load(EmulatedCluster& c, int from, int to, int bulk_to, long long bulk_bytes, int count) {
  const std::string out = "/tmp/dp_net_ping_" + std::to_string(getpid());
  const std::string bulk_out = out + "_bulk";
  std::remove(out.c_str());
  const pid_t echo = c.spawn(to, {NET_PROBE_BINARY, "echo", "5301"}, {});
  pid_t server = -1, sender = -1;
  if (bulk_bytes > 0) {
    server = c.spawn(bulk_to, {NET_PROBE_BINARY, "serve", "5201", bulk_out, "1"}, {});
    sender = c.spawn(from, {NET_PROBE_BINARY, "send", c.address(bulk_to), "5201", std::to_string(bulk_bytes)}, {});
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const pid_t pinger = c.spawn(from, {NET_PROBE_BINARY, "ping", c.address(to), "5301", std::to_string(count), out}, {});
  bool ok = exited_ok(wait_for(pinger)) && exited_ok(wait_for(echo));
  if (bulk_bytes > 0) {
    ok = exited_ok(wait_for(sender)) && ok;
    ok = exited_ok(wait_for(server)) && ok;
    std::remove(bulk_out.c_str());
  }
  std::ifstream in(out);
  double rtt = -1;
  if (!(in >> rtt) || !ok) rtt = -1;
  std::remove(out.c_str());
  return rtt;
}

// The network namespace inode of /proc/PID/ns/net (0 if unreadable).
inline ino_t netns_inode(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

inline std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

// Everything of a cluster that still exists: processes (not zombies: a
// zombie holds no namespace) named as its holders ("<prefix>s",
// "<prefix>h<i>") or inside one of
// `namespaces`, descriptors of those namespaces in any process, named
// namespaces and root-namespace links that start with "dp". Empty means clean.
inline std::vector<std::string> leftovers(const std::string& prefix, const std::set<ino_t>& namespaces) {
  std::vector<std::string> found;
  auto ours = [&](const std::string& link) {
    for (ino_t ino : namespaces)
      if (link == "net:[" + std::to_string(ino) + "]") return true;
    return false;
  };
  auto readlink_str = [](const std::string& p) {
    char buf[256];
    const ssize_t n = readlink(p.c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  };
  if (DIR* proc = opendir("/proc")) {
    while (dirent* d = readdir(proc)) {
      const std::string pid = d->d_name;
      if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
      const std::string stat = read_line("/proc/" + pid + "/stat");
      const auto close_paren = stat.rfind(')');
      if (close_paren == std::string::npos || close_paren + 2 >= stat.size() || stat[close_paren + 2] == 'Z') continue;
      const std::string comm = read_line("/proc/" + pid + "/comm");
      if (comm == prefix + "s" || comm.rfind(prefix + "h", 0) == 0) found.push_back("process " + pid + " (" + comm + ")");
      if (ours(readlink_str("/proc/" + pid + "/ns/net"))) found.push_back("process " + pid + " (" + comm + ") in a cluster namespace");
      if (DIR* fds = opendir(("/proc/" + pid + "/fd").c_str())) {
        while (dirent* f = readdir(fds))
          if (ours(readlink_str("/proc/" + pid + "/fd/" + f->d_name)))
            found.push_back("descriptor " + std::string(f->d_name) + " of process " + pid + " (" + comm + ")");
        closedir(fds);
      }
    }
    closedir(proc);
  }
  if (DIR* netns = opendir("/run/netns")) {
    while (dirent* d = readdir(netns))
      if (std::string(d->d_name).rfind("dp", 0) == 0) found.push_back("named namespace " + std::string(d->d_name));
    closedir(netns);
  }
  if (FILE* p = popen("ip -o link show 2>/dev/null", "r")) {
    char line[1024];
    while (std::fgets(line, sizeof line, p)) {
      std::string l = line;
      const auto colon = l.find(": ");
      if (colon != std::string::npos && l.compare(colon + 2, 2, "dp") == 0) found.push_back("link " + l.substr(0, l.find('\n')));
    }
    pclose(p);
  }
  return found;
}

// Polls leftovers() for up to `limit` (a dead owner's holders exit a moment later).
inline std::vector<std::string> leftovers_after(const std::string& prefix, const std::set<ino_t>& namespaces,
                                                std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (true) {
    auto found = leftovers(prefix, namespaces);
    if (found.empty() || std::chrono::steady_clock::now() > until) return found;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

inline std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : "; ") + x;
  return s;
}

}  // namespace dualpipe::test
