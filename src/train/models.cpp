#include "dualpipe/train/models.h"

#include <fmt/format.h>

#include <map>
#include <mutex>

#include "dualpipe/runtime/split_linear.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/train/torchscript.h"
#include "dualpipe/train/deepseek.h"

namespace dualpipe {
namespace {

torch::Tensor seeded_normal(std::vector<int64_t> shape, uint64_t seed, torch::Dtype dtype) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, gen, torch::dtype(dtype));
}

struct MlpStageImpl : torch::nn::Module {
  MlpStageImpl(int64_t h, int64_t ffn, torch::Dtype dtype)
      : up(register_module("up", SplitLinear(h, ffn, dtype))), down(register_module("down", SplitLinear(ffn, h, dtype))) {}
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
    auto mod = MlpStage(c.hidden, mlp_ffn(c), c.dtype);
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
  // Inputs (even slots) and targets (odd) are drawn once and kept: the data
  // does not change between steps. Copies of the model (thread ranks) share
  // the cache, hence the lock; nobody writes into a cached tensor.
  struct Cache {
    std::mutex mu;
    std::map<uint64_t, torch::Tensor> t;
  };
  auto cache = std::make_shared<Cache>();
  auto data = [c, shape, cache](uint64_t slot) {
    std::lock_guard<std::mutex> lock(cache->mu);
    torch::Tensor& t = cache->t[slot];
    if (!t.defined()) t = seeded_normal(shape, c.seed * 1000003 + slot, c.dtype).to(c.device);
    return t;
  };
  m.input = [data](int mb) { return data(2 * static_cast<uint64_t>(mb)); };
  m.loss = [data](const torch::Tensor& out, int mb) { return torch::mse_loss(out, data(2 * static_cast<uint64_t>(mb) + 1)); };
  return m;
}

namespace {

// `m` with every stage moved to `device` once built (initialised on the
// CPU); the models make their inputs and targets there themselves.
PipelineModel on_device(PipelineModel m, torch::Device device) {
  if (device.is_cpu()) return m;
  m.build = [build = m.build, device](int stage) {
    Stage st = build(stage);
    st.module->to(device);
    return st;
  };
  return m;
}

PipelineModel model_by_name(const ModelConfig& c, const ExpertGroup& experts) {
  if (c.name == "mlp") return mlp_model(c);
  if (c.name == "gpt" || c.name == "moe") return gpt_model(c, experts);
  if (c.name == "deepseek") return deepseek_model(c, experts);
  if (c.name == "torchscript") return torchscript_model(c);
  throw Error(fmt::format("unknown model '{}' (known: mlp, gpt, moe, deepseek; torchscript with --stages)", c.name));
}

}  // namespace

PipelineModel make_model(const ModelConfig& c, const ExpertGroup& experts) {
  if (c.stages < 1) throw Error(fmt::format("a model needs at least 1 stage (got {})", c.stages));
  if (c.ffn < 0) throw Error(fmt::format("--ffn must be at least 1, or 0 for 4 x hidden (got {})", c.ffn));
  if (c.hidden < 1 || c.seq_len < 1 || c.micro_batch_size < 1)
    throw Error(fmt::format("--hidden, --seq-len and --micro-batch-size must be at least 1 (got {}, {}, {})",
                            c.hidden, c.seq_len, c.micro_batch_size));
  return on_device(model_by_name(c, experts), c.device);
}

}  // namespace dualpipe
