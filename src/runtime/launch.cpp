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
#include <vector>

#include "dualpipe/schedule/error.h"

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

std::shared_ptr<Comm> connect_env(const RankEnv& env, std::chrono::milliseconds timeout) {
  auto store = compat::make_tcp_store(env.master_addr, env.master_port, env.rank == 0, env.world, timeout);
  const bool local = env.master_addr == "127.0.0.1" || env.master_addr == "localhost";
  return connect(store, env.rank, env.world, timeout, local);
}

Mesh connect_env_mesh(const RankEnv& env, const MeshShape& shape, std::chrono::milliseconds timeout) {
  auto store = compat::make_tcp_store(env.master_addr, env.master_port, env.rank == 0, env.world, timeout);
  const bool local = env.master_addr == "127.0.0.1" || env.master_addr == "localhost";
  return connect_mesh(store, env.rank, shape, timeout, local);
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

int spawn_local_ranks(int world, int argc, char** argv) {
  const int port = free_local_port();
  const pid_t parent = getpid();
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
      setenv("OMP_NUM_THREADS", "1", 0);
      setenv("DUALPIPE_SPAWNED", "1", 1);
      std::vector<char*> args(argv, argv + argc);
      args.push_back(nullptr);
      execv("/proc/self/exe", args.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  return supervise_ranks(pids);
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
                      std::chrono::milliseconds timeout) {
  auto store = compat::make_hash_store();
  on_threads(world, [&](int r) { fn(connect(store, r, world, timeout)); });
}

void run_mesh_threads(const MeshShape& shape, const std::function<void(const Mesh&)>& fn,
                      std::chrono::milliseconds timeout) {
  auto store = compat::make_hash_store();
  on_threads(shape.size(), [&](int r) { fn(connect_mesh(store, r, shape, timeout)); });
}

}  // namespace dualpipe
