#pragma once
// The overlap engine: one per rank. It runs the two halves of an F&B pair
// (or of an F&F pair: two forwards, the second in the Backward half's place)
// in a fixed turn order, puts the rank's collectives on one communication lane,
// imitates a device (optional), and accounts for every wait.
//
// Turn order. The forward half and the backward half of a pair run as two
// tasks, and exactly one of them holds the turn (computes) at any time. They
// alternate at data all-to-all posts only: a half posts its dispatch,
// combine, or their gradients (exchange()), gives the turn to the other half,
// and waits for its transfer when the turn comes back. Every other wait (the
// token-count exchange, a pipeline receive) keeps the turn. The backward
// half starts, as in Megatron-LM's combined 1F1B: its first transfer (a
// combine gradient) travels while the forward computes attention. So within
// each MoE block the program order is the same on every rank and every step:
//
//   compute: B up to its combine-grad | F attention+router | B experts' backward | F experts | B attention's backward ...
//   lane:                     B combine-grad | F dispatch  |       B dispatch-grad | F combine | ...
//
// every transfer on the wire while the other half runs attention or
// experts, and expert peers, which run the same action lists, post the same
// collectives in the same order. A half that ends gives the turn away for
// good; the other one then runs alone (its waits are exposed, or filled
// with weight-gradient work, below).
//
// One lane. Collectives (all-to-alls, counts) are posted on one lane thread
// per rank and run there one at a time, to completion, in posting order: the
// rank's link carries one bulk collective at a time, and posting order is
// wire order. Gradient reductions are posted on the lane in their turn but
// do not hold it (post_background). Pipeline sends and receives are point to point
// and stay off the lane (a send waiting for its receiver on the lane could
// block a collective the receiver needs first); a pair takes both halves'
// pipeline receives before it starts.
//
// Device emulation (factor K > 0). Compute pieces are the stretches between
// hand-over points of a chunk (F, B, I or W of one stage on one micro-batch).
// Every piece really runs (gradients stay exact); then the task sleeps until
// K times the piece's calibrated cost has passed since it began, as a GPU's
// asynchronous kernels would keep the device busy while the host waits. A
// sleep wakes late (0.1-0.2 ms on a loaded machine, a few hundred times a
// step): the emulated device keeps its own clock, so what one piece
// overslept comes off the next ones (never below their real compute) unless
// the rank stood idle meanwhile (a wait, a hand-over), when the device would
// have waited anyway. The calibration is each piece's thread CPU time (the
// median over the micro-batches of one step), measured once per run with
// emulation off.
//
// Filling waits. A turn holder that must wait for its all-to-all while the
// other half cannot take the turn (a chunk alone, a pair whose other half has
// ended, or a half whose turn came back before its transfer finished) first
// runs deferred weight-gradient work, one closure at a time, while the
// transfer is in flight (set_filler; the executor hands out the queued
// weight gradients of the backward in progress). Each closure is a compute
// piece of its own, keyed (W, stage, its index in the chunk), so a W action
// and the same closure run in a wait share one calibration.
//
// Accounting. Exposed time is time when the turn holder does not compute: it
// waits for a transfer (charged to the communication point, and of an
// all-to-all the part beyond the transfer's wire time at the known link rate
// to "peer_wait": the expert peer was late), or it has just been given the
// turn and is not yet running ("handover": thread wake-up latency).
//
// Thread-safety: every public member may be called from the two tasks of a
// pair and the stepping thread (internally locked). Ownership: owns its lane
// and pair-worker threads, joined on destruction. Not copyable.
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "dualpipe/runtime/comm.h"
#include "dualpipe/schedule/action.h"

namespace dualpipe {

// The half of a pair a piece of work belongs to. Outside a pair, F runs as
// Forward and B, I, W as Backward; in an F&F pair (two forwards, Op::FF) the
// first forward is Forward and the second Backward. MoE layers know their
// half from the direction of their traffic (gradients: Backward; forward
// all-to-alls: forward_traffic_half()), not from the calling thread, so
// autograd may run a backward node on any thread (a CUDA device's) and the
// turn order still holds.
enum class Half { Forward = 0, Backward = 1 };

// The half a forward's all-to-alls belong to on the calling thread: Forward,
// but Backward while a ForwardTrafficHalf says so (the second forward of an
// F&F pair). A forward runs on its task's thread, on CPU and CUDA alike, so
// a thread-local tells its half.
Half forward_traffic_half();
// Sets forward_traffic_half() for the calling thread while it lives.
class ForwardTrafficHalf {
 public:
  explicit ForwardTrafficHalf(Half h);
  ~ForwardTrafficHalf();
  ForwardTrafficHalf(const ForwardTrafficHalf&) = delete;
  ForwardTrafficHalf& operator=(const ForwardTrafficHalf&) = delete;

 private:
  Half saved_;
};

// Where a rank waited for communication.
enum class CommPoint { Dispatch = 0, Combine, CombineGrad, DispatchGrad, Counts, Pipeline, GradReduce };
inline constexpr int kCommPoints = 7;
const char* comm_point_name(CommPoint p);  // "dispatch", "combine", ...
bool is_all_to_all(CommPoint p);           // the MoE points (counts included)

// Time a rank stood with nothing computing, by cause (seconds).
struct ExposedComm {
  double all_to_all = 0;   // waiting for MoE all-to-alls on the wire (counts included)
  double pipeline = 0;     // waiting for pipeline receives
  double grad_reduce = 0;  // waiting for data-parallel gradient reductions
  double handover = 0;     // between being given the turn (or a completed transfer) and running
  double peer_wait = 0;    // of the all-to-all waits: beyond the wire time, the peer being late
  std::array<double, kCommPoints> by_point{};  // link + peer time per point (handover excluded)
  // Not exposed: weight-gradient work run inside all-to-all waits
  // (EngineOptions::fill_waits), time that would have been exposed.
  double filled = 0;
  // The data all-to-alls these waits were for (token counts excluded): how
  // many, and their link bytes together (each the larger of what the rank
  // sent and received: its upload and download are links of one rate).
  double a2a_exchanges = 0, a2a_link_bytes = 0;
  double total() const { return all_to_all + pipeline + grad_reduce + handover + peer_wait; }
  ExposedComm operator-(const ExposedComm& o) const;
};

// One stretch of exposed time (seconds on the steady clock's epoch).
struct IdleSpan {
  double start = 0, end = 0;
  CommPoint point = CommPoint::Pipeline;
};

// One collective that ran on the lane, for tests and the measured timeline
// (seconds on the steady clock's epoch).
struct LaneRecord {
  std::string group;  // the Comm's name
  CommPoint point = CommPoint::Dispatch;
  Half half = Half::Forward;
  int64_t bytes = 0;  // over the rank's link: the larger of what it sends and receives
  double posted = 0, started = 0, done = 0;
  // The poster's exposed wait for it (nothing computed meanwhile); equal
  // when it did not wait (the transfer was done, or filled by other work).
  double wait_from = 0, wait_to = 0;
};

struct EngineOptions {
  bool lane = true;            // collectives on one ordered lane (off: posted directly, as before)
  // Backward chunks leave their weight gradients to run in their own
  // all-to-all waits (and what is left, after their input gradient is
  // sent); needs the lane. Off: computed inline, every wait exposed.
  bool fill_waits = true;
  double device_factor = 0;    // K of the device emulation; 0: off
  double link_bytes_per_s = 0; // the rank's link rate when known (peer_wait split); 0: unknown
  // Test hook: called at the end of every compute piece with its half (e.g.
  // to add random delays); null in normal runs.
  std::function<void(Half)> on_piece_end;
};

// A collective posted on the lane. Ownership: shared by the poster and the lane.
class LaneTicket;
using LaneTicketPtr = std::shared_ptr<LaneTicket>;

// The key of a compute piece for calibration: (op, stage, piece index in its chunk).
using PieceKey = std::tuple<int, int, int>;

class OverlapEngine {
 public:
  explicit OverlapEngine(EngineOptions o = {});
  ~OverlapEngine();
  OverlapEngine(const OverlapEngine&) = delete;
  OverlapEngine& operator=(const OverlapEngine&) = delete;

  const EngineOptions& options() const { return opt_; }

  // ---- F&B pairs
  // Runs `fwd` on the calling thread and `bwd` on the engine's worker in
  // turn order (the backward starts; in an F&F pair `bwd` is the second
  // forward, under a ForwardTrafficHalf(Half::Backward)). Rethrows the first error of either half
  // after both ended.
  void run_pair(const std::function<void()>& fwd, const std::function<void()>& bwd);

  // ---- chunks and pieces (device emulation, calibration)
  void begin_chunk(Half h, Op op, int stage);
  void end_chunk(Half h);

  // ---- communication
  // Posts a collective on the lane (`post` runs on the lane thread and must
  // own what it posts). `what` names it in errors. Without a lane, posts at once.
  LaneTicketPtr post(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                     std::function<compat::WorkPtr()> post);
  // Posts a collective that must not hold the lane: a gradient reduction,
  // whose holders include ranks that run other action lists (the two copies
  // of a DualPipe stage) and reach it at other times; holding the lane until
  // they do would stop this rank's all-to-alls, which they may need first.
  // The lane posts it in its turn (so posting order stays lane order) and
  // goes on; wait() waits for its completion.
  LaneTicketPtr post_background(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                                std::function<compat::WorkPtr()> post);
  // Posts a small collective at once on the calling thread, beside the lane
  // (which may be carrying a bulk transfer): its group must carry nothing
  // else, so that posting order on the group is the poster's program order.
  // wait() waits for it, keeping the turn; no wait is filled for it.
  LaneTicketPtr post_aside(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                           std::function<compat::WorkPtr()> post);
  // A hand-over point: posts like post(), ends the half's compute piece,
  // gives the turn to the other half of a pair while the transfer runs, and
  // returns once it is complete and the turn is back.
  void exchange(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                std::function<compat::WorkPtr()> post);
  // Waits for a posted collective, keeping the turn.
  void wait(Half h, const LaneTicketPtr& t);
  // Waits for point-to-point work (a pipeline receive), keeping the turn.
  template <class Describe>
  void wait_work(Half h, const Comm& comm, const compat::WorkPtr& work, CommPoint p, int peer, Describe&& describe) {
    const double t0 = now();
    close_piece(h);
    comm.wait(work, peer, describe);
    charge(p, t0, now(), 0);
  }

  // ---- accounting
  ExposedComm exposed() const;
  std::vector<IdleSpan> take_idle_spans();
  std::vector<LaneRecord> take_lane_records();
  // Pieces whose real compute outlasted K times their calibrated cost.
  int overruns() const;
  // Seconds the device emulation's sleeps woke after their targets, summed
  // (what the device's clock made up, or idle time absorbed).
  double overslept() const;
  // Whether any data all-to-all went through exchange() yet (a rank whose
  // stages have none has no waits to fill).
  bool has_exchanged() const { return exchanged_.load(); }

  // ---- weight-gradient work in waits
  // `fill(h)` runs one piece of deferred work (through run_piece) and says
  // whether it found any; called on the waiting half's thread, never while
  // the engine's lock is held. Null: waits are not filled. Set before steps
  // run; the setter must clear it before whatever it calls goes away.
  void set_filler(std::function<bool(Half)> fill);
  // Runs `work` as one compute piece of its own, keyed (op, stage, piece), in
  // half `h` (device emulation, calibration); the chunk `h` was running
  // continues its own pieces afterwards.
  void run_piece(Half h, Op op, int stage, int piece, const std::function<void()>& work);

  // ---- calibration
  // While on, pieces record their thread CPU time (emulation is off).
  void set_calibrating(bool on);
  // Median CPU seconds per piece recorded while calibrating, sorted by key.
  std::map<PieceKey, double> calibration() const;
  // Sets the costs the emulation uses (e.g. averaged over expert peers so
  // that they run alike).
  void set_calibration(std::map<PieceKey, double> costs);

  static double now();  // seconds on the steady clock's epoch

 private:
  struct Task {
    Op op = Op::F;
    int stage = 0, piece = 0;
    bool open = false;
    double wall0 = 0, cpu0 = 0;
  };
  LaneTicketPtr enqueue(Half h, CommPoint p, const Comm& comm, int64_t bytes, std::string what,
                        std::function<compat::WorkPtr()> post, bool background);
  void open_piece(Half h);
  void close_piece(Half h);
  void handover(Half h);
  void charge(CommPoint p, double from, double to, double beyond_wire);
  void add_handover(double s);
  void idle_absorbs_lateness(double idle);
  void fill_while_in_flight(Half h, const LaneTicketPtr& t);
  // Whether the lane runs `t` to completion (else its poster waits for its work).
  bool on_lane(const LaneTicket& t) const;
  void lane_loop();
  void worker_loop();

  EngineOptions opt_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // pair state
  bool pair_ = false;
  bool alive_[2] = {false, false};
  Half turn_ = Half::Forward;
  double passed_at_ = 0;
  std::array<Task, 2> task_;
  // accounting
  ExposedComm exposed_;
  std::vector<IdleSpan> spans_;
  std::vector<LaneTicketPtr> records_;  // completed, in lane order; their waits fill in wait_from/wait_to
  int overruns_ = 0;
  std::atomic<bool> exchanged_{false};
  std::function<bool(Half)> filler_;
  // calibration
  bool calibrating_ = false;
  std::map<PieceKey, std::vector<double>> samples_;
  std::map<PieceKey, double> costs_;
  // Device emulation: how much later than their targets sleeps have woken,
  // not yet made up by shorter pieces or idle time (close_piece); at most
  // kMaxLate, so that a rank stopped for long does not run its next pieces
  // at their bare compute for a long stretch.
  double late_ = 0;
  double overslept_ = 0;  // all of it, for overslept()
  static constexpr double kMaxLate = 50e-3;
  // lane
  std::deque<LaneTicketPtr> lane_queue_;
  bool stop_ = false;
  std::thread lane_thread_;
  // pair worker
  std::function<void()> job_;
  bool has_job_ = false, job_done_ = false;
  std::exception_ptr job_error_;
  std::thread worker_thread_;
};

}  // namespace dualpipe
