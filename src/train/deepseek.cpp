#include "dualpipe/train/deepseek.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "dualpipe/runtime/split_linear.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/train/corpus.h"
#include "dualpipe/train/gpt.h"
#include "dualpipe/train/lean_ops.h"
#include "dualpipe/train/recompute.h"

namespace dualpipe {
namespace {

// y = x / sqrt(mean(x^2) + eps) * weight, over the last dimension.
struct RmsNormImpl : torch::nn::Module {
  RmsNormImpl(int64_t d, torch::Dtype dtype) : weight(register_parameter("weight", torch::ones({d}, torch::dtype(dtype)))) {}
  torch::Tensor forward(const torch::Tensor& x) { return rms_norm(x, weight, 1e-6); }
  torch::Tensor weight;
};
TORCH_MODULE(RmsNorm);

// Rotary position embedding of t [B, T, heads, d_r]: each pair (i, i + d_r/2)
// turned by the angle pos * 10000^(-2i/d_r).
torch::Tensor rope(const torch::Tensor& t) {
  const int64_t T = t.size(1), half = t.size(3) / 2;
  auto opt = torch::dtype(t.scalar_type()).device(t.device());
  torch::Tensor inv = torch::pow(10000.0, torch::arange(half, opt) * (-2.0 / static_cast<double>(t.size(3))));
  torch::Tensor angle = torch::outer(torch::arange(T, opt), inv).unsqueeze(1);  // [T, 1, half]
  torch::Tensor cos = angle.cos(), sin = angle.sin();
  torch::Tensor a = t.narrow(3, 0, half), b = t.narrow(3, half, half);
  return torch::cat({a * cos - b * sin, a * sin + b * cos}, 3);
}

// Multi-head latent attention (deepseek.h).
struct MlaImpl : torch::nn::Module {
  explicit MlaImpl(const ModelConfig& c)
      : heads(c.heads),
        dh(c.hidden / c.heads),
        dr(c.rope_dim),
        wdq(register_module("wdq", SplitLinear(c.hidden, q_latent(c), c.dtype))),
        q_norm(register_module("q_norm", RmsNorm(q_latent(c), c.dtype))),
        wuq(register_module("wuq", SplitLinear(q_latent(c), heads * dh, c.dtype))),
        wqr(register_module("wqr", SplitLinear(q_latent(c), heads * dr, c.dtype))),
        wdkv(register_module("wdkv", SplitLinear(c.hidden, kv_latent(c), c.dtype))),
        kv_norm(register_module("kv_norm", RmsNorm(kv_latent(c), c.dtype))),
        wuk(register_module("wuk", SplitLinear(kv_latent(c), heads * dh, c.dtype))),
        wuv(register_module("wuv", SplitLinear(kv_latent(c), heads * dh, c.dtype))),
        wkr(register_module("wkr", SplitLinear(c.hidden, dr, c.dtype))),
        proj(register_module("proj", SplitLinear(heads * dh, c.hidden, c.dtype))) {}

  torch::Tensor forward(const torch::Tensor& x) { return proj(core(latents(x))); }

  // The down-projections: c_Q and c_KV before their norms, and W_KR x.
  std::vector<torch::Tensor> latents(const torch::Tensor& x) { return {wdq(x), wdkv(x), wkr(x)}; }

  // From the latents to the heads' joined outputs (before W_O).
  torch::Tensor core(const std::vector<torch::Tensor>& lat) {
    const int64_t B = lat[0].size(0), T = lat[0].size(1);
    torch::Tensor cq = q_norm(lat[0]), ckv = kv_norm(lat[1]);
    auto split = [&](const torch::Tensor& t, int64_t n, int64_t w) { return t.reshape({B, T, n, w}); };
    torch::Tensor q = torch::cat({split(wuq(cq), heads, dh), rope(split(wqr(cq), heads, dr))}, 3);
    torch::Tensor k_rope = rope(split(lat[2], 1, dr)).expand({B, T, heads, dr});
    torch::Tensor k = torch::cat({split(wuk(ckv), heads, dh), k_rope}, 3);
    torch::Tensor v = split(wuv(ckv), heads, dh);
    // [B, heads, T, .]: each head attends on its own slice.
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    v = v.transpose(1, 2);
    torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dh + dr));
    torch::Tensor future = torch::ones({T, T}, torch::dtype(torch::kBool).device(q.device())).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
    torch::Tensor y = torch::matmul(torch::softmax(scores, -1), v);
    return y.transpose(1, 2).reshape({B, T, heads * dh});
  }

  std::vector<SplitLinear> split_linears() const { return {wdq, wuq, wqr, wdkv, wuk, wuv, wkr, proj}; }

  int64_t heads, dh, dr;
  SplitLinear wdq;
  RmsNorm q_norm;
  SplitLinear wuq, wqr, wdkv;
  RmsNorm kv_norm;
  SplitLinear wuk, wuv, wkr, proj;
};
TORCH_MODULE(Mla);

// Pre-RMSNorm block: MLA, then a dense SwiGLU MLP or DeepSeekMoE. The dense
// MLP's width is (K + N_s) expert widths: the compute a MoE token gets.
// Recomputation (recompute.h), per sublayer:
//   selective: norm1 with the down-projections, and the attention from the
//              latents on (norms, up-projections, RoPE, scores), are redone
//              in the backward; so are norm2 with the dense MLP's fc, and
//              every SwiGLU product with its proj (experts included)
//   full:      the attention sublayer and a dense FFN sublayer keep only
//              their input; a MoE sublayer as under selective (redoing it
//              would repeat its all-to-alls)
struct DeepSeekBlockImpl : torch::nn::Module {
  DeepSeekBlockImpl(const ModelConfig& c, MoeLayer moe_layer)
      : mode(parse_recompute(c.recompute)),
        norm1(register_module("norm1", RmsNorm(c.hidden, c.dtype))),
        attn(register_module("attn", Mla(c))),
        norm2(register_module("norm2", RmsNorm(c.hidden, c.dtype))) {
    if (moe_layer) {
      moe = register_module("moe", moe_layer);
    } else {
      mlp = register_module(
          "mlp", ExpertMlp(c.hidden, moe_expert_ffn(c) * (c.top_k + c.shared_experts), c.dtype, /*swiglu=*/true));
      mlp->recompute_activation = mode == RecomputeMode::Selective;
    }
    attn_in = [this](const std::vector<torch::Tensor>& in) { return attn->latents(norm1(in[0])); };
    attn_core = [this](const std::vector<torch::Tensor>& in) { return std::vector<torch::Tensor>{attn->core(in)}; };
    attn_sub = [this](const std::vector<torch::Tensor>& in) {
      return std::vector<torch::Tensor>{in[0] + attn(norm1(in[0]))};
    };
    ffn_in = [this](const std::vector<torch::Tensor>& in) { return std::vector<torch::Tensor>{mlp->fc(norm2(in[0]))}; };
    ffn_sub = [this](const std::vector<torch::Tensor>& in) {
      return std::vector<torch::Tensor>{in[0] + mlp(norm2(in[0]))};
    };
  }

  torch::Tensor forward(torch::Tensor x) {
    if (mode == RecomputeMode::Full)
      x = recomputed(attn_sub, {x})[0];
    else if (mode == RecomputeMode::Selective)
      x = x + attn->proj(recomputed(attn_core, recomputed(attn_in, {x}))[0]);
    else
      x = x + attn(norm1(x));
    if (moe) return x + moe(norm2(x));
    if (mode == RecomputeMode::Full) return recomputed(ffn_sub, {x})[0];
    if (mode == RecomputeMode::Selective) return x + mlp->activation_and_proj(recomputed(ffn_in, {x})[0]);
    return x + mlp(norm2(x));
  }

  std::vector<SplitLinear> split_linears() const {
    std::vector<SplitLinear> all = attn->split_linears();
    std::vector<SplitLinear> f = moe ? moe->split_linears() : std::vector<SplitLinear>{mlp->fc, mlp->proj};
    all.insert(all.end(), f.begin(), f.end());
    return all;
  }

  RecomputeMode mode;
  RmsNorm norm1;
  Mla attn;
  RmsNorm norm2;
  ExpertMlp mlp{nullptr};
  MoeLayer moe{nullptr};
  RecomputeBody attn_in, attn_core, attn_sub, ffn_in, ffn_sub;  // the recomputed pieces
};
TORCH_MODULE(DeepSeekBlock);

struct DeepSeekStageImpl : torch::nn::Module {
  DeepSeekStageImpl(const ModelConfig& c, int64_t vocab_size, int first, int end, bool first_stage, bool last_stage,
                    const ExpertGroup& group, const std::shared_ptr<MoeStats>& stats)
      : hidden(c.hidden), vocab(vocab_size), carry(c.mtp_weight > 0) {
    if (first_stage) tok = register_module("tok", torch::nn::Embedding(vocab, c.hidden));
    for (int b = first; b < end; ++b) {
      MoeLayer moe{nullptr};
      if (b >= c.dense_layers) moe = MoeLayer(moe_config(c), b, group, stats);
      blocks.push_back(register_module(fmt::format("block{}", b), DeepSeekBlock(c, moe)));
    }
    if (last_stage) {
      norm_f = register_module("norm_f", RmsNorm(c.hidden, c.dtype));
      head = register_module("head", SplitLinear(c.hidden, vocab, c.dtype));
      if (carry) {
        // Its copy of stage 0's embedding (tied: PipelineModel::tied), unless
        // that embedding is on this stage.
        if (!first_stage) mtp_tok = register_module("mtp_tok", torch::nn::Embedding(vocab, c.hidden));
        mtp_norm_h = register_module("mtp_norm_h", RmsNorm(c.hidden, c.dtype));
        mtp_norm_e = register_module("mtp_norm_e", RmsNorm(c.hidden, c.dtype));
        mtp_merge = register_module("mtp_merge", SplitLinear(2 * c.hidden, c.hidden, c.dtype));
        mtp_block = register_module("mtp_block", DeepSeekBlock(c, MoeLayer(nullptr)));
      }
    }
    to(c.dtype);  // the torch::nn modules are made in float32
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = x, tokens;
    if (tok) {
      tokens = x;
      h = tok(x);
    } else if (carry) {
      h = x.narrow(-1, 0, hidden);
      // Exact ids in a real run; a boundary of random values (the bench's
      // activation yardstick) is mapped into the vocabulary.
      tokens = x.select(-1, hidden).detach().round().clamp(0, static_cast<double>(vocab - 1));
    }
    for (auto& b : blocks) h = b(h);
    if (!head) return carry ? torch::cat({h, tokens.to(h.scalar_type()).unsqueeze(-1)}, -1) : h;
    torch::Tensor logits = head(norm_f(h));
    if (!carry) return logits;
    // Multi-token prediction: position i with token i+1 predicts token i+2.
    const int64_t T = h.size(1);
    torch::Tensor next = (mtp_tok ? mtp_tok : tok)(tokens.narrow(1, 1, T - 1).to(torch::kInt64));
    torch::Tensor hm = mtp_merge(torch::cat({mtp_norm_h(h.narrow(1, 0, T - 1)), mtp_norm_e(next)}, -1));
    return torch::cat({logits, head(norm_f(mtp_block(hm)))}, 1);
  }

  std::vector<SplitLinear> split_linears() const {
    std::vector<SplitLinear> all = blocks_split_linears(blocks);
    if (head) all.push_back(head);
    if (mtp_block) {
      all.push_back(mtp_merge);
      auto l = mtp_block->split_linears();
      all.insert(all.end(), l.begin(), l.end());
    }
    return all;
  }

  int64_t hidden, vocab;
  bool carry;  // the token ids travel as the boundary's last channel (MTP)
  torch::nn::Embedding tok{nullptr}, mtp_tok{nullptr};
  std::vector<DeepSeekBlock> blocks;
  RmsNorm norm_f{nullptr}, mtp_norm_h{nullptr}, mtp_norm_e{nullptr};
  SplitLinear head{nullptr}, mtp_merge{nullptr};
  DeepSeekBlock mtp_block{nullptr};
};
TORCH_MODULE(DeepSeekStage);

// The token embedding's initial values, normal(0, 0.02) as every embedding
// (init_transformer_weights), from a generator of their own, so that the
// stages that hold a copy draw the same values.
torch::Tensor embedding_init(const ModelConfig& c, int64_t vocab) {
  auto gen = at::detail::createCPUGenerator(c.seed * 7919 + 7907);
  return (torch::randn({vocab, c.hidden}, gen, torch::kFloat64) * 0.02).to(c.dtype);
}

void check_range(const char* what, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi) || !std::isfinite(v))
    throw Error(fmt::format("deepseek: {} must be in {}..{} (got {})", what, lo, hi, v));
}

}  // namespace

void check_deepseek(const ModelConfig& c) {
  check_moe(c);
  if (c.kv_latent < 0 || c.kv_latent > c.hidden || c.q_latent < 0 || c.q_latent > c.hidden)
    throw Error(fmt::format("deepseek: --kv-latent ({}) and --q-latent ({}) must be in 0..{} (the hidden size; 0 "
                            "means hidden / 2)",
                            c.kv_latent, c.q_latent, c.hidden));
  if (c.rope_dim < 2 || c.rope_dim % 2 != 0 || c.rope_dim > c.hidden)
    throw Error(fmt::format("deepseek: --rope-dim must be even and in 2..{} (got {})", c.hidden, c.rope_dim));
  check_range("--shared-experts", c.shared_experts, 0, 64);
  check_range("--dense-layers", c.dense_layers, 0, 4096);
  check_range("--expert-hosts", c.expert_hosts, 0, c.experts);
  const int H = expert_hosts(c);
  if (c.experts % H != 0)
    throw Error(fmt::format("deepseek: the {} experts do not split evenly over {} hosts (--expert-hosts)", c.experts, H));
  if (c.node_limit < 1 || c.node_limit > H)
    throw Error(fmt::format("deepseek: --node-limit must be in 1..{} (the hosts; got {})", H, c.node_limit));
  const int reachable = c.node_limit * (c.experts / H);
  if (c.top_k > reachable)
    throw Error(fmt::format("deepseek: --top-k {} is more than the {} experts on --node-limit {} of {} hosts", c.top_k,
                            reachable, c.node_limit, H));
  if (!(c.bias_speed >= 0) || !std::isfinite(c.bias_speed))
    throw Error(fmt::format("deepseek: --bias-speed must be a finite number >= 0 (got {})", c.bias_speed));
  if (!(c.mtp_weight >= 0) || !std::isfinite(c.mtp_weight))
    throw Error(fmt::format("deepseek: --mtp-weight must be a finite number >= 0 (got {})", c.mtp_weight));
  (void)parse_recompute(c.recompute);
  if (c.mtp_weight > 0 && c.seq_len < 2)
    throw Error(fmt::format("deepseek: multi-token prediction needs --seq-len of at least 2 (got {})", c.seq_len));
}

PipelineModel deepseek_model(const ModelConfig& c, const ExpertGroup& group) {
  if (c.layers < 0) throw Error(fmt::format("deepseek: --layers must be at least 0 (got {})", c.layers));
  if (c.heads < 1 || c.hidden % c.heads != 0)
    throw Error(fmt::format("deepseek: --heads ({}) must be at least 1 and divide --hidden ({})", c.heads, c.hidden));
  check_deepseek(c);
  const int layers = gpt_layers(c);
  if (c.dense_layers > layers)
    throw Error(fmt::format("deepseek: --dense-layers {} is more than the model's {} blocks (--layers)", c.dense_layers,
                            layers));
  auto corpus = std::make_shared<const Corpus>(load_corpus(c.data_path, c.seq_len + 1));
  const int64_t vocab = corpus->vocab();
  const bool mtp = c.mtp_weight > 0;

  PipelineModel m;
  m.stages = c.stages;
  m.boundary_shape = {c.micro_batch_size, c.seq_len, c.hidden + (mtp ? 1 : 0)};
  m.boundary_dtype = c.dtype;
  auto stats = std::make_shared<MoeStats>();
  m.moe_stats = stats;
  m.build = [c, layers, vocab, group, stats](int stage) {
    const auto [first, end] = gpt_blocks(stage, c.stages, layers);
    DeepSeekStage mod(c, vocab, first, end, stage == 0, stage == c.stages - 1, group, stats);
    Stage st = init_transformer_stage(mod, c, stage, layers, true);
    // Stage 0's embedding and the MTP module's copy start equal.
    torch::NoGradGuard no_grad;
    for (auto e : {mod->tok, mod->mtp_tok})
      if (e) e->weight.copy_(embedding_init(c, vocab));
    return st;
  };
  if (mtp && c.stages > 1)
    m.tied.push_back({"the token embedding (stage 0's, shared by the multi-token prediction module)",
                      {{0, "tok.weight"}, {c.stages - 1, "mtp_tok.weight"}}});
  auto windows = feed_corpus(m, c, corpus);
  const int64_t T = c.seq_len;
  const double lambda = c.mtp_weight;
  m.loss = [windows, vocab, T, mtp, lambda](const torch::Tensor& out, int mb) {
    namespace F = torch::nn::functional;
    torch::Tensor w = windows(mb);
    torch::Tensor main = F::cross_entropy(out.narrow(1, 0, T).reshape({-1, vocab}), w.narrow(1, 1, T).reshape({-1}));
    if (!mtp) return main;
    torch::Tensor next =
        F::cross_entropy(out.narrow(1, T, T - 1).reshape({-1, vocab}), w.narrow(1, 2, T - 1).reshape({-1}));
    return main + lambda * next;
  };
  return m;
}

}  // namespace dualpipe
