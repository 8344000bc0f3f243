#pragma once
// Zero-bubble backward split for Linear layers.
//
// A backward "I" computes only input gradients; the weight gradients of the
// same micro-batch are computed later by its "W", when the schedule has a
// gap. SplitLinear's autograd function asks its rank's WeightGradStore
// whether it is deferring: if so, it returns the input gradient at once and
// leaves a closure (holding the layer input and output gradient) keyed by the
// (stage, micro-batch) being computed; W runs those closures.
//
// Layers without split support (GELU has no weights; a LayerNorm or an
// embedding does) get their weight gradients during I, like a full B: the
// result is the same, only less work moves into W.
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include <torch/torch.h>

namespace dualpipe {

// Deferred weight-gradient work of one rank's stages, by (stage, micro-batch)
// key, in the order it was queued. Ownership: owns the queued closures.
// Thread-safety: the queue may be used from the two tasks of an F&B pair
// (internally locked); begin()/end() and the closures themselves run on one
// task at a time, as the executor drives them.
class WeightGradStore {
 public:
  // While a deferring backward for `key` runs, SplitLinear layers queue their
  // weight-gradient work under that key instead of doing it.
  void begin(long key) {
    deferring_ = true;
    key_ = key;
  }
  void end() { deferring_ = false; }
  bool deferring() const { return deferring_; }
  void defer(std::function<void()> work);
  // Runs (and forgets) the deferred work of `key`, the end of its weight
  // gradients; returns how many closures ran.
  std::size_t run(long key);
  // The next closure of `key` to run: its index among every closure queued
  // under the key (the first is 0; a closure keeps its index when earlier
  // ones ran in a wait), or -1 when none is queued.
  int next_index(long key) const;
  // Runs the oldest closure queued under `key`; false when there is none.
  // The key's later closures keep counting on until run(key) ends it.
  bool run_one(long key);
  // Keys with closures still queued.
  std::size_t pending() const;
  void clear();
  // Called with the parameter each time a SplitLinear layer has written a
  // weight gradient into its .grad (in B, or in W for deferred work), on the
  // thread that wrote it: a gradient reduction learns there that a bucket's
  // gradients are final. Null: nobody listens.
  std::function<void(const torch::Tensor&)> on_written;

 private:
  struct Queue {
    std::deque<std::function<void()>> work;
    int ran = 0;  // closures of the key already run
  };
  bool deferring_ = false;
  long key_ = 0;
  mutable std::mutex mu_;
  std::map<long, Queue> pending_;
};

// A Linear layer whose backward can leave its weight gradient to a later W.
// Ownership: owns its weight; `store` is borrowed. Thread-safety: as any
// torch::nn::Module, one thread at a time.
struct SplitLinearImpl : torch::nn::Module {
  SplitLinearImpl(int64_t in, int64_t out, torch::Dtype dtype);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;             // [out, in], no bias (as the reference example)
  WeightGradStore* store = nullptr; // set by the executor; null means never defer
};
TORCH_MODULE(SplitLinear);

}  // namespace dualpipe
