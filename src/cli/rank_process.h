#pragma once
// Settings a rank process needs beyond its options: quiet libraries, a fixed
// number of compute threads, and a rendezvous that cannot outlive --timeout.
// Made by the program (the CLI), never by the runtime library.
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

namespace dualpipe::cli {

// LibTorch's c10d and Gloo log through glog, straight to stderr: a rank
// waiting for an unreachable MASTER_ADDR printed one warning a second, and a
// timeout two more lines before dualpipe's own. Errors reach the user as
// dualpipe's one line (the exception's text), so glog is limited to FATAL.
// A user who sets GLOG_minloglevel keeps what they asked for.
void quiet_library_logging();

// Compute threads of one rank: LibTorch's intra-op pool and OpenBLAS's own
// threads, which LibTorch's setting does not reach (OpenBLAS sizes its pool
// from OMP_NUM_THREADS when it is loaded: a torchrun-style rank without that
// variable ran every matrix product on every core, 2-3.6x slower steps).
void set_compute_threads(int n);

struct ComputeThreads {
  int intra_op = 0;  // at::get_num_threads()
  int blas = -1;     // openblas_get_num_threads(); -1: not OpenBLAS
};
ComputeThreads compute_threads();

// Throws dualpipe::Error at once when `host` (MASTER_ADDR) has no address: c10d
// would retry the lookup every second until --timeout.
void require_resolvable(const std::string& host, int port);

// Throws std::runtime_error if the program listening at host:port sends
// bytes before it is asked anything, as no rendezvous store does: c10d's
// store client trusts what it reads (lengths, message kinds), and its
// listener thread aborts the process (std::length_error, SIGABRT) on a
// stream of foreign bytes. Waits for the port to accept up to `timeout`;
// returns quietly if it never does (the store's own connect reports that).
// Connects and closes without a word, which a real store takes as a client
// that went away.
void require_rendezvous_store(const std::string& host, int port, std::chrono::milliseconds timeout);

// While it lives, an exception that escapes a thread (a library's thread,
// where no catch of ours can reach it) ends the process with one line,
// "dualpipe: error: CONTEXT (WHAT)", and exit code 2, instead of
// std::terminate's abort. One at a time, on the main thread.
class UncaughtAsOneLine {
 public:
  explicit UncaughtAsOneLine(std::string context);
  ~UncaughtAsOneLine();
  UncaughtAsOneLine(const UncaughtAsOneLine&) = delete;
  UncaughtAsOneLine& operator=(const UncaughtAsOneLine&) = delete;

 private:
  std::terminate_handler previous_;
};

// Ends the process with one line and exit code 2 if it still lives `after`
// from now: c10d's TCPStore client waits without limit for an answer from a
// program that accepted its connection but is no rendezvous store, and the
// store's own waits add up to more than --timeout. Destroying it disarms it.
class RendezvousDeadline {
 public:
  RendezvousDeadline(std::chrono::milliseconds after, std::string message);
  ~RendezvousDeadline();
  RendezvousDeadline(const RendezvousDeadline&) = delete;
  RendezvousDeadline& operator=(const RendezvousDeadline&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace dualpipe::cli
