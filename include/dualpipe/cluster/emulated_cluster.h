#pragma once
// An emulated cluster network on one machine: H test hosts, each a network
// namespace with one interface (eth0) on a private /24, all joined by a Linux
// bridge in a "switch" namespace, every host link shaped by tc tbf in both
// directions. Ranks started with spawn() talk over real TCP through it.
// docs/emulated_cluster.md describes the layout, the shaping and the limits.
//
// Nothing of it is visible outside the namespaces it makes: no named
// namespace (/run/netns), no interface, address or route in the machine's
// own namespace. The namespaces are held by child processes that exit as
// soon as the owner closes them or dies (even by SIGKILL), and every process
// spawn() starts gets SIGKILL when the spawning thread exits. Needs root
// (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's ip and tc.
#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "dualpipe/cluster/link_rate.h"
#include "dualpipe/cluster/netns_process.h"
#include "dualpipe/cluster/rank_hosts.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {

struct ClusterOptions {
  // Names the bridge and its ports inside the switch namespace and the
  // namespace holder processes ("<prefix>s", "<prefix>h0", ...). Letters and
  // digits, at most 10; empty: "dp" and the owner's pid, so that parallel
  // runs are told apart in `ps`.
  std::string name_prefix;
  // First three octets of the hosts' /24; host i gets .(i+1). The addresses
  // exist only inside the cluster's namespaces, so clusters never collide.
  std::string subnet = "10.231.0";
  // The iproute2 programs (names looked up in PATH, /usr/sbin, /sbin, or paths).
  std::string ip_program = "ip";
  std::string tc_program = "tc";
};

// Ownership: owns the namespaces, bridge and processes it made, removed on
// destruction; not copyable. Thread-safety: one thread at a time.
class EmulatedCluster {
 public:
  static constexpr int kMaxHosts = 64;

  // Builds the network; throws dualpipe::Error with one line when it cannot (not
  // root, no namespaces, ip or tc missing or failing), after removing what
  // it had made.
  EmulatedCluster(int hosts, LinkRate rate, ClusterOptions options = {});
  // Kills (SIGKILL) and reaps the spawned processes that are still running,
  // then ends every namespace.
  ~EmulatedCluster();
  EmulatedCluster(const EmulatedCluster&) = delete;
  EmulatedCluster& operator=(const EmulatedCluster&) = delete;

  int hosts() const { return static_cast<int>(hosts_.size()); }
  LinkRate rate() const { return rate_; }
  const std::string& name_prefix() const { return options_.name_prefix; }
  // The IPv4 address of `host` (e.g. "10.231.0.1"), reachable from every host.
  std::string address(int host) const;
  // The interface every host has (for GLOO_SOCKET_IFNAME): "eth0".
  std::string interface() const { return "eth0"; }
  // /proc/PID/ns/net of a host's (or, with -1, the switch's) namespace, for
  // `nsenter --net=...` while the cluster lives.
  std::string netns_path(int host) const;

  // Forks, moves the child into `host`'s namespace and execs argv there with
  // this process's environment plus `extra_env` (which overrides). argv[0]
  // is a path, a name looked up in PATH, or "/proc/self/exe" (this program).
  // The child gets SIGKILL when the calling thread exits, so call this from
  // the thread that waits for the children. The caller reaps the child
  // (waitpid) as usual; the destructor kills and reaps those still running.
  pid_t spawn(int host, const std::vector<std::string>& argv,
              const std::vector<std::pair<std::string, std::string>>& extra_env);

  // Runs the ip or tc program with `args` inside `host`'s namespace (-1: the
  // switch), e.g. tc(0, {"-s", "qdisc", "show"}), and returns its stdout;
  // throws dualpipe::Error with its first line on stderr if it fails.
  std::string ip(int host, const std::vector<std::string>& args) const;
  std::string tc(int host, const std::vector<std::string>& args) const;

 private:
  struct Ns {
    netns::Child holder;
    int fd = -1;
  };
  const Ns& ns(int host) const;
  Ns make_namespace(const std::string& name);
  std::string run_or_throw(const Ns& where, const std::string& program, const std::vector<std::string>& args,
                           const char* what) const;
  void build();
  void wait_until_links_are_up() const;
  void teardown() noexcept;

  LinkRate rate_;
  ClusterOptions options_;
  std::string ip_, tc_;
  int life_write_ = -1;  // holders exit when this closes
  int life_read_ = -1;   // closed once every holder has its copy
  Ns switch_;
  std::vector<Ns> hosts_;
  std::vector<netns::Child> spawned_;
};

// Throws the one-line dualpipe::Error the constructor would throw when this
// process may not make network namespaces (not root, or unshare refused);
// cheap (one short-lived child), for a launcher to call before anything else.
void require_root_and_netns();

// The environment of rank `rank` of `world` ranks placed on hosts by
// `host_of` (host_of[r] = host of rank r, e.g. from place_ranks): RANK,
// LOCAL_RANK (its index among the ranks of its host), WORLD_SIZE,
// MASTER_ADDR (the address of rank 0's host), MASTER_PORT and
// GLOO_SOCKET_IFNAME. Every namespace is fresh, so any port is free there.
std::vector<std::pair<std::string, std::string>> emulated_rank_env(const EmulatedCluster& cluster,
                                                                   const std::vector<int>& host_of, int rank,
                                                                   int master_port = 29500);

}  // namespace dualpipe
