#include "dualpipe/runtime/overlap.h"

#include <utility>

#include "dualpipe/runtime/comm.h"

namespace dualpipe {
namespace {

thread_local ComputeBaton* tl_baton = nullptr;

}  // namespace

void ComputeBaton::acquire(const CommKind* after) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !held_; });
  held_ = true;
  if (idle_) {
    // Nobody computed since the last release: the rank waited on the
    // communication that has just let this task go on.
    const auto now = Clock::now();
    const double s = std::chrono::duration<double>(now - idle_since_).count();
    if (after) {
      (*after == CommKind::AllToAll ? exposed_.all_to_all : exposed_.pipeline) += s;
      auto at = [](Clock::time_point t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); };
      spans_.push_back({at(idle_since_), at(now), *after});
    }
    idle_ = false;
  }
}

void ComputeBaton::release() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = false;
    idle_ = true;
    idle_since_ = Clock::now();
  }
  cv_.notify_one();
}

ExposedComm ComputeBaton::exposed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return exposed_;
}

std::vector<IdleSpan> ComputeBaton::take_idle_spans() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(spans_, {});
}

ComputeBaton* current_baton() { return tl_baton; }

BatonScope::BatonScope(ComputeBaton* b) : prev_(tl_baton) {
  tl_baton = b;
  if (b) b->acquire(nullptr);
}

BatonScope::~BatonScope() {
  if (tl_baton) tl_baton->release();
  tl_baton = prev_;
}

OverlapWorker::OverlapWorker() : thread_([this] { loop(); }) {}

OverlapWorker::~OverlapWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void OverlapWorker::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return has_job_ || stop_; });
    if (stop_) return;
    auto job = std::move(job_);
    has_job_ = false;
    lock.unlock();
    std::exception_ptr err;
    try {
      job();
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    error_ = err;
    done_ = true;
    cv_.notify_all();
  }
}

void OverlapWorker::run_pair(ComputeBaton& baton, const std::function<void()>& fwd, const std::function<void()>& bwd) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The backward task takes the baton (BatonScope) only once the forward
    // releases it: at the forward's first communication point or its end.
    job_ = [&baton, &bwd] {
      BatonScope scope(&baton);
      bwd();
    };
    has_job_ = true;
    done_ = false;
    error_ = nullptr;
  }
  cv_.notify_all();
  std::exception_ptr fwd_error;
  try {
    fwd();
  } catch (...) {
    fwd_error = std::current_exception();
  }
  // Let the backward finish, then hold the baton again for the rest of the step.
  baton.release();
  std::exception_ptr bwd_error;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    bwd_error = error_;
  }
  baton.acquire(nullptr);
  // A half whose wait timed out is the cause when the other half then lost
  // its connection (see PeerError::timed_out).
  if (fwd_error && bwd_error && !is_timeout(fwd_error) && is_timeout(bwd_error)) std::rethrow_exception(bwd_error);
  if (fwd_error) std::rethrow_exception(fwd_error);
  if (bwd_error) std::rethrow_exception(bwd_error);
}

}  // namespace dualpipe
