#include "cli/rank_process.h"

#include <dlfcn.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <fmt/format.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "dualpipe/schedule/error.h"

namespace dualpipe::cli {

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

RendezvousDeadline::RendezvousDeadline(std::chrono::milliseconds after, std::string message)
    : thread_([this, after, message = std::move(message)] {
        std::unique_lock<std::mutex> lock(mu_);
        if (cv_.wait_for(lock, after, [this] { return done_; })) return;
        // The rendezvous is stuck inside LibTorch, which cannot be
        // interrupted: leave now, as a rank does after a peer failure.
        std::fflush(stdout);
        fmt::print(stderr, "dualpipe: error: {}\n", message);
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

}  // namespace dualpipe::cli
