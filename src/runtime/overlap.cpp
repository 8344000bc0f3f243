#include "dualpipe/runtime/overlap.h"

#include <time.h>

#include <algorithm>
#include <utility>

#include "runtime/stats.h"

namespace dualpipe {

const char* comm_point_name(CommPoint p) {
  static const char* names[kCommPoints] = {"dispatch", "combine", "combine_grad", "dispatch_grad",
                                           "counts",   "pipeline", "grad_reduce"};
  return names[static_cast<int>(p)];
}

bool is_all_to_all(CommPoint p) { return static_cast<int>(p) <= static_cast<int>(CommPoint::Counts); }

namespace {
thread_local Half forward_traffic = Half::Forward;
}  // namespace

Half forward_traffic_half() { return forward_traffic; }
ForwardTrafficHalf::ForwardTrafficHalf(Half h) : saved_(forward_traffic) { forward_traffic = h; }
ForwardTrafficHalf::~ForwardTrafficHalf() { forward_traffic = saved_; }

ExposedComm ExposedComm::operator-(const ExposedComm& o) const {
  ExposedComm d;
  d.all_to_all = all_to_all - o.all_to_all;
  d.pipeline = pipeline - o.pipeline;
  d.grad_reduce = grad_reduce - o.grad_reduce;
  d.handover = handover - o.handover;
  d.peer_wait = peer_wait - o.peer_wait;
  d.filled = filled - o.filled;
  d.a2a_exchanges = a2a_exchanges - o.a2a_exchanges;
  d.a2a_link_bytes = a2a_link_bytes - o.a2a_link_bytes;
  for (int i = 0; i < kCommPoints; ++i) d.by_point[i] = by_point[i] - o.by_point[i];
  return d;
}

// What the lane runs, and what it learnt.
class LaneTicket {
 public:
  std::function<compat::WorkPtr()> post;
  const Comm* comm = nullptr;
  std::string what;
  LaneRecord record;
  compat::WorkPtr work;  // without a lane, or in the background: the posted work, waited by the poster
  bool background = false;
  bool aside = false;   // posted at once beside the lane (post_aside)
  bool posted = false;  // background: the lane has posted it
  bool done = false;
  std::exception_ptr error;
  // Done (under the engine's lock): what it posted is let go (the
  // collective's tensors, held by `post` and `work`), so that a ticket kept
  // until the step's end for its record holds the record alone.
  void finish() {
    done = true;
    post = nullptr;
    work = compat::WorkPtr();
  }
};

namespace {

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

Half other(Half h) { return h == Half::Forward ? Half::Backward : Half::Forward; }
int idx(Half h) { return static_cast<int>(h); }

// Runs a ticket's collective to completion (on the lane thread, or inline).
void run_ticket(LaneTicket& t) {
  t.record.started = OverlapEngine::now();
  try {
    compat::WorkPtr w = t.post();
    t.comm->wait(w, -1, [&] { return t.what; });
  } catch (...) {
    t.error = std::current_exception();
  }
  t.record.done = OverlapEngine::now();
}

// Posts a background ticket's collective without waiting for it.
void post_ticket(LaneTicket& t) {
  t.record.started = OverlapEngine::now();
  try {
    t.work = t.post();
  } catch (...) {
    t.error = std::current_exception();
  }
}

}  // namespace

double OverlapEngine::now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

OverlapEngine::OverlapEngine(EngineOptions o) : opt_(std::move(o)) {
  if (opt_.lane) lane_thread_ = std::thread([this] { lane_loop(); });
  worker_thread_ = std::thread([this] { worker_loop(); });
}

OverlapEngine::~OverlapEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (lane_thread_.joinable()) lane_thread_.join();
  worker_thread_.join();
}

// ---- the lane

void OverlapEngine::lane_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !lane_queue_.empty(); });
    if (stop_) {
      // The engine is going away (a step failed): what is still queued is
      // never posted; its posters have left.
      for (const LaneTicketPtr& t : lane_queue_) {
        t->error = std::make_exception_ptr(Error("the rank stopped before this collective was posted"));
        t->finish();
      }
      lane_queue_.clear();
      cv_.notify_all();
      return;
    }
    LaneTicketPtr t = lane_queue_.front();
    lock.unlock();
    if (t->background)
      post_ticket(*t);
    else
      run_ticket(*t);
    lock.lock();
    lane_queue_.pop_front();
    if (t->background) {
      t->posted = true;  // its waiter finishes it
    } else {
      t->finish();
      records_.push_back(t);
    }
    cv_.notify_all();
  }
}

LaneTicketPtr OverlapEngine::post(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                                  std::function<compat::WorkPtr()> post_fn) {
  return enqueue(h, p, comm, bytes, std::move(what), std::move(post_fn), false);
}

LaneTicketPtr OverlapEngine::post_background(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                                             std::function<compat::WorkPtr()> post_fn) {
  return enqueue(h, p, comm, bytes, std::move(what), std::move(post_fn), true);
}

namespace {

LaneTicketPtr make_ticket(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                          std::function<compat::WorkPtr()> post_fn) {
  auto t = std::make_shared<LaneTicket>();
  t->post = std::move(post_fn);
  t->comm = &comm;
  t->what = std::move(what);
  t->record = LaneRecord{comm.name, p, h, bytes, OverlapEngine::now(), 0, 0};
  return t;
}

// Posts on the calling thread; the poster waits for the work.
LaneTicketPtr post_now(LaneTicketPtr t) {
  t->record.started = t->record.posted;
  t->work = t->post();
  t->posted = true;
  return t;
}

}  // namespace

LaneTicketPtr OverlapEngine::post_aside(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                                        std::function<compat::WorkPtr()> post_fn) {
  LaneTicketPtr t = make_ticket(h, p, comm, bytes, std::move(what), std::move(post_fn));
  t->aside = true;
  return post_now(std::move(t));
}

LaneTicketPtr OverlapEngine::enqueue(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                                     std::function<compat::WorkPtr()> post_fn, bool background) {
  LaneTicketPtr t = make_ticket(h, p, comm, bytes, std::move(what), std::move(post_fn));
  t->background = background;
  if (!opt_.lane) return post_now(std::move(t));  // posted at once (transfers may run together)
  {
    std::lock_guard<std::mutex> lock(mu_);
    lane_queue_.push_back(t);
  }
  cv_.notify_all();
  return t;
}

void OverlapEngine::wait(Half h, const LaneTicketPtr& t) {
  close_piece(h);
  fill_while_in_flight(h, t);
  const double t0 = now();
  bool record_here = false;  // a background collective: its record is made here, at its completion
  if (!on_lane(*t)) {  // the poster waits for the work itself
    bool finished;  // waited already, or the lane stopped before posting it
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return t->posted || t->done; });
      finished = t->done;
    }
    if (!finished) {
      try {
        if (!t->error) t->comm->wait(t->work, -1, [&] { return t->what; });
      } catch (...) {
        t->error = std::current_exception();
      }
      t->record.done = now();
      std::lock_guard<std::mutex> lock(mu_);
      t->finish();
      record_here = !t->aside;  // the lane's record: what was on it
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return t->done; });
  }
  const double t1 = now();
  // The wait itself ended when the lane saw the transfer complete; the rest
  // is this thread's wake-up.
  const double done = std::max(t0, std::min(t1, t->record.done));
  double beyond = 0;
  const double rate = opt_.link_bytes_per_s;
  if (rate > 0 && t->record.bytes > 0)
    beyond = std::max(0.0, (t->record.done - t->record.started) - static_cast<double>(t->record.bytes) / rate);
  charge(t->record.point, t0, done, beyond);
  {
    std::lock_guard<std::mutex> lock(mu_);
    add_handover(t1 - done);
    t->record.wait_from = t0;
    t->record.wait_to = done;
    if (record_here) records_.push_back(t);
  }
  if (t->error) std::rethrow_exception(t->error);
}

void OverlapEngine::exchange(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                             std::function<compat::WorkPtr()> post_fn) {
  close_piece(h);
  exchanged_ = true;
  {  // a data all-to-all (the counts are posted, not exchanged)
    std::lock_guard<std::mutex> lock(mu_);
    exposed_.a2a_exchanges += 1;
    exposed_.a2a_link_bytes += static_cast<double>(bytes);
  }
  LaneTicketPtr t = post(h, p, comm, bytes, std::move(what), std::move(post_fn));
  handover(h);
  wait(h, t);
  open_piece(h);
}

// Weight-gradient work while a collective is on the wire: only one the lane
// runs to completion, which says when it is done (not a background
// reduction, nor the small counts beside the lane).
void OverlapEngine::fill_while_in_flight(Half h, const LaneTicketPtr& t) {
  if (!filler_ || !on_lane(*t)) return;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (t->done) return;
    }
    const double t0 = now();
    if (!filler_(h)) return;
    std::lock_guard<std::mutex> lock(mu_);
    exposed_.filled += now() - t0;
  }
}

bool OverlapEngine::on_lane(const LaneTicket& t) const { return opt_.lane && !t.background && !t.aside; }

void OverlapEngine::set_filler(std::function<bool(Half)> fill) { filler_ = std::move(fill); }

void OverlapEngine::run_piece(Half h, Op op, int stage, int piece, const std::function<void()>& work) {
  Task& t = task_[idx(h)];
  close_piece(h);
  const Task saved = t;
  t.op = op;
  t.stage = stage;
  t.piece = piece;
  t.open = false;
  open_piece(h);
  work();
  close_piece(h);
  t = saved;
  t.open = false;  // the chunk's next piece opens where it goes on
}

void OverlapEngine::charge(CommPoint p, double from, double to, double beyond_wire) {
  if (to <= from) return;
  const double s = to - from;
  std::lock_guard<std::mutex> lock(mu_);
  const double peer = std::min(s, beyond_wire);
  switch (p) {
    case CommPoint::Pipeline: exposed_.pipeline += s; break;
    case CommPoint::GradReduce: exposed_.grad_reduce += s; break;
    default:
      exposed_.all_to_all += s - peer;
      exposed_.peer_wait += peer;
  }
  exposed_.by_point[static_cast<int>(p)] += s;
  spans_.push_back({from, to, p});
  idle_absorbs_lateness(s);
}

// ---- turns

void OverlapEngine::handover(Half h) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!pair_ || !alive_[idx(other(h))]) return;
  turn_ = other(h);
  passed_at_ = now();
  cv_.notify_all();
  cv_.wait(lock, [&] { return turn_ == h; });
  add_handover(std::max(0.0, now() - passed_at_));
}

void OverlapEngine::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || has_job_; });
    if (!has_job_) return;
    has_job_ = false;
    auto job = std::move(job_);
    // The backward half starts the pair (it holds the turn from the start).
    cv_.wait(lock, [&] { return turn_ == Half::Backward; });
    add_handover(std::max(0.0, now() - passed_at_));
    lock.unlock();
    std::exception_ptr err;
    try {
      job();
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    alive_[idx(Half::Backward)] = false;
    turn_ = Half::Forward;
    passed_at_ = now();
    job_error_ = err;
    job_done_ = true;
    cv_.notify_all();
  }
}

void OverlapEngine::run_pair(const std::function<void()>& fwd, const std::function<void()>& bwd) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pair_ = true;
    alive_[0] = alive_[1] = true;
    turn_ = Half::Backward;  // the backward starts: its first transfer travels while the forward computes
    passed_at_ = now();
    job_ = bwd;
    has_job_ = true;
    job_done_ = false;
    job_error_ = nullptr;
  }
  cv_.notify_all();
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return turn_ == Half::Forward; });  // given at the backward's first post, or its end
    add_handover(std::max(0.0, now() - passed_at_));
  }
  std::exception_ptr fwd_error;
  try {
    fwd();
  } catch (...) {
    fwd_error = std::current_exception();
  }
  std::exception_ptr bwd_error;
  {
    std::unique_lock<std::mutex> lock(mu_);
    alive_[idx(Half::Forward)] = false;
    if (!job_done_) {
      turn_ = Half::Backward;
      passed_at_ = now();
      cv_.notify_all();
      cv_.wait(lock, [&] { return job_done_; });
    }
    bwd_error = job_error_;
    pair_ = false;
    turn_ = Half::Forward;
  }
  // A half whose wait timed out is the cause when the other half then lost
  // its connection (see PeerError::timed_out).
  if (fwd_error && bwd_error && !is_timeout(fwd_error) && is_timeout(bwd_error)) std::rethrow_exception(bwd_error);
  if (fwd_error) std::rethrow_exception(fwd_error);
  if (bwd_error) std::rethrow_exception(bwd_error);
}

// ---- pieces

void OverlapEngine::begin_chunk(Half h, Op op, int stage) {
  Task& t = task_[idx(h)];
  t.op = op;
  t.stage = stage;
  t.piece = 0;
  t.open = false;
  open_piece(h);
}

void OverlapEngine::end_chunk(Half h) { close_piece(h); }

void OverlapEngine::open_piece(Half h) {
  Task& t = task_[idx(h)];
  if (t.open) return;
  t.open = true;
  t.wall0 = now();
  t.cpu0 = thread_cpu_seconds();
}

void OverlapEngine::close_piece(Half h) {
  Task& t = task_[idx(h)];
  if (!t.open) return;
  t.open = false;
  const PieceKey key{static_cast<int>(t.op), t.stage, t.piece++};
  if (opt_.on_piece_end) opt_.on_piece_end(h);
  if (calibrating_) {
    const double cpu = thread_cpu_seconds() - t.cpu0;
    std::lock_guard<std::mutex> lock(mu_);
    samples_[key].push_back(cpu);
    return;
  }
  if (opt_.device_factor <= 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  auto it = costs_.find(key);
  const double cost = it != costs_.end() ? it->second : thread_cpu_seconds() - t.cpu0;
  const double due = t.wall0 + opt_.device_factor * cost;
  const double start = now();
  if (due <= start) {
    if (cost > 0) ++overruns_;
    return;
  }
  // The device's clock: what earlier sleeps overslept comes off this piece.
  const double target = std::max(start, due - late_);
  late_ -= due - target;
  lock.unlock();
  std::this_thread::sleep_for(std::chrono::duration<double>(target - start));
  const double overslept = now() - target;
  lock.lock();
  late_ = std::min(late_ + overslept, kMaxLate);
  overslept_ += overslept;
}

// Time the device stands idle (the turn holder waiting, a hand-over) absorbs
// what the host overslept: the device would have waited anyway. Both under mu_.
void OverlapEngine::idle_absorbs_lateness(double idle) { late_ = std::max(0.0, late_ - idle); }
void OverlapEngine::add_handover(double s) {
  exposed_.handover += s;
  idle_absorbs_lateness(s);
}

// ---- accounting and calibration

ExposedComm OverlapEngine::exposed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return exposed_;
}

std::vector<IdleSpan> OverlapEngine::take_idle_spans() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(spans_, {});
}

std::vector<LaneRecord> OverlapEngine::take_lane_records() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LaneRecord> out;
  out.reserve(records_.size());
  for (const LaneTicketPtr& t : records_) out.push_back(t->record);
  records_.clear();
  return out;
}

int OverlapEngine::overruns() const {
  std::lock_guard<std::mutex> lock(mu_);
  return overruns_;
}

double OverlapEngine::overslept() const {
  std::lock_guard<std::mutex> lock(mu_);
  return overslept_;
}

void OverlapEngine::set_calibrating(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  calibrating_ = on;
  if (on) samples_.clear();
}

std::map<PieceKey, double> OverlapEngine::calibration() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<PieceKey, double> out;
  for (const auto& [k, v] : samples_) out[k] = median(v);
  return out;
}

void OverlapEngine::set_calibration(std::map<PieceKey, double> costs) {
  std::lock_guard<std::mutex> lock(mu_);
  costs_ = std::move(costs);
}

}  // namespace dualpipe
