#include "dualpipe/cluster/emulated_cluster.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <thread>
#include <cerrno>
#include <cstring>
#include <exception>

#include "dualpipe/cluster/netns_process.h"
#include "dualpipe/schedule/error.h"

extern char** environ;

namespace dualpipe {
namespace {

constexpr const char* kNeedsRoot = "--emulate-hosts needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces";

std::string unshare_failure(int err) {
  if (err == EPERM || err == EACCES) return fmt::format("{} (unshare: {})", kNeedsRoot, std::strerror(err));
  return fmt::format("--emulate-hosts cannot create a network namespace (unshare: {})", std::strerror(err));
}

bool valid_prefix(const std::string& p) {
  if (p.empty() || p.size() > 10) return false;
  for (char c : p)
    if (!std::isalnum(static_cast<unsigned char>(c))) return false;
  return true;
}

// "a.b.c" with three numbers in 0..255 and no leading zeros.
bool valid_subnet(const std::string& s) {
  int parts = 0;
  std::size_t i = 0;
  while (i <= s.size()) {
    std::size_t end = s.find('.', i);
    if (end == std::string::npos) end = s.size();
    const std::string part = s.substr(i, end - i);
    if (part.empty() || part.size() > 3 || (part.size() > 1 && part[0] == '0')) return false;
    for (char c : part)
      if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    if (std::stoi(part) > 255) return false;
    ++parts;
    i = end + 1;
  }
  return parts == 3;
}

std::string need_program(const std::string& name) {
  std::string path = netns::find_program(name);
  if (path.empty())
    throw Error(fmt::format("--emulate-hosts needs iproute2's '{}' (not found in PATH, /usr/sbin or /sbin)", name));
  return path;
}

}  // namespace

EmulatedCluster::EmulatedCluster(int hosts, LinkRate rate, ClusterOptions options)
    : rate_(rate), options_(std::move(options)) {
  if (hosts < 1 || hosts > kMaxHosts)
    throw Error(fmt::format("--emulate-hosts must be in 1..{} (got {})", kMaxHosts, hosts));
  if (rate_.bits_per_second == 0) throw Error("--link-rate must be above zero");
  if (options_.name_prefix.empty()) options_.name_prefix = fmt::format("dp{}", getpid());
  if (!valid_prefix(options_.name_prefix))
    throw Error(fmt::format("emulated cluster name prefix '{}' must be 1 to 10 letters or digits", options_.name_prefix));
  if (!valid_subnet(options_.subnet))
    throw Error(fmt::format("emulated cluster subnet '{}' must be three numbers 0..255 such as 10.231.0",
                            options_.subnet));
  ip_ = need_program(options_.ip_program);
  tc_ = need_program(options_.tc_program);
  hosts_.reserve(static_cast<std::size_t>(hosts));
  try {
    int life[2];
    if (pipe2(life, O_CLOEXEC) != 0) throw Error(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
    life_read_ = life[0];
    life_write_ = life[1];
    switch_ = make_namespace(options_.name_prefix + "s");
    for (int h = 0; h < hosts; ++h) hosts_.push_back(make_namespace(fmt::format("{}h{}", options_.name_prefix, h)));
    close(life_read_);  // every holder has its copy; later children must not get one
    life_read_ = -1;
    build();
  } catch (...) {
    teardown();
    throw;
  }
}

EmulatedCluster::~EmulatedCluster() { teardown(); }

EmulatedCluster::Ns EmulatedCluster::make_namespace(const std::string& name) {
  const netns::Holder h = netns::start_holder(life_read_, name);
  if (h.error != 0) throw Error(unshare_failure(h.error));
  return Ns{h.process, h.ns_fd};
}

std::string EmulatedCluster::run_or_throw(const Ns& where, const std::string& program,
                                          const std::vector<std::string>& args, const char* what) const {
  netns::RunResult r = netns::run_in(where.fd, program, args);
  if (r.error.empty()) return std::move(r.output);
  const std::string& failure = r.error;
  if (failure.find("Operation not permitted") != std::string::npos)
    throw Error(fmt::format("{} ({} {}: {})", kNeedsRoot, "cannot", what, failure));
  throw Error(fmt::format("--emulate-hosts cannot {}: {}", what, failure));
}

// The switch: a bridge with one port per host. Host i: eth0 with its
// address, the other end of its veth pair a bridge port. Both ends' egress
// shaped (link_queue_commands): eth0 is the host's upload, the bridge port its download.
void EmulatedCluster::build() {
  auto shape = [&](const Ns& where, const std::string& dev, const char* what) {
    for (const auto& command : link_queue_commands(dev, rate_)) run_or_throw(where, tc_, command, what);
  };
  const std::string bridge = options_.name_prefix + "br";
  run_or_throw(switch_, ip_, {"link", "set", "lo", "up"}, "bring up the switch's loopback");
  run_or_throw(switch_, ip_, {"link", "add", bridge, "type", "bridge"}, "create the bridge");
  run_or_throw(switch_, ip_, {"link", "set", bridge, "up"}, "bring up the bridge");
  for (int h = 0; h < hosts(); ++h) {
    const Ns& host = hosts_[static_cast<std::size_t>(h)];
    const std::string port = fmt::format("{}p{}", options_.name_prefix, h);
    run_or_throw(host, ip_, {"link", "set", "lo", "up"}, "bring up a host's loopback");
    run_or_throw(host, ip_,
                 {"link", "add", interface(), "type", "veth", "peer", "name", port, "netns", std::to_string(switch_.holder.pid)},
                 "create a host's veth link");
    run_or_throw(host, ip_, {"addr", "add", address(h) + "/24", "dev", interface()}, "address a host");
    run_or_throw(host, ip_, {"link", "set", interface(), "up"}, "bring up a host's link");
    shape(host, interface(), "shape a host's upload");
    run_or_throw(switch_, ip_, {"link", "set", port, "master", bridge, "up"}, "attach a host to the bridge");
    shape(switch_, port, "shape a host's download");
  }
  wait_until_links_are_up();
}

namespace {

int occurrences(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

// The kernel turns carrier changes into a bridge port's forwarding state and
// an interface's operational state asynchronously (its link watch, which may
// delay an event by up to a second). Until then frames are dropped: a first
// ARP request or SYN lost costs a 1 s retransmission, which halved a measured
// rate in tests. So the cluster is ready only when every port forwards and
// every eth0 is up.
void EmulatedCluster::wait_until_links_are_up() const {
  using Clock = std::chrono::steady_clock;
  const auto give_up = Clock::now() + std::chrono::seconds(5);
  auto wait_for = [&](const Ns& where, const std::vector<std::string>& args, const std::string& what, int count,
                      const char* name) {
    while (occurrences(run_or_throw(where, ip_, args, "read link states"), what) < count) {
      if (Clock::now() > give_up)
        throw Error(fmt::format("--emulate-hosts: {} did not come up within 5 s", name));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  wait_for(switch_, {"-d", "-o", "link", "show", "master", options_.name_prefix + "br"}, "state forwarding", hosts(),
           "the bridge ports");
  for (const Ns& host : hosts_) wait_for(host, {"-o", "link", "show", interface()}, "state UP", 1, "a host's eth0");
}

void EmulatedCluster::teardown() noexcept {
  for (netns::Child& child : spawned_) netns::kill_and_reap(child);
  spawned_.clear();
  // Closing the life pipe ends every holder; SIGKILL makes it immediate, and
  // reaping them here means the namespaces are gone when this returns.
  for (int* fd : {&life_write_, &life_read_})
    if (*fd >= 0) {
      close(*fd);
      *fd = -1;
    }
  auto end = [](Ns& n) {
    if (n.fd >= 0) close(n.fd);
    netns::kill_and_reap(n.holder);
    n = Ns{};
  };
  for (Ns& h : hosts_) end(h);
  end(switch_);
  hosts_.clear();
}

const EmulatedCluster::Ns& EmulatedCluster::ns(int host) const {
  if (host == -1) return switch_;
  if (host < 0 || host >= hosts())
    throw Error(fmt::format("emulated host {} is outside 0..{}", host, hosts() - 1));
  return hosts_[static_cast<std::size_t>(host)];
}

std::string EmulatedCluster::address(int host) const {
  (void)ns(host);
  return fmt::format("{}.{}", options_.subnet, host + 1);
}

std::string EmulatedCluster::netns_path(int host) const { return fmt::format("/proc/{}/ns/net", ns(host).holder.pid); }

pid_t EmulatedCluster::spawn(int host, const std::vector<std::string>& argv,
                             const std::vector<std::pair<std::string, std::string>>& extra_env) {
  const Ns& where = ns(host);
  if (host < 0) throw Error("ranks run on hosts, not on the switch");
  if (argv.empty()) throw Error("cannot start a program without a name");
  std::vector<std::string> args = argv;
  args[0] = netns::find_program(argv[0]);
  if (args[0].empty()) throw Error(fmt::format("cannot start '{}': no such program", argv[0]));
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& kv : extra_env) overridden = overridden || kv.first == name;
    if (!overridden) env.push_back(entry);
  }
  for (const auto& kv : extra_env) env.push_back(kv.first + "=" + kv.second);
  spawned_.push_back(netns::spawn_in(where.fd, args, env));
  return spawned_.back().pid;
}

std::string EmulatedCluster::ip(int host, const std::vector<std::string>& args) const {
  return run_or_throw(ns(host), ip_, args, "run ip");
}

std::string EmulatedCluster::tc(int host, const std::vector<std::string>& args) const {
  return run_or_throw(ns(host), tc_, args, "run tc");
}

void require_root_and_netns() {
  const pid_t pid = fork();
  if (pid < 0) throw Error(fmt::format("cannot fork: {}", std::strerror(errno)));
  if (pid == 0) _exit(unshare(CLONE_NEWNET) == 0 ? 0 : errno);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw Error(fmt::format("cannot wait for a child: {}", std::strerror(errno)));
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) throw Error(unshare_failure(WEXITSTATUS(status)));
}

std::vector<std::pair<std::string, std::string>> emulated_rank_env(const EmulatedCluster& cluster,
                                                                   const std::vector<int>& host_of, int rank,
                                                                   int master_port) {
  const int world = static_cast<int>(host_of.size());
  if (rank < 0 || rank >= world) throw Error(fmt::format("rank {} is outside 0..{}", rank, world - 1));
  for (int h : host_of)
    if (h < 0 || h >= cluster.hosts())
      throw Error(fmt::format("emulated host {} is outside 0..{}", h, cluster.hosts() - 1));
  int local_rank = 0;
  for (int r = 0; r < rank; ++r) local_rank += host_of[static_cast<std::size_t>(r)] == host_of[static_cast<std::size_t>(rank)];
  return {{"RANK", std::to_string(rank)},
          {"LOCAL_RANK", std::to_string(local_rank)},
          {"WORLD_SIZE", std::to_string(world)},
          {"MASTER_ADDR", cluster.address(host_of[0])},
          {"MASTER_PORT", std::to_string(master_port)},
          {"GLOO_SOCKET_IFNAME", cluster.interface()}};
}

}  // namespace dualpipe
