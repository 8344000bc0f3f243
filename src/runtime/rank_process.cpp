#include "runtime/rank_process.h"

#include <dlfcn.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <fmt/format.h>
#include <torch/torch.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>

#include "dualpipe/runtime/launch.h"
#include "dualpipe/runtime/torch_compat.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {

void quiet_library_logging() {
  if (std::getenv("GLOG_minloglevel")) return;
  // glog's flag by its symbol (Debian's LibTorch loads glog; this program
  // does not link it itself). 3 is FATAL, which ends the process anyway.
  if (auto* level = static_cast<int*>(dlsym(RTLD_DEFAULT, "_ZN3fLI17FLAGS_minloglevelE"))) *level = 3;
  // LibTorch built without glog (PyTorch's wheels) logs through c10's own
  // logger, whose threshold is the global FLAGS_caffe2_log_level (3: FATAL too).
  if (auto* level = static_cast<int*>(dlsym(RTLD_DEFAULT, "FLAGS_caffe2_log_level"))) *level = 3;
}

void set_compute_threads(int n) {
  at::set_num_threads(n);
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(n);
}

ComputeThreads compute_threads() {
  ComputeThreads t;
  t.intra_op = at::get_num_threads();
  using GetThreads = int (*)();
  if (auto get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) t.blas = get();
  return t;
}

void require_resolvable(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (found) freeaddrinfo(found);
  if (rc != 0)
    throw Error(fmt::format("MASTER_ADDR '{}' has no address: {} (set MASTER_ADDR to rank 0's host name or IP)", host,
                            rc == EAI_SYSTEM ? "system error" : gai_strerror(rc)));
}

namespace {

// A connected socket to host:port, or -1 if none accepts before `deadline`.
int connect_until(const std::string& host, int port, std::chrono::steady_clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  do {
    addrinfo* found = nullptr;
    if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) == 0) {
      for (addrinfo* a = found; a; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          freeaddrinfo(found);
          return fd;
        }
        ::close(fd);
      }
      freeaddrinfo(found);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // rank 0 may not listen yet
  } while (std::chrono::steady_clock::now() < deadline);
  return -1;
}

std::string& uncaught_context() {
  static std::string context;
  return context;
}

[[noreturn]] void uncaught_as_one_line() {
  std::string why = "an unknown exception";
  if (std::exception_ptr e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      why = x.what();
    } catch (...) {
    }
  }
  std::fflush(stdout);
  fmt::print(stderr, "dualpipe: error: {} ({})\n", uncaught_context(), why.substr(0, why.find('\n')));
  std::fflush(stderr);
  std::_Exit(2);
}

}  // namespace

void require_rendezvous_store(const std::string& host, int port, std::chrono::milliseconds timeout) {
  const int fd = connect_until(host, port, std::chrono::steady_clock::now() + timeout);
  if (fd < 0) return;
  // A store speaks only when asked: anything that arrives unasked within a
  // moment comes from another kind of program.
  pollfd p{fd, POLLIN, 0};
  int ready = 0;
  do {
    ready = ::poll(&p, 1, 200);
  } while (ready < 0 && errno == EINTR);
  char byte = 0;
  const bool spoke = ready > 0 && ::recv(fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK) > 0;
  ::close(fd);
  if (spoke)
    throw NotAStore(fmt::format("the program on port {} is not a rendezvous store: it sent bytes before it was asked "
                                "anything; is that port free of other programs?",
                                port));
}

UncaughtAsOneLine::UncaughtAsOneLine(std::string context) {
  uncaught_context() = std::move(context);
  previous_ = std::set_terminate(uncaught_as_one_line);
}

UncaughtAsOneLine::~UncaughtAsOneLine() { std::set_terminate(previous_); }

RendezvousDeadline::RendezvousDeadline(std::chrono::milliseconds after, std::function<std::string()> message)
    : thread_([this, after, message = std::move(message)] {
        std::unique_lock<std::mutex> lock(mu_);
        if (cv_.wait_for(lock, after, [this] { return done_; })) return;
        // The rendezvous is stuck inside LibTorch, which cannot be
        // interrupted: leave now, as a rank does after a peer failure.
        std::fflush(stdout);
        fmt::print(stderr, "dualpipe: error: {}\n", message());
        std::fflush(stderr);
        std::_Exit(2);
      }) {}

RendezvousDeadline::~RendezvousDeadline() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::string arrival_key(int rank) { return "dualpipe/arrived/" + std::to_string(rank); }

std::string absent_ranks(c10d::Store& store, int world) {
  // Rank 0 holds the store: only the others are asked about.
  std::string missing;
  for (int r = 1; r < world; ++r)
    if (!store.check({arrival_key(r)})) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
  return missing;
}

std::string missing_ranks(const std::string& host, int port, int world, std::chrono::milliseconds limit) {
  // On a thread of its own, left behind if the store does not answer in
  // time (the process is about to end).
  auto ask = std::make_shared<std::promise<std::string>>();
  std::future<std::string> answer = ask->get_future();
  std::thread([ask, host, port, world, limit] {
    try {
      auto store = compat::make_tcp_store(host, port, false, world, limit);
      ask->set_value(absent_ranks(*store, world));
    } catch (...) {
      ask->set_value("");
    }
  }).detach();
  if (answer.wait_for(limit) != std::future_status::ready) return "";
  return answer.get();
}

}  // namespace dualpipe
