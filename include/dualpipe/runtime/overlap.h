#pragma once
// Overlapped F&B: the forward of one micro-batch and the backward of another
// run as two tasks on one rank that hand a compute baton to each other at
// their communication points, as DeepSeek-V3 interleaves the pieces of an
// F&B pair so that each all-to-all runs while the other chunk computes.
//
// Only the holder of the baton computes. A task that reaches a
// communication point (a layer waiting for its all-to-all, the executor
// waiting for a pipeline transfer) calls comm_wait(): it releases the baton,
// waits for its transfer, and takes the baton back once the other task
// reaches its own communication point or ends. So the communication of one
// task runs while the other computes, and nothing computes concurrently.
//
// Any layer can take part: it declares a communication point by waiting
// through comm_wait() instead of Comm::wait(). Outside an executor step (the
// unpipelined reference, tests) comm_wait() is a plain wait.
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "dualpipe/runtime/comm.h"

namespace dualpipe {

// What a rank waited for, for the exposed-communication figures.
enum class CommKind { Pipeline = 0, AllToAll = 1 };

// The time a rank spent with no task computing, waiting for communication.
struct ExposedComm {
  double pipeline = 0, all_to_all = 0;  // seconds
  double total() const { return pipeline + all_to_all; }
};

// One stretch of time in which no task computed, waiting for `kind`
// (seconds on the steady clock's epoch).
struct IdleSpan {
  double start = 0, end = 0;
  CommKind kind = CommKind::Pipeline;
};

// Lets one task of a rank compute at a time and charges idle time to the
// communication waited for. Thread-safety: safe to call from several threads
// (internally locked); that is its purpose. Not copyable.
class ComputeBaton {
 public:
  // Blocks until no task computes. `after` is the communication the caller
  // waited for: the time the rank stood idle until now is charged to it.
  void acquire(const CommKind* after);
  void release();
  ExposedComm exposed() const;
  // Idle stretches charged since the last call (for measured timelines).
  std::vector<IdleSpan> take_idle_spans();

 private:
  using Clock = std::chrono::steady_clock;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  Clock::time_point idle_since_{};
  bool idle_ = false;
  ExposedComm exposed_;
  std::vector<IdleSpan> spans_;
};

// The baton of the calling thread's task (null outside an executor step).
ComputeBaton* current_baton();

// Makes `b` the calling thread's baton for its lifetime, and holds it.
// Ownership: borrows `b`, which must outlive it. Thread-safety: affects the
// calling thread only; not copyable.
class BatonScope {
 public:
  explicit BatonScope(ComputeBaton* b);
  ~BatonScope();
  BatonScope(const BatonScope&) = delete;
  BatonScope& operator=(const BatonScope&) = delete;

 private:
  ComputeBaton* prev_;
};

// A communication point: waits for `work` like Comm::wait, handing the baton
// to the other task meanwhile when there is one.
template <class Describe>
void comm_wait(const Comm& comm, const compat::WorkPtr& work, CommKind kind, int peer, Describe&& describe) {
  ComputeBaton* b = current_baton();
  if (!b) return comm.wait(work, peer, describe);
  b->release();
  try {
    comm.wait(work, peer, describe);
  } catch (...) {
    b->acquire(nullptr);
    throw;
  }
  b->acquire(&kind);
}

// Runs the two halves of an F&B pair: `fwd` on the calling thread (which
// holds `baton`) and `bwd` on `worker`, handing over at communication points.
// The backward starts when the forward first waits. Rethrows the first
// exception of either half after both ended.
// Ownership: owns its worker thread, joined on destruction. Thread-safety:
// run_pair from one thread at a time. Not copyable.
class OverlapWorker {
 public:
  OverlapWorker();
  ~OverlapWorker();
  OverlapWorker(const OverlapWorker&) = delete;
  OverlapWorker& operator=(const OverlapWorker&) = delete;
  void run_pair(ComputeBaton& baton, const std::function<void()>& fwd, const std::function<void()>& bwd);

 private:
  void loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool has_job_ = false, done_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace dualpipe
