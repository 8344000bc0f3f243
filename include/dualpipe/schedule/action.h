#pragma once
// One entry of a rank's action list: a compute action (F, B, I, W, or an
// overlapped F&B pair) or, after lowering, a point-to-point transfer.
// Stage and micro-batch indices are global, as in PyTorch's action strings.
#include <cstdint>
#include <string>
#include <string_view>

namespace dualpipe {

enum class Op : std::uint8_t {
  F,       // forward of one stage on one micro-batch
  B,       // full backward (input and weight gradients)
  I,       // backward for inputs only; a later W completes it
  W,       // backward for weights only
  FB,      // forward of one micro-batch overlapped with the full backward of another
  FF,      // two forwards (of two micro-batches) overlapped with each other (pair_forwards)
  SEND_F,  // stage sends its forward output to stage+1
  RECV_F,  // stage receives its forward input from stage-1
  SEND_B,  // stage sends its input gradient to stage-1
  RECV_B,  // stage receives its output gradient from stage+1
  // Stage-only actions of torch.distributed.pipelining (FSDP-style): written
  // "0UNSHARD", "0RESHARD", "0REDUCE_GRAD", with no micro-batch (mb = -1).
  // They move no activations and take no time in the simulator; a runtime
  // without sharded parameters skips them.
  UNSHARD,      // gather the stage's sharded parameters before use
  RESHARD,      // free the gathered parameters again
  REDUCE_GRAD,  // reduce the stage's gradients (after its last backward)
};

inline bool is_comm(Op op) { return op >= Op::SEND_F && op <= Op::RECV_B; }
inline bool is_stage_only(Op op) { return op >= Op::UNSHARD && op <= Op::REDUCE_GRAD; }
// F, B, I, W or an F&B pair: the actions that take time and carry data.
inline bool is_compute(Op op) { return !is_comm(op) && !is_stage_only(op); }
inline bool is_backward(Op op) { return op == Op::B || op == Op::I; }
// An overlapped pair: two halves that run as two tasks taking turns.
inline bool is_pair(Op op) { return op == Op::FB || op == Op::FF; }

// Plain 20-byte record: a schedule of 10^7 actions fits comfortably in memory.
// Copyable value type.
struct Action {
  Op op = Op::F;
  std::int32_t stage = 0;   // for a pair: its first half (FB: the forward)
  std::int32_t mb = 0;
  std::int32_t stage2 = -1; // for a pair: its second half (FB: the backward); -1 otherwise
  std::int32_t mb2 = -1;

  static Action make(Op op, int stage, int mb) { return {op, stage, mb, -1, -1}; }
  static Action pair(int f_stage, int f_mb, int b_stage, int b_mb) {
    return {Op::FB, f_stage, f_mb, b_stage, b_mb};
  }
  static Action forward_pair(int stage1, int mb1, int stage_2, int mb_2) { return {Op::FF, stage1, mb1, stage_2, mb_2}; }
  // The forward (resp. backward) half of an FB pair as a plain action; of an
  // FF pair, forward_half() is its first forward.
  Action forward_half() const { return make(Op::F, stage, mb); }
  Action backward_half() const { return make(Op::B, stage2, mb2); }
  // A pair's second half as a plain action: FB's backward, FF's second forward.
  Action second_half() const { return make(op == Op::FF ? Op::F : Op::B, stage2, mb2); }

  friend bool operator==(const Action& a, const Action& b) {
    return a.op == b.op && a.stage == b.stage && a.mb == b.mb && a.stage2 == b.stage2 && a.mb2 == b.mb2;
  }
  friend bool operator!=(const Action& a, const Action& b) { return !(a == b); }
};

// The plain compute actions `a` stands for: a pair's two halves in order (an
// F&B pair's forward (F) and backward (B); an F&F pair's two forwards); any
// other action alone. Loops over
// halves(a) treat a pair as its two halves without taking it apart by hand.
// A value type; copyable.
struct Halves {
  Action part[2];
  int count = 1;
  const Action* begin() const { return part; }
  const Action* end() const { return part + count; }
};
inline Halves halves(const Action& a) {
  if (is_pair(a.op)) return {{a.forward_half(), a.second_half()}, 2};
  return {{a, Action{}}, 1};
}

// "F", "SEND_B", ... as used inside action strings.
const char* op_name(Op op);

// PyTorch's action-string form: "3F12", "0I5", "2SEND_F4",
// "(0F7;7B13)OVERLAP_F_B", "0UNSHARD" (stage-only: no micro-batch); and
// dualpipe's own "(1F8;0F1)OVERLAP_F_F", which PyTorch's runtime does not run.
std::string to_string(const Action& a);

// `text` for an error message: bytes outside printable ASCII as \xNN, and
// cut after `max_chars` characters.
std::string printable(std::string_view text, std::size_t max_chars = 60);

// Parses one action string; throws dualpipe::Error naming the text on failure.
Action parse_action(std::string_view text);

}  // namespace dualpipe
