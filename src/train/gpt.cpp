#include "dualpipe/train/gpt.h"

#include <fmt/format.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "dualpipe/runtime/split_linear.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/train/corpus.h"

namespace dualpipe {
namespace {

// Causal multi-head self-attention with plain tensor ops (LibTorch 1.13 has
// no scaled_dot_product_attention).
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t d, int64_t n_heads, torch::Dtype dtype)
      : heads(n_heads),
        qkv(register_module("qkv", SplitLinear(d, 3 * d, dtype))),
        proj(register_module("proj", SplitLinear(d, d, dtype))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2), hd = D / heads;
    std::vector<torch::Tensor> qkv_parts = qkv(x).split(D, -1);
    // [B, T, D] -> [B, heads, T, hd]: each head attends on its own slice.
    auto by_head = [&](const torch::Tensor& t) { return t.reshape({B, T, heads, hd}).transpose(1, 2); };
    torch::Tensor q = by_head(qkv_parts[0]), k = by_head(qkv_parts[1]), v = by_head(qkv_parts[2]);
    torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));
    // Position t may only look at positions <= t: mask the strict upper triangle.
    torch::Tensor future = torch::ones({T, T}, torch::dtype(torch::kBool).device(x.device())).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
    torch::Tensor y = torch::matmul(torch::softmax(scores, -1), v);
    return proj(y.transpose(1, 2).reshape({B, T, D}));
  }

  int64_t heads;
  SplitLinear qkv, proj;
};
TORCH_MODULE(Attention);

// Pre-LayerNorm transformer block; its MLP is a mixture of experts when
// `moe` is given.
struct BlockImpl : torch::nn::Module {
  BlockImpl(int64_t d, int64_t heads, torch::Dtype dtype, const MoeLayer& moe_layer)
      : ln1(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        attn(register_module("attn", Attention(d, heads, dtype))),
        ln2(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))) {
    if (moe_layer) {
      moe = register_module("moe", moe_layer);
    } else {
      fc = register_module("fc", SplitLinear(d, 4 * d, dtype));
      proj = register_module("proj", SplitLinear(4 * d, d, dtype));
    }
  }

  torch::Tensor forward(torch::Tensor x) {
    x = x + attn(ln1(x));
    if (moe) return x + moe(ln2(x));
    return x + proj(torch::gelu(fc(ln2(x))));
  }

  std::vector<SplitLinear> split_linears() const {
    std::vector<SplitLinear> all;
    all.push_back(attn->qkv);
    all.push_back(attn->proj);
    if (moe) {
      auto m = moe->split_linears();
      all.insert(all.end(), m.begin(), m.end());
    } else {
      all.push_back(fc);
      all.push_back(proj);
    }
    return all;
  }

  torch::nn::LayerNorm ln1;
  Attention attn;
  torch::nn::LayerNorm ln2;
  SplitLinear fc{nullptr}, proj{nullptr};
  MoeLayer moe{nullptr};
};
TORCH_MODULE(Block);

struct GptStageImpl : torch::nn::Module {
  // Blocks [first, end) of the whole model, plus the embeddings on the first
  // stage and the final LayerNorm and LM head on the last.
  GptStageImpl(const ModelConfig& c, int64_t vocab, int first, int end, bool first_stage, bool last_stage,
               const ExpertGroup& group, const std::shared_ptr<MoeStats>& stats) {
    if (first_stage) {
      tok = register_module("tok", torch::nn::Embedding(vocab, c.hidden));
      pos = register_module("pos", torch::nn::Embedding(c.seq_len, c.hidden));
    }
    // Named by their index in the whole model, so "block5" is the same block
    // whatever the number of stages.
    for (int b = first; b < end; ++b) {
      MoeLayer moe{nullptr};
      if (c.name == "moe") moe = MoeLayer(moe_config(c), b, group, stats);
      blocks.push_back(register_module(fmt::format("block{}", b), Block(c.hidden, c.heads, c.dtype, moe)));
    }
    if (last_stage) {
      ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden})));
      head = register_module("head", SplitLinear(c.hidden, vocab, c.dtype));
    }
    to(c.dtype);  // the torch::nn modules are made in float32
  }

  torch::Tensor forward(torch::Tensor x) {
    if (tok) {
      torch::Tensor positions = torch::arange(x.size(1), torch::dtype(torch::kInt64).device(x.device()));
      x = tok(x) + pos(positions);
    }
    for (auto& b : blocks) x = b(x);
    if (ln_f) x = head(ln_f(x));
    return x;
  }

  // The layers whose weight gradients the I/W split can defer.
  std::vector<SplitLinear> split_linears() const {
    std::vector<SplitLinear> all = blocks_split_linears(blocks);
    if (head) all.push_back(head);
    return all;
  }

  torch::nn::Embedding tok{nullptr}, pos{nullptr};
  std::vector<Block> blocks;
  torch::nn::LayerNorm ln_f{nullptr};
  SplitLinear head{nullptr};
};
TORCH_MODULE(GptStage);

}  // namespace

void init_transformer_weights(torch::nn::Module& mod, int layers, at::Generator& gen) {
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * layers);
  for (const auto& item : mod.named_modules()) {
    // Routed experts draw from generators of their own (MoeLayer::init_experts),
    // so that sharding them over ranks changes nothing.
    if (is_routed_expert_param(item.key())) continue;
    torch::nn::Module& m = *item.value();
    if (auto* ln = m.as<torch::nn::LayerNorm>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    } else if (auto* e = m.as<torch::nn::Embedding>()) {
      e->weight.normal_(0.0, 0.02, gen);
    } else if (auto* l = m.as<SplitLinear>()) {
      // block<i>.proj and block<i>.attn.proj add into the residual stream:
      // scaled down so the stream's variance does not grow with depth.
      const std::string& name = item.key();
      const bool residual = name.size() >= 4 && name.compare(name.size() - 4, 4, "proj") == 0;
      l->weight.normal_(0.0, residual ? residual_std : 0.02, gen);
    }
  }
}

void check_moe(const ModelConfig& c) {
  if (c.ep < 1) throw Error(fmt::format("--ep must be at least 1 (got {})", c.ep));
  if (c.experts < 1 || c.experts > 4096) throw Error(fmt::format("--experts must be in 1..4096 (got {})", c.experts));
  if (c.experts % c.ep != 0)
    throw Error(fmt::format("--experts {} is not a multiple of --ep {}: every expert rank must hold the same number "
                            "of experts",
                            c.experts, c.ep));
  if (c.top_k < 1 || c.top_k > c.experts)
    throw Error(fmt::format("--top-k must be in 1..{} (the number of experts; got {})", c.experts, c.top_k));
  if (c.ep_rank < 0 || c.ep_rank >= c.ep)
    throw Error(fmt::format("expert rank {} is outside 0..{}", c.ep_rank, c.ep - 1));
  if (c.expert_ffn < 0 || c.expert_ffn > (int64_t{1} << 20))
    throw Error(fmt::format("--expert-ffn must be in 0..1048576 (got {})", c.expert_ffn));
  if (!(c.aux_alpha >= 0) || !std::isfinite(c.aux_alpha))
    throw Error(fmt::format("--aux-alpha must be a finite number >= 0 (got {})", c.aux_alpha));
  if (c.micro_batches < 1 || c.data_shards < 1)
    throw Error(fmt::format("moe needs the number of micro-batches and pipelines (got {} and {})", c.micro_batches,
                            c.data_shards));
}

Stage transformer_stage(std::shared_ptr<torch::nn::Module> module,
                        std::function<torch::Tensor(const torch::Tensor&)> forward, std::vector<SplitLinear> linears,
                        bool experts) {
  Stage st;
  st.module = std::move(module);
  st.forward = std::move(forward);
  if (experts) st.is_expert_param = is_routed_expert_param;
  if (!linears.empty())
    st.attach_store = [linears](WeightGradStore* store) mutable {
      for (auto& l : linears) l->store = store;
    };
  return st;
}

int expert_hosts(const ModelConfig& c) { return c.expert_hosts > 0 ? c.expert_hosts : c.ep; }

int gpt_layers(const ModelConfig& c) { return c.layers > 0 ? c.layers : std::max(c.stages, 4); }

std::pair<int, int> gpt_blocks(int stage, int stages, int layers) {
  return {stage * layers / stages, (stage + 1) * layers / stages};
}

MoeConfig moe_config(const ModelConfig& c) {
  MoeConfig m;
  m.hidden = c.hidden;
  m.expert_ffn = moe_expert_ffn(c);
  m.experts = c.experts;
  m.top_k = c.top_k;
  m.shared_expert = c.shared_expert;
  m.aux_alpha = c.aux_alpha;
  m.deepseek = c.name == "deepseek";
  m.shared_experts = c.shared_experts;
  m.hosts = m.deepseek ? expert_hosts(c) : 1;
  m.node_limit = c.node_limit;
  m.recompute_activation = m.deepseek && c.recompute != "none";
  m.aux_grad_scale = 1.0 / (static_cast<double>(c.micro_batches) * c.data_shards);
  m.ep = c.ep;
  m.ep_rank = c.ep_rank;
  m.dtype = c.dtype;
  m.seed = c.seed;
  return m;
}

std::function<torch::Tensor(int)> feed_corpus(PipelineModel& m, const ModelConfig& c,
                                              std::shared_ptr<const Corpus> corpus) {
  // The step whose data input() and loss() serve. Every copy of this
  // PipelineModel (the executor keeps one, training another) shares it, and
  // training sets it through begin_step; 0 until then.
  auto step = std::make_shared<std::atomic<int>>(0);
  m.begin_step = [step](int k) { step->store(k); };
  // Micro-batch mb of the current step: micro_batch_size windows of seq_len+1
  // characters; the input is the first seq_len, the targets the last seq_len.
  auto windows = [c, corpus, step](int mb) {
    return corpus->windows(c.seed, step->load(), mb, c.micro_batch_size, c.seq_len + 1).to(c.device);
  };
  m.input = [c, windows](int mb) { return windows(mb).narrow(1, 0, c.seq_len); };
  return windows;
}

PipelineModel gpt_model(const ModelConfig& c, const ExpertGroup& group) {
  if (c.stages < 1) throw Error(fmt::format("a model needs at least 1 stage (got {})", c.stages));
  if (c.layers < 0)
    throw Error(fmt::format("gpt: --layers must be at least 0 (got {}; 0 means max(stages, 4))", c.layers));
  if (c.heads < 1 || c.hidden % c.heads != 0)
    throw Error(fmt::format("gpt: --heads ({}) must be at least 1 and divide --hidden ({})", c.heads, c.hidden));
  if (c.name == "moe") check_moe(c);
  const int layers = gpt_layers(c);
  // One copy of the text for the model and all its stages, loaded now so that
  // a bad file fails before any rank starts work.
  auto corpus = std::make_shared<const Corpus>(load_corpus(c.data_path, c.seq_len + 1));
  const int64_t vocab = corpus->vocab();

  PipelineModel m;
  m.stages = c.stages;
  m.boundary_shape = {c.micro_batch_size, c.seq_len, c.hidden};
  m.boundary_dtype = c.dtype;
  // Tokens per expert and balance loss of every MoE block this model builds.
  auto stats = c.name == "moe" ? std::make_shared<MoeStats>() : nullptr;
  m.moe_stats = stats;
  m.build = [c, layers, vocab, group, stats](int stage) {
    const auto [first, end] = gpt_blocks(stage, c.stages, layers);
    return init_transformer_stage(GptStage(c, vocab, first, end, stage == 0, stage == c.stages - 1, group, stats), c,
                                  stage, layers, c.name == "moe");
  };
  auto windows = feed_corpus(m, c, corpus);
  m.loss = [c, windows, vocab](const torch::Tensor& logits, int mb) {
    torch::Tensor targets = windows(mb).narrow(1, 1, c.seq_len);
    return torch::nn::functional::cross_entropy(logits.reshape({-1, vocab}), targets.reshape({-1}));
  };
  return m;
}

}  // namespace dualpipe
