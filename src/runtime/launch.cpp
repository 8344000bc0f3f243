#include "dualpipe/runtime/launch.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <algorithm>
#include <vector>

#include "dualpipe/cluster/emulated_cluster.h"
#include "dualpipe/cluster/link_rate.h"
#include "dualpipe/cluster/rank_hosts.h"
#include "dualpipe/schedule/error.h"
#include "runtime/rank_process.h"

namespace dualpipe {
namespace {

int env_int(const char* name, int fallback, bool required) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    if (required) throw Error(fmt::format("{} is not set (torchrun-style launch needs RANK, WORLD_SIZE, "
                                          "MASTER_ADDR and MASTER_PORT)",
                                          name));
    return fallback;
  }
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end || x < 0 || x > 1'000'000) throw Error(fmt::format("{}='{}' is not a valid non-negative number", name, v));
  return static_cast<int>(x);
}

// Every rank on this machine: Gloo keeps its traffic on loopback.
bool is_loopback(const std::string& addr) { return addr == "127.0.0.1" || addr == "localhost"; }

}  // namespace

std::optional<RankEnv> rank_from_env() {
  if (!std::getenv("RANK")) return std::nullopt;
  RankEnv e;
  e.rank = env_int("RANK", 0, true);
  e.world = env_int("WORLD_SIZE", 1, true);
  e.local_rank = env_int("LOCAL_RANK", e.rank, false);
  const char* addr = std::getenv("MASTER_ADDR");
  e.master_addr = addr && *addr ? addr : "127.0.0.1";
  e.master_port = env_int("MASTER_PORT", 29500, true);
  if (e.world < 1) throw Error("WORLD_SIZE must be at least 1");
  if (e.rank >= e.world) throw Error(fmt::format("RANK={} is not below WORLD_SIZE={}", e.rank, e.world));
  if (e.master_port < 1 || e.master_port > 65535) throw Error(fmt::format("MASTER_PORT={} is not a port", e.master_port));
  return e;
}

namespace {

// What rank 0 knows when its wait for the others ran out: the ranks
// (comma-separated) whose arrival key never reached its store.
struct RanksNeverCame : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The TCPStore at master_addr:master_port (rank 0 holds it), with this
// rank's arrival marked in it first (arrival_key), so that a rendezvous that
// never completes can name the ranks that never came. Rank 0 waits for every
// arrival itself, bounded by the timeout, and asks its own store who is
// missing: its store lives until it has answered (a store that waits for
// its workers in its constructor is gone by the time anyone could ask it).
compat::StorePtr rendezvous_store(const RankEnv& env, std::chrono::milliseconds timeout) {
  const bool server = env.rank == 0;
  auto store = compat::make_tcp_store(env.master_addr, env.master_port, server, env.world, timeout, !server);
  store->set(arrival_key(env.rank), std::vector<std::uint8_t>{1});
  if (!server || env.world == 1) return store;
  std::vector<std::string> keys;
  for (int r = 1; r < env.world; ++r) keys.push_back(arrival_key(r));
  try {
    store->wait(keys, timeout);
  } catch (const std::exception&) {
    const std::string missing = absent_ranks(*store, env.world);
    if (missing.empty()) throw;
    throw RanksNeverCame(missing);
  }
  return store;
}

}  // namespace

std::shared_ptr<Comm> connect_env(const RankEnv& env, std::chrono::milliseconds timeout, Backend backend) {
  return connect(rendezvous_store(env, timeout), env.rank, env.world, timeout, is_loopback(env.master_addr), backend,
                 rank_device_index(env.local_rank));
}

Mesh connect_env_mesh(const RankEnv& env, const MeshShape& shape, std::chrono::milliseconds timeout, Backend backend) {
  return connect_mesh(rendezvous_store(env, timeout), env.rank, shape, timeout, is_loopback(env.master_addr), backend,
                      rank_device_index(env.local_rank));
}

// A port that was free a moment ago (the kernel picks it).
int free_local_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) close(fd);
    throw Error("cannot find a free local port for the rank rendezvous");
  }
  close(fd);
  return ntohs(a.sin_port);
}


void use_batch_scheduling() {
  sched_param none{};
  none.sched_priority = 0;
  if (sched_setscheduler(0, SCHED_BATCH, &none) != 0)
    throw Error(fmt::format("cannot switch to batch scheduling: {}", std::strerror(errno)));
}

bool is_spawned_rank() {
  const char* v = std::getenv("DUALPIPE_SPAWNED");
  return v && *v == '1';
}

namespace {

// What every rank process gets beyond the torchrun variables: the mark that
// its launcher already spoke for the run, and its compute threads (OpenBLAS
// reads OMP_NUM_THREADS when it loads, before main).
std::vector<std::pair<std::string, std::string>> spawned_rank_env(int intra_op_threads, int restart) {
  return {{"DUALPIPE_SPAWNED", "1"},
          {"OMP_NUM_THREADS", std::to_string(intra_op_threads)},
          {"DUALPIPE_RESTART_COUNT", std::to_string(restart)}};
}

std::vector<std::string> rank_command(const std::vector<std::string>& args) {
  std::vector<std::string> cmd = args;
  if (cmd.empty()) cmd.emplace_back();
  cmd[0] = "/proc/self/exe";
  return cmd;
}

}  // namespace

namespace {

// One start of `world` local rank processes, the restart-th.
int spawn_attempt(int world, const std::vector<std::string>& args, int intra_op_threads, int restart) {
  const int port = free_local_port();
  const pid_t parent = getpid();
  const std::vector<std::string> cmd = rank_command(args);
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = fork();
    if (pid < 0) {
      for (pid_t p : pids) kill(p, SIGKILL);
      throw Error("cannot start rank processes (fork failed)");
    }
    if (pid == 0) {
      // A rank must not outlive its launcher (e.g. when the launcher is killed).
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      for (const auto& [name, value] : spawned_rank_env(intra_op_threads, restart))
        setenv(name.c_str(), value.c_str(), 1);
      std::vector<char*> argv;
      for (const std::string& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  return supervise_ranks(pids);
}

// Runs attempt(k) for k = 0, 1, ... while it fails in a way a restart may
// mend, at most max_restarts + 1 times; returns the last attempt's code.
int with_restarts(int max_restarts, int ranks, const std::function<int(int)>& attempt) {
  for (int k = 0;; ++k) {
    const int code = attempt(k);
    const bool agreed_stop = code == kAgreedStopExitCode || code == kInterruptedExitCode;
    if (code == 0 || agreed_stop || interrupt_requested() || max_restarts == 0) return code;
    if (k == max_restarts) {
      fmt::print(stderr, "dualpipe: no restarts left (--max-restarts {})\n", max_restarts);
      return code;
    }
    fmt::print(stderr, "dualpipe: restarting all {} ranks (restart {} of {})\n", ranks, k + 1, max_restarts);
  }
}

}  // namespace

int spawn_local_ranks(int world, const std::vector<std::string>& args, int intra_op_threads) {
  return spawn_attempt(world, args, intra_op_threads, 0);
}

int restart_count() {
  for (const char* name : {"DUALPIPE_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"}) {
    const char* v = std::getenv(name);
    if (v && *v) return env_int(name, 0, false);
  }
  return 0;
}

namespace {

// Runs body(rank) on `world` threads; rethrows the first exception.
void on_threads(int world, const std::function<void(int)>& body) {
  std::mutex mu;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!first) first = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace

void run_thread_ranks(int world, const std::function<void(std::shared_ptr<Comm>)>& fn,
                      std::chrono::milliseconds timeout, Backend backend) {
  auto store = compat::make_hash_store();
  on_threads(world, [&](int r) { fn(connect(store, r, world, timeout, true, backend, r)); });
}

void run_mesh_threads(const MeshShape& shape, const std::function<void(const Mesh&)>& fn,
                      std::chrono::milliseconds timeout, Backend backend) {
  auto store = compat::make_hash_store();
  on_threads(shape.size(), [&](int r) { fn(connect_mesh(store, r, shape, timeout, true, backend, r)); });
}

bool is_lead_process() {
  if (is_spawned_rank()) return false;
  const auto env = rank_from_env();
  return !env || env->rank == 0;
}

void check_launch_options(const LaunchOptions& o) {
  const MeshShape& m = o.shape;
  if (m.pp < 1 || m.ep < 1 || m.dp < 1)
    throw Error(fmt::format("a mesh needs at least one rank in each dimension (got {} x {} x {})", m.pp, m.ep, m.dp));
  // A day at most: beyond it a stalled rank is never reported in practice.
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(o.timeout).count();
  if (seconds < 1 || seconds > 86400)
    throw Error(fmt::format("--timeout must be in 1..86400 seconds (got {})", seconds));
  if (o.intra_op_threads < 1 || o.intra_op_threads > 1024)
    throw Error(fmt::format("--intra-op-threads must be in 1..1024 (got {})", o.intra_op_threads));
  if (o.emulate_hosts < 0) throw Error(fmt::format("--emulate-hosts must be at least 0 (got {})", o.emulate_hosts));
  if (o.emulate_hosts > 0 && o.threads)
    throw Error("--emulate-hosts runs rank processes: it does not go with --threads");
  if (o.max_restarts < 0 || o.max_restarts > 100)
    throw Error(fmt::format("--max-restarts must be in 0..100 (got {})", o.max_restarts));
  if (o.max_restarts > 0 && o.threads)
    throw Error("--max-restarts restarts rank processes: it does not go with --threads");
  require_backend(o.backend);
  // This launch starts every rank here (threads, local or emulated hosts), unless it is one of a launcher's.
  if (o.threads || !rank_from_env()) require_devices(o.backend, m.size());
}

namespace {

// Starts the rank processes inside an emulated cluster and waits for them;
// the cluster is removed when this returns or throws (and, should the
// launcher die, by the kernel: its namespaces die with their holders).
int run_on_emulated_hosts(const LaunchOptions& o) {
  const MeshShape& shape = o.shape;
  const LinkRate rate = parse_link_rate(o.link_rate);
  const std::vector<int> host_of = place_ranks(shape.pp, shape.ep * shape.dp, o.emulate_hosts);
  require_root_and_netns();
  EmulatedCluster cluster(o.emulate_hosts, rate);
  std::string where;
  for (int r = 0; r < shape.size(); ++r) where += fmt::format("{}{}:{}", r ? " " : "", r, host_of[r]);
  fmt::print(stderr, "emulated cluster: {} hosts at {} per link (rank:host {})\n", o.emulate_hosts, o.link_rate, where);
  const std::vector<std::string> cmd = rank_command(o.args);
  return with_restarts(o.max_restarts, shape.size(), [&](int restart) {
    std::vector<pid_t> pids;
    for (int r = 0; r < shape.size(); ++r) {
      auto env = emulated_rank_env(cluster, host_of, r);
      for (auto& kv : spawned_rank_env(o.intra_op_threads, restart)) env.push_back(std::move(kv));
      pids.push_back(cluster.spawn(host_of[r], cmd, env));
    }
    return supervise_ranks(pids);
  });
}

// Why a rendezvous failed when the store knows who never came.
std::string never_came(const std::string& ranks) {
  return "rank(s) " + ranks + " never reached the store: are they started?";
}

// This process as rank env.rank of a torchrun-style launch: connect (every
// wait bounded by the timeout, one line for what went wrong), then the body.
int run_as_env_rank(const LaunchOptions& o, const RankEnv& env, const std::function<int(const Mesh&)>& body) {
  const MeshShape& shape = o.shape;
  const long timeout_s = static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(o.timeout).count());
  if (env.world != shape.size())
    throw Error(shape.size() > shape.pp
                    ? fmt::format("WORLD_SIZE={} but the mesh has {} ranks ({} pipeline x {} expert x {} data)",
                                  env.world, shape.size(), shape.pp, shape.ep, shape.dp)
                    : fmt::format("WORLD_SIZE={} but the schedule has {} ranks", env.world, shape.size()));
  // One intra-op thread per rank by default, also where no launcher of ours set OMP_NUM_THREADS.
  set_compute_threads(o.intra_op_threads);
  require_resolvable(env.master_addr, env.master_port);
  // The store client's listener thread reads what the store sends for as
  // long as the run lasts; what it cannot take ends the rank in one line.
  UncaughtAsOneLine uncaught(fmt::format("rank {}: the rendezvous store at {}:{} sent what no store sends; is "
                                         "that port free of other programs?",
                                         env.rank, env.master_addr, env.master_port));
  // How long a failed rendezvous asks the store which ranks never came: a
  // LibTorch 2.x store client takes about 0.3 s to connect and ask here, and
  // over a second on a loaded machine.
  constexpr std::chrono::seconds kStoreQuestion{3};
  // The one line of a rendezvous that failed, for `why`.
  auto cannot_meet = [&env, timeout_s](const std::string& why) {
    return fmt::format("rank {}: cannot meet the other ranks at {}:{} within {} s ({})", env.rank, env.master_addr,
                       env.master_port, timeout_s, why);
  };
  Mesh mesh;
  try {
    // Every wait of the rendezvous is bounded by the timeout, plus a second
    // for the waits inside to report what they waited for first; then the
    // store, if it answers, says which ranks never reached it.
    RendezvousDeadline deadline(o.timeout + std::chrono::seconds(1), [&env, cannot_meet, kStoreQuestion] {
      const std::string missing = missing_ranks(env.master_addr, env.master_port, env.world, kStoreQuestion);
      return cannot_meet(missing.empty() ? "no rendezvous completed: are all ranks started, and is that port free "
                                           "of other programs?"
                                         : never_came(missing));
    });
    if (env.rank != 0) require_rendezvous_store(env.master_addr, env.master_port, o.timeout);
    mesh = connect_env_mesh(env, shape, o.timeout, o.backend);
  } catch (const Error&) {
    throw;
  } catch (const RanksNeverCame& e) {
    throw Error(cannot_meet(never_came(e.what())));
  } catch (const NotAStore& e) {
    // No store to ask which ranks are missing: a store client reading that
    // program's bytes would abort the process from LibTorch's own thread.
    throw Error(cannot_meet(e.what()));
  } catch (const std::exception& e) {
    const std::string why = e.what(), line = why.substr(0, why.find('\n'));
    // The store's port taken: the bind fails at once, not after the timeout.
    if (env.rank == 0 && compat::is_address_in_use(line))
      throw Error(fmt::format("rank 0: cannot start the rendezvous store on {}:{}: the port is in use by another "
                              "program (choose another MASTER_PORT)",
                              env.master_addr, env.master_port));
    const std::string missing = missing_ranks(env.master_addr, env.master_port, env.world, kStoreQuestion);
    throw Error(cannot_meet(line + (missing.empty() ? "" : "; rank(s) " + missing + " never reached the store")));
  }
  try {
    return body(mesh);
  } catch (const PeerError& e) {
    // Leave at once: unwinding would destroy the process groups, whose
    // destructors wait for Gloo work still blocked on the dead or stalled peer.
    fmt::print(stderr, "dualpipe: error: {}\n", e.what());
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(2);
  }
}

}  // namespace

int launch(const LaunchOptions& o, const std::function<int(const Mesh&)>& body) {
  check_launch_options(o);
  if (o.threads) {
    set_compute_threads(o.intra_op_threads);
    std::vector<int> codes(o.shape.size(), 0);
    run_mesh_threads(o.shape, [&](const Mesh& mesh) { codes[mesh.rank] = body(mesh); }, o.timeout, o.backend);
    return codes[0];
  }
  if (const auto env = rank_from_env()) return run_as_env_rank(o, *env, body);
  if (o.emulate_hosts > 0) return run_on_emulated_hosts(o);
  return with_restarts(o.max_restarts, o.shape.size(),
                       [&](int restart) { return spawn_attempt(o.shape.size(), o.args, o.intra_op_threads, restart); });
}

void check_same_settings(const RankSettings& mine, Comm& world) {
  // name=value lines, each a byte in a double (exact), zero-padded: the
  // SUM of rows that only their own rank fills is every rank's text.
  constexpr int64_t kBytes = 2048;
  std::string text;
  for (const auto& [name, value] : mine) text += name + "=" + value + "\n";
  text.resize(static_cast<std::size_t>(kBytes), '\0');
  torch::Tensor t = torch::zeros({world.world, kBytes}, torch::kFloat64);
  double* row = t.data_ptr<double>() + static_cast<int64_t>(world.rank) * kBytes;
  for (int64_t i = 0; i < kBytes; ++i) row[i] = static_cast<unsigned char>(text[static_cast<std::size_t>(i)]);
  world.all_reduce(t, c10d::ReduceOp::SUM, "the exchange of every rank's settings");
  auto settings_of = [&](int r) {
    std::string s;
    const double* v = t.data_ptr<double>() + static_cast<int64_t>(r) * kBytes;
    for (int64_t i = 0; i < kBytes && v[i] != 0; ++i) s += static_cast<char>(static_cast<unsigned char>(v[i]));
    RankSettings out;
    for (std::size_t at = 0; at < s.size();) {
      const std::size_t end = std::min(s.find('\n', at), s.size()), eq = s.find('=', at);
      if (eq < end) out.emplace_back(s.substr(at, eq - at), s.substr(eq + 1, end - eq - 1));
      at = end + 1;
    }
    return out;
  };
  const auto first = settings_of(0);
  for (int r = 1; r < world.world; ++r) {
    const auto other = settings_of(r);
    for (std::size_t i = 0; i < std::max(first.size(), other.size()); ++i) {
      const std::string name = i < first.size() ? first[i].first : other[i].first;
      const std::string a = i < first.size() ? first[i].second : "(none)", b = i < other.size() ? other[i].second : "(none)";
      if ((i < other.size() && other[i].first != name) || a != b)
        throw Error(fmt::format("the ranks were started with different settings: {} is {} on rank 0 but {} on rank {} "
                                "(start every rank with the same options)",
                                name, a, b, r));
    }
  }
}

}  // namespace dualpipe
