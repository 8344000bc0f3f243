#pragma once
// Executes one rank's part of a lowered schedule on LibTorch.
//
// The executor walks the rank's action list in order: F, B, I, W, pairs,
// and the SEND/RECV actions the lowering inserted. Receives are posted a few
// compute actions ahead of their position so transfers run during compute;
// a send is posted where the schedule says, and waited on (at once, without
// blocking) as soon as the schedule shows its receiver has it, which frees
// its tensor (see release_sends). A pair (F&B, or two forwards: F&F) takes
// both halves' pipeline receives first, then runs its two halves in the
// overlap engine's turn order (overlap.h); each half's output is sent the
// moment that half ends.
//
// Ownership and threads: the executor shares its schedule (kept alive by the
// shared_ptr), its Comm and its overlap engine; it owns its stages. One
// thread calls step(); the engine runs the backward half of an overlapped
// pair on a worker thread of its own. Not safe to call from several threads
// at once.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/overlap.h"
#include "dualpipe/runtime/split_linear.h"
#include "dualpipe/runtime/stage.h"
#include "dualpipe/schedule/schedule.h"

namespace dualpipe {

// What a caller can get wrong when building an executor: a typed error, so
// that a library user can tell the cases apart without reading the text.
struct SetupError : Error {
  enum Kind { NotLowered, GroupSize, StageCount, BadOption };
  SetupError(Kind k, const std::string& what) : Error(what), kind(k) {}
  Kind kind;
};

struct ExecutorOptions {
  // This pipeline's share of the global batch when several pipelines (expert
  // or data-parallel replicas) each run the schedule on their own
  // micro-batches: its micro-batch mb is the model's micro-batch
  // data_shard * N + mb, and losses are scaled by 1 / (N * data_shards) so
  // that gradients summed over the pipelines are those of the global mean.
  int data_shard = 0;
  int data_shards = 1;
  // Run pairs (F&B, F&F) as two tasks handing over at communication points
  // (off: the first half, then the second; so too on a rank whose stages
  // have no all-to-all, where there is nothing to hide). A stage's own
  // Stage::overlapped hook, when it has one, runs an F&B pair either way.
  bool fb_overlap = true;
  // Where receive buffers live (the model's tensors' device).
  torch::Device device = torch::kCPU;
  // The rank's overlap engine, shared with the model's MoE layers (their
  // ExpertGroup). Null: the executor makes one of its own.
  std::shared_ptr<OverlapEngine> engine;
  // Called on the stepping thread right after this rank's last action of the
  // step that adds to `stage`'s weight gradients (its last B, I, W, or F&B
  // whose backward half is that stage): the stage's gradients are final on
  // this rank, so their reduction can start while the step goes on.
  std::function<void(int stage)> on_grads_done;
  // For a reduction that starts inside that last action, bucket by bucket
  // (as PyTorch DDP's autograd hooks do): before_last_grads(stage) is called
  // on the stepping thread just before it, and on_grad_written(param)
  // whenever a SplitLinear layer of this rank has written a weight gradient
  // (on the thread that ran it; autograd's own parameters are seen through
  // their gradient accumulators' hooks, which the listener registers).
  std::function<void(int stage)> before_last_grads;
  std::function<void(const torch::Tensor& param)> on_grad_written;
  // Called on the stepping thread just before the rank's first action of the
  // step that runs `stage` (its first forward): the stage's parameters must
  // be in place by then (a sharded optimizer's all-gather waits here).
  std::function<void(int stage)> before_stage_use;
};

struct ActionTime {
  double start = 0, end = 0;  // seconds since the start of the step
  double wait = 0;            // of which the rank stood idle waiting for communication
  double a2a = 0;             // of `wait`: waiting for all-to-alls (peer waits included)
};

struct StepOutput {
  std::vector<std::pair<int, double>> losses;  // (model micro-batch, loss) of the last stages on this rank
  std::vector<ActionTime> times;               // per position of the rank's action list
  double seconds = 0;                          // the rank's wall time for the step
  double start = 0;                            // when it started: seconds on the steady clock
  ExposedComm exposed;                         // idle time waiting for communication, by cause
  std::vector<IdleSpan> idle;                  // when: seconds since the start of the step
  std::vector<LaneRecord> lane;                // the collectives of the step, in lane order (times as idle)
  // With track_memory: largest heap growth over the step's start, sampled
  // after every action (activations, pending gradients and transfers).
  double peak_heap_bytes = 0;
};

class RankExecutor {
 public:
  // `lowered` must be checked and lowered (dualpipe::lower) and hold `model.stages`
  // stages; `pipeline` is this pipeline's group, whose rank is the schedule's
  // rank. Throws SetupError for a mismatch.
  RankExecutor(std::shared_ptr<const Schedule> lowered, PipelineModel model, std::shared_ptr<Comm> pipeline,
               ExecutorOptions options = {});
  // Convenience: copies the schedule.
  RankExecutor(const Schedule& lowered, int rank, PipelineModel model, std::shared_ptr<Comm> comm,
               ExecutorOptions options = {});

  // One step: gradients are accumulated into the stages' parameters (zero them
  // before, as an optimizer does).
  StepOutput step();

  // Sample the process heap after every action (meaningful with one rank per
  // process; costs a few microseconds an action).
  bool track_memory = false;

  // Stages that live on several ranks (DualPipe's two replicas, Chimera's two
  // pipelines) each hold part of the gradient: sum it over their replicas.
  void sum_replica_grads();

  const std::map<int, Stage>& stages() const { return stages_; }
  const PipelineModel& model() const { return model_; }
  // Ranks that run each stage, from the schedule.
  const std::vector<std::vector<int>>& replicas() const { return replicas_; }
  const Schedule& schedule() const { return *sched_; }
  const ExecutorOptions& options() const { return opt_; }
  OverlapEngine& engine() { return *opt_.engine; }
  // Replaces ExecutorOptions::on_grads_done (for a hook made after the executor).
  void set_on_grads_done(std::function<void(int stage)> f) { opt_.on_grads_done = std::move(f); }
  // Replaces ExecutorOptions::before_last_grads and on_grad_written.
  void set_grad_hooks(std::function<void(int stage)> before_last, std::function<void(const torch::Tensor&)> written) {
    opt_.before_last_grads = std::move(before_last);
    opt_.on_grad_written = std::move(written);
    store_.on_written = opt_.on_grad_written;
  }
  // Replaces ExecutorOptions::before_stage_use.
  void set_before_stage_use(std::function<void(int stage)> f) { opt_.before_stage_use = std::move(f); }

 private:
  struct Slot;
  Slot& slot(int stage, int mb);
  // Construction, in parts: the options checked against the schedule; where
  // every transfer is sent and consumed (release_sends); the positions of
  // each stage's first use and last gradient work on this rank.
  void check_setup() const;
  void index_transfers();
  void index_stage_events();
  // One action of the step at position p; receives up to kLookahead compute
  // actions ahead are posted first (post_ahead).
  void run_action(const Action& a, std::size_t p);
  void post_ahead(std::size_t from);
  std::size_t recv_frontier_ = 0;  // positions below it had their receives posted this step
  // The end of a step: sends waited, leftovers refused, the step's seconds,
  // idle spans, lane records and losses into `out` (`epoch`: the step's
  // start on the steady clock, in seconds; times become relative to it).
  void end_step(StepOutput& out, double epoch, const ExposedComm& exposed0);
  int where(int stage, int mb) const { return where_[static_cast<std::size_t>(stage) * sched_->micro_batches + mb]; }
  void post_recv(const Action& a, std::size_t pos);
  torch::Tensor take_recv(Op op, int stage, int mb, Half h);
  void send(const Action& a);
  // A stage's input for a forward, and the output gradient for a backward
  // (from this rank or a receive); undefined where there is none.
  torch::Tensor forward_input(int stage, int mb, Half h);
  torch::Tensor output_grad(int stage, int mb, Half h);
  void forward(int stage, int mb, Half h, torch::Tensor in);
  // `w_follows`: an I (defer_weights) whose W is the rank's next compute action.
  void backward(int stage, int mb, bool defer_weights, Half h, torch::Tensor grad, bool w_follows = false);
  // Stage::autograd_split's I: the input gradient now, the weight gradients
  // queued in store_ for W. `root_grad`: the output's gradient (none for the loss).
  void split_backward(int stage, int mb, const torch::Tensor& root, const std::vector<torch::Tensor>& root_grad);
  void run_pair(const Action& a, std::size_t pos);
  // Weight-gradient work in waits (EngineOptions::fill_waits): a full B (or
  // an I whose W comes next) queues its weight gradients under fill_key_;
  // the engine's waits run them one closure at a time (fill_one), and
  // finish_fill() runs the rest after the B's input gradient is sent (an
  // I's W runs its rest). run_weight_piece runs the next
  // closure of `key` as a compute piece (W, stage, its index); false: none left.
  bool run_weight_piece(Half h, int stage, long key);
  bool fill_one(Half h);
  void finish_fill(Half h);
  std::atomic<long> fill_key_{-1};  // -1: no backward's work to fill with
  int fill_stage_ = 0;
  // Posts the SEND of (op, stage, mb) that follows position `pos` among the
  // communication actions after it, now (at the end of a pair's half).
  void send_early(std::size_t pos, Op op, int stage, int mb);

  std::shared_ptr<const Schedule> sched_;
  int rank_;
  PipelineModel model_;
  std::shared_ptr<Comm> comm_;
  ExecutorOptions opt_;
  std::map<int, Stage> stages_;
  std::vector<int> where_;  // rank of each (stage, mb)
  std::vector<std::vector<int>> replicas_;
  WeightGradStore store_;
  struct Slot {
    torch::Tensor input, output, loss;
  };
  std::map<long, Slot> slots_;
  struct PendingRecv {
    torch::Tensor buffer;
    compat::WorkPtr work;
    int peer = 0, pos = 0;  // for the error if the peer never sends: who, and the RECV's position
  };
  std::map<long, PendingRecv> recvs_;  // key: (op, stage, mb)
  struct PendingSend {
    torch::Tensor tensor;
    compat::WorkPtr work;
    int peer;
    Action action;  // for the error if the peer never takes it
    int consume_pos;  // where the peer's list consumes it
  };
  void release_sends(int peer, int peer_pos);
  // Per transfer (producer stage, micro-batch, activation or gradient): the
  // position of its SEND in the sender's list, and of the compute action that
  // consumes it in the receiver's.
  std::vector<int> send_pos_, consume_pos_;
  // Per position of this rank's list: the stages whose gradients are final after it.
  std::vector<std::vector<int>> grads_done_at_;
  // [position]: the stages whose first action of the step is there.
  std::vector<std::vector<int>> first_use_at_;
  std::vector<PendingSend> sends_;
  std::mutex send_mu_;             // sends_ and sent_early_: both halves of a pair send
  std::vector<char> sent_early_;   // per position of this rank's list: a SEND already posted
  std::vector<std::pair<int, double>> losses_;
  std::mutex loss_mu_;
};

}  // namespace dualpipe
