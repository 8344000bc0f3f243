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
#include <functional>
#include <map>
#include <vector>

#include <torch/torch.h>

namespace dualpipe {

// Deferred weight-gradient work of one rank's stages, by (stage, micro-batch)
// key. Ownership: owns the queued closures. Thread-safety: none; the executor
// that owns it drives it from one task at a time.
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
  void defer(std::function<void()> work) { pending_[key_].push_back(std::move(work)); }
  // Runs (and forgets) the deferred work of `key`; returns how many closures ran.
  std::size_t run(long key);
  std::size_t pending() const { return pending_.size(); }
  void clear() { pending_.clear(); }
  // Called with the parameter each time a SplitLinear layer has written a
  // weight gradient into its .grad (in B, or in W for deferred work), on the
  // thread that wrote it: a gradient reduction learns there that a bucket's
  // gradients are final. Null: nobody listens.
  std::function<void(const torch::Tensor&)> on_written;

 private:
  bool deferring_ = false;
  long key_ = 0;
  std::map<long, std::vector<std::function<void()>>> pending_;
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
