#pragma once
// Executes one rank's part of a lowered schedule on LibTorch.
//
// The executor walks the rank's action list in order: F, B, I, W, F&B pairs,
// and the SEND/RECV actions the lowering inserted. Receives are posted a few
// compute actions ahead of their position so transfers run during compute;
// a send is posted where the schedule says, and waited on (at once, without
// blocking) as soon as the schedule shows its receiver has it, which frees
// its tensor (see release_sends).
#include <map>
#include <memory>
#include <vector>

#include "runtime/comm.h"
#include "runtime/split_linear.h"
#include "runtime/stage.h"
#include "schedule/schedule.h"

namespace dp {

struct ActionTime {
  double start = 0, end = 0;  // seconds since the start of the step
  double wait = 0;            // of which blocked on receives (not compute)
};

struct StepOutput {
  std::vector<std::pair<int, double>> losses;  // (micro-batch, loss) of the last stages on this rank
  std::vector<ActionTime> times;               // per position of the rank's action list
  double seconds = 0;                          // the rank's wall time for the step
  // With track_memory: largest heap growth over the step's start, sampled
  // after every action (activations, pending gradients and transfers).
  double peak_heap_bytes = 0;
};

class RankExecutor {
 public:
  // `lowered` must be checked and lowered (dp::lower) and hold `model.stages` stages.
  RankExecutor(const Schedule& lowered, int rank, PipelineModel model, std::shared_ptr<Comm> comm);

  // One step: gradients are accumulated into the stages' parameters (zero them
  // before, as an optimizer does); the micro-batch losses are scaled by 1/N so
  // the gradients are those of the mean loss.
  StepOutput step();

  // Sample the process heap after every action (meaningful with one rank per
  // process; costs a few microseconds an action).
  bool track_memory = false;

  // Stages that live on several ranks (DualPipe's two replicas, Chimera's two
  // pipelines) each hold part of the gradient: sum it over their replicas.
  void sum_replica_grads();

  const std::map<int, Stage>& stages() const { return stages_; }
  // Ranks that run each stage, from the schedule.
  const std::vector<std::vector<int>>& replicas() const { return replicas_; }

 private:
  struct Slot;
  Slot& slot(int stage, int mb);
  void post_recv(const Action& a, std::size_t pos);
  torch::Tensor take_recv(Op op, int stage, int mb);
  void forward(int stage, int mb);
  void backward(int stage, int mb, bool defer_weights);

  const Schedule& sched_;
  int rank_;
  PipelineModel model_;
  std::shared_ptr<Comm> comm_;
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
  std::vector<PendingSend> sends_;
  std::vector<std::pair<int, double>> losses_;
  double wait_ = 0;  // receive waiting inside the current action
};

}  // namespace dp
