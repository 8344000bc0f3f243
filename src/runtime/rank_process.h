#pragma once
// The launcher's guards around a torchrun-style rendezvous (launch.cpp): a
// name that does not resolve, a port held by a program that is no store, an
// exception on a library thread, a store that never answers. Internal to the
// runtime; the public side is launch.h.
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

namespace c10d {
class Store;
}

namespace dualpipe {

// The key a rank sets in the rendezvous store as soon as it reaches it, so
// that a rendezvous that never completes can name the ranks that never came.
std::string arrival_key(int rank);

// The ranks (comma-separated) of 1..world-1 whose arrival key `store` lacks.
std::string absent_ranks(c10d::Store& store, int world);

// The ranks of 1..world-1 (rank 0 holds the store) that have not set their
// arrival key in the store at host:port, asked through a connection of its own and bounded by `limit`;
// "" when the store cannot say in time (or every rank arrived).
std::string missing_ranks(const std::string& host, int port, int world, std::chrono::milliseconds limit);

// Throws dualpipe::Error at once when `host` (MASTER_ADDR) has no address: c10d
// would retry the lookup every second until --timeout.
void require_resolvable(const std::string& host, int port);

// Throws NotAStore if the program listening at host:port sends
// bytes before it is asked anything, as no rendezvous store does: c10d's
// store client trusts what it reads (lengths, message kinds), and its
// listener thread aborts the process (std::length_error, SIGABRT) on a
// stream of foreign bytes. Waits for the port to accept up to `timeout`;
// returns quietly if it never does (the store's own connect reports that).
// Connects and closes without a word, which a real store takes as a client
// that went away.
struct NotAStore : std::runtime_error {
  using std::runtime_error::runtime_error;
};
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
// store's own waits add up to more than --timeout. The line is message(),
// asked for then (it may say who never came). Destroying it disarms it.
class RendezvousDeadline {
 public:
  RendezvousDeadline(std::chrono::milliseconds after, std::function<std::string()> message);
  ~RendezvousDeadline();
  RendezvousDeadline(const RendezvousDeadline&) = delete;
  RendezvousDeadline& operator=(const RendezvousDeadline&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace dualpipe
