#include "train/models.h"

#include <fmt/format.h>

#include "runtime/split_linear.h"
#include "schedule/error.h"

namespace dp {
namespace {

torch::Tensor seeded_normal(std::vector<int64_t> shape, uint64_t seed, torch::Dtype dtype) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, gen, torch::dtype(dtype));
}

struct MlpStageImpl : torch::nn::Module {
  MlpStageImpl(int64_t h, torch::Dtype dtype)
      : up(register_module("up", SplitLinear(h, 4 * h, dtype))),
        down(register_module("down", SplitLinear(4 * h, h, dtype))) {}
  torch::Tensor forward(const torch::Tensor& x) { return down(torch::gelu(up(x))); }
  SplitLinear up, down;
};
TORCH_MODULE(MlpStage);

}  // namespace

PipelineModel mlp_model(const ModelConfig& c) {
  PipelineModel m;
  m.stages = c.stages;
  m.boundary_shape = {c.micro_batch_size, c.seq_len, c.hidden};
  m.boundary_dtype = c.dtype;
  m.build = [c](int stage) {
    // Initialise from a generator seeded by the stage alone, so that every
    // replica of a stage, on any rank, starts bit-identical.
    auto gen = at::detail::createCPUGenerator(c.seed * 7919 + static_cast<uint64_t>(stage));
    auto mod = MlpStage(c.hidden, c.dtype);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : mod->parameters()) {
        double bound = 1.0 / std::sqrt(static_cast<double>(p.size(1)));
        p.uniform_(-bound, bound, gen);
      }
    }
    Stage st;
    st.module = mod.ptr();
    st.forward = [mod](const torch::Tensor& x) mutable { return mod->forward(x); };
    st.attach_store = [mod](WeightGradStore* store) mutable {
      mod->up->store = store;
      mod->down->store = store;
    };
    return st;
  };
  const std::vector<int64_t> shape = m.boundary_shape;
  m.input = [c, shape](int mb) { return seeded_normal(shape, c.seed * 1000003 + 2 * static_cast<uint64_t>(mb), c.dtype); };
  m.loss = [c, shape](const torch::Tensor& out, int mb) {
    torch::Tensor target = seeded_normal(shape, c.seed * 1000003 + 2 * static_cast<uint64_t>(mb) + 1, c.dtype);
    return torch::mse_loss(out, target);
  };
  return m;
}

PipelineModel make_model(const ModelConfig& c) {
  if (c.stages < 1) throw Error(fmt::format("a model needs at least 1 stage (got {})", c.stages));
  if (c.hidden < 1 || c.seq_len < 1 || c.micro_batch_size < 1)
    throw Error(fmt::format("--hidden, --seq-len and --micro-batch-size must be at least 1 (got {}, {}, {})",
                            c.hidden, c.seq_len, c.micro_batch_size));
  if (c.name == "mlp") return mlp_model(c);
  if (c.name == "gpt") return gpt_model(c);
  throw Error(fmt::format("unknown model '{}' (known: mlp, gpt)", c.name));
}

}  // namespace dp
