#pragma once
// What the runtime needs to know of a model: how to build each stage, what
// enters the first stage, how the last stage turns its output into a loss,
// and the shape of the tensor that crosses a stage boundary.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace dualpipe {

class WeightGradStore;
struct MoeStats;

// One pipeline stage: its module and how to run it. Plain data (copyable;
// copies share the module). Thread-safety: as its module, one thread at a time.
struct Stage {
  std::shared_ptr<torch::nn::Module> module;  // this stage's parameters
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  // Lets layers that support it split their backward (I now, W later); null
  // when the stage has none, and then I does the whole backward, W nothing.
  std::function<void(WeightGradStore*)> attach_store;
  // The split by autograd, for modules with no split layers of their own
  // (TorchScript modules): I computes the gradient of the stage input only,
  // keeping the graph; W computes the parameters' gradients from that graph
  // and adds them to .grad. The sum equals a plain backward; W walks the
  // activation gradients again (I and W together cost more than one B).
  bool autograd_split = false;
  // Overlapped F&B: called with the forward of one micro-batch and the
  // backward of another. The default (null) runs the forward, then the
  // backward; a stage may interleave their pieces (as DeepSeek-V3 does to
  // hide its all-to-all traffic). Both must have run when it returns.
  std::function<void(const std::function<void()>& fwd, const std::function<void()>& bwd)> overlapped;
  // Parameters sharded over the expert group (a MoE layer's routed experts),
  // by their name in module->named_parameters(); their gradients are not
  // summed over that group. Null: every parameter is dense (replicated).
  std::function<bool(const std::string& name)> is_expert_param;
};

// One parameter that several stages use, as DeepSeek-V3's multi-token
// prediction module on the last stage shares the token embedding of stage 0.
// Each stage holds a copy of its own (named `at[i].second` in its
// module->named_parameters()), built equal; the gradient reduction sums the
// copies' gradients over every rank that holds any of them (GradReducer), so
// the copies get the same gradient and stay equal, as one shared tensor would.
struct TiedParameter {
  std::string name;                             // for messages: "the token embedding"
  std::vector<std::pair<int, std::string>> at;  // (stage, parameter name), at least two
};

// How to build the stages and feed the pipeline. Plain data of callbacks
// (copyable); the callbacks may be called from each rank's thread, so they
// must not share mutable state between ranks unguarded.
struct PipelineModel {
  int stages = 0;
  std::function<Stage(int stage)> build;  // deterministic: every replica of a stage starts equal
  std::function<torch::Tensor(int mb)> input;  // what enters stage 0 for micro-batch mb
  std::function<torch::Tensor(const torch::Tensor& out, int mb)> loss;  // mean loss of one micro-batch
  std::vector<int64_t> boundary_shape;  // activation (and gradient) between stages
  torch::Dtype boundary_dtype = torch::kFloat32;
  // Called before every training step with its index, so that data can move
  // on (null: the data does not depend on the step).
  std::function<void(int step)> begin_step;
  // moe: tokens per expert and balance loss of the blocks built (null otherwise).
  std::shared_ptr<MoeStats> moe_stats;
  // Parameters shared between stages (the stages' copies are reduced as one).
  std::vector<TiedParameter> tied;
};

}  // namespace dualpipe
