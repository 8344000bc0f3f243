#include "dualpipe/plan/cost_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "dualpipe/schedule/error.h"

namespace dualpipe::plan {
namespace {

// Bytes per second of the slowest link a group of devices, `stride` apart,
// uses: NVLink-class if the whole group sits in one node, the network otherwise.
double group_bandwidth(const ClusterSpec& c, int group, int stride) {
  const double span = static_cast<double>(group - 1) * stride + 1;
  return (span <= c.devices_per_node ? c.intra_node_gbps : c.inter_node_gbps) * 1e9;
}

// Elements per token one device sends in one all-to-all (dispatch or
// combine) over the network and over NVLink. The expert group is ep devices
// tp apart, q of them in each of its g nodes. Without a node limit each of a
// token's k expert copies is sent on its own, (ep - q)/ep of them to other
// nodes. With node-limited routing (at most M nodes) a token crosses the
// network once per distinct remote node among its experts, and the copies
// then go on over NVLink inside each node.
struct A2aVolume {
  double network = 0, nvlink = 0;  // hidden-state copies per token
};
A2aVolume a2a_volume(const MoeSpec& moe, const ClusterSpec& c, int ep, int tp) {
  const double k = moe.top_k;
  const int q = std::max(1, std::min(ep, c.devices_per_node / tp));
  const int g = (ep + q - 1) / q;
  A2aVolume v;
  if (moe.max_nodes > 0 && g > 1) {
    const double M = std::min(moe.max_nodes, g);
    const double nodes = M * (1 - std::pow(1 - 1 / M, k));  // expected distinct nodes of k experts on M nodes
    v.network = nodes * (g - 1) / g;
    v.nvlink = k * (q - 1) / q;
  } else {
    v.network = k * (ep - q) / ep;
    v.nvlink = k * (q - 1.0) / ep;
  }
  return v;
}

// Seconds of dispatch + combine for `tokens` tokens of width h, with
// `bytes_out` and `bytes_back` bytes per element: both links at once.
double a2a_seconds(const ClusterSpec& c, const MoeSpec& moe, const A2aVolume& v, double tokens, double h,
                   double bytes_out, double bytes_back) {
  const double per = tokens * h * (bytes_out + bytes_back) * moe.imbalance / c.all_to_all_efficiency;
  return std::max(per * v.network / (c.inter_node_gbps * 1e9), per * v.nvlink / (c.intra_node_gbps * 1e9)) +
         c.link_latency_us * 1e-6;
}

void check_degrees(const ModelSpec& m, const ClusterSpec& c, const Parallel& par) {
  if (par.pp < 1 || par.dp < 1 || par.ep < 1 || par.tp < 1 || par.micro_batch_size < 1)
    throw Error("parallel degrees and the micro-batch size must be at least 1");
  if (static_cast<long long>(par.pp) * par.dp * par.tp != c.devices)
    throw Error(fmt::format("pipeline x data-parallel x tensor-parallel degree ({} x {} x {}) must equal "
                            "cluster.devices ({})",
                            par.pp, par.dp, par.tp, c.devices));
  if (c.devices_per_node % par.tp != 0 || m.heads % par.tp != 0)
    throw Error(fmt::format("tensor-parallel degree {} must divide cluster.devices_per_node ({}) and model.heads ({})",
                            par.tp, c.devices_per_node, m.heads));
  if (par.dp % par.ep != 0)
    throw Error(fmt::format("expert-parallel degree {} must divide the data-parallel degree {}", par.ep, par.dp));
  if (m.moe.experts > 0 ? m.moe.experts % par.ep != 0 : par.ep != 1)
    throw Error(fmt::format("expert-parallel degree {} must divide model.moe.experts ({})", par.ep, m.moe.experts));
  if (m.gemm_precision == "fp8" && !(c.fp8_tflops > 0))
    throw Error(fmt::format("model.training.gemm_precision is fp8 but cluster {} has no FP8 rate (give "
                            "cluster.fp8_tflops or a device with FP8)",
                            c.name));
}

// One layer's attention, per token, before tensor parallelism divides it.
struct Attention {
  double params = 0;     // weight matrices
  double up_params = 0;  // MLA's up-projections (recomputed by selective recomputation)
  double norm_params = 0;
  double score_flops = 0;  // forward FLOPs of the score products
  double kept = 0;         // elements kept for the backward (beyond the layer input and the output below)
  double dropped = 0;      // the part of `kept` selective recomputation drops
  double lse = 0;          // bytes of softmax statistics or scores
  double out_bytes = 0;    // bytes of the attention output (the output projection's input)
};

Attention attention(const ModelSpec& m) {
  const double h = static_cast<double>(m.hidden), s = static_cast<double>(m.seq_len);
  const double heads = static_cast<double>(m.heads), causal = m.flash_attention ? 0.5 : 1.0;
  Attention a;
  if (m.mla.on()) {
    const auto& x = m.mla;
    const double ql = static_cast<double>(x.q_lora_rank), kvl = static_cast<double>(x.kv_lora_rank);
    const double qk = static_cast<double>(x.qk_nope_dim + x.qk_rope_dim), v = static_cast<double>(x.v_head_dim);
    const double rope = static_cast<double>(x.qk_rope_dim), nope = static_cast<double>(x.qk_nope_dim);
    a.up_params = (ql > 0 ? ql * heads * qk : 0) + kvl * heads * (nope + v);
    a.params = a.up_params + (ql > 0 ? h * ql : h * heads * qk) + h * (kvl + rope) + heads * v * h;
    a.norm_params = 2 * h + ql + kvl;
    a.score_flops = 2 * s * heads * (qk + v) * causal;
    // norm output; query latent and its norm; kv latent (+ RoPE key) and its norm; q, k, v; attention output
    a.dropped = h + ql + kvl + heads * (2 * qk + v);
    a.kept = a.dropped + ql + kvl + rope;
    a.out_bytes = heads * v;
  } else {
    const double hd = static_cast<double>(m.head_dim), kv = static_cast<double>(m.kv_heads);
    a.params = h * hd * (2 * heads + 2 * kv);
    a.norm_params = 2 * h;
    a.score_flops = 2 * s * heads * hd * 2 * causal;
    a.dropped = h;  // the norm's output
    a.kept = h + (heads + 2 * kv) * hd;
    a.out_bytes = heads * hd;
  }
  // DeepSeek-V3 keeps the output projection's input in 12 bits (E5M6).
  a.out_bytes *= m.fp8_activations ? 1.5 : m.dtype_bytes;
  a.lse = m.flash_attention ? 4 * heads : m.dtype_bytes * heads * s;
  return a;
}

// One layer's FFN (dense or MoE), per token, before tensor parallelism.
struct Ffn {
  double params_dense = 0, params_expert = 0;  // held: dense (shared experts, router) and all routed experts
  double linear = 0;                           // parameters one token multiplies with
  double routed = 0;                           // the part of `linear` in routed experts
  double kept_bytes = 0, dropped_bytes = 0;    // bytes kept for the backward; the part selective drops
};

// A matrix product's rate falls as its smallest side shrinks: rows / (rows
// + kHalfRows) of the rate at the calibration size (4096), at most that
// rate. The constant fits the published FP8 benchmark the device presets
// come from (8192 x 8192 x K on H800: K = 256, 1024, 4096, 16384 give 376,
// 927, 1378, 1523 TFLOP/s; the fit gives 402, 927, 1378, 1568). Applied to
// the routed experts, whose rows are the tokens each expert receives.
constexpr double kHalfRows = 791;
double size_efficiency(double rows) {
  constexpr double at_calibration = 4096 / (4096 + kHalfRows);
  return std::min(1.0, rows / (rows + kHalfRows) / at_calibration);
}

Ffn ffn(const ModelSpec& m, int layer) {
  const double h = static_cast<double>(m.hidden), d = m.dtype_bytes, mats = m.gated_ffn ? 3 : 2;
  const double lin_in = m.fp8_activations ? 1 : d;  // bytes of a kept matrix-product input
  Ffn f;
  // The norm's input and output; then per FFN of width e: its input, the
  // activation function's inputs (gate and up) and output.
  auto one = [&](double e, double copies, bool own_input) {
    f.kept_bytes += copies * ((own_input ? lin_in * h : 0) + (mats - 1) * lin_in * e + d * e);
    f.dropped_bytes += copies * d * e;
  };
  f.kept_bytes = 2 * d * h;
  f.dropped_bytes = d * h;
  if (m.is_moe_layer(layer)) {
    const double e = static_cast<double>(m.moe.expert_ffn), E = m.moe.experts, k = m.moe.top_k;
    const double shared = m.moe.shared_experts;
    f.params_dense = shared * mats * h * e + h * E;
    f.params_expert = E * mats * h * e;
    f.linear = (k + shared) * mats * h * e + h * E;
    f.routed = k * mats * h * e;
    one(e, k, true);
    one(e, shared, false);
    f.kept_bytes += 4 * E;  // router logits
  } else {
    const double w = static_cast<double>(m.ffn);
    f.params_dense = mats * h * w;
    f.linear = f.params_dense;
    one(w, 1, false);
  }
  return f;
}

struct Rates {
  double linear, attention;  // FLOP/s of the linear layers' products and of the score products (and head)
};

PartCost layer_cost(const ModelSpec& m, const ClusterSpec& c, const Parallel& par, const Rates& r,
                    const Attention& at, int l) {
  const double t = par.tp, d = m.dtype_bytes, h = static_cast<double>(m.hidden);
  const double T = static_cast<double>(par.micro_batch_size) * static_cast<double>(m.seq_len);
  const Ffn fn = ffn(m, l);
  PartCost p;
  p.dense_params = (at.params + fn.params_dense) / t + at.norm_params;
  p.expert_params = fn.params_expert / par.ep / t;
  const double lin = 2 * T * (at.params + fn.linear) / t, score = T * at.score_flops / t;
  // Tokens one routed expert multiplies per micro-batch: the group's ep x T/t
  // tokens' k copies spread over the experts.
  const double expert_rows = m.is_moe_layer(l) ? par.ep * T / t * m.moe.top_k / m.moe.experts : 0;
  const double routed = 2 * T * fn.routed / t;
  const double lin_time = (lin - routed) / r.linear + (routed > 0 ? routed / (r.linear * size_efficiency(expert_rows)) : 0);
  p.flops_f = lin + score;
  p.f = lin_time + score / r.attention;
  p.w = lin_time;
  p.i = p.w + 2 * score / r.attention;
  p.act_bytes = (T * (d * (h + at.kept) + at.out_bytes + at.lse + fn.kept_bytes)) / t;
  if (t > 1) {  // sequence parallelism: all-gather and reduce-scatter around attention and the FFN
    const double one = (t - 1) / t * d * T * h / (c.intra_node_gbps * 1e9) + c.link_latency_us * 1e-6;
    p.tp_f = p.tp_b = 4 * one;
  }
  if (m.is_moe_layer(l) && par.ep > 1) {
    const A2aVolume v = a2a_volume(m.moe, c, par.ep, par.tp);
    const double disp = m.moe.dispatch_bytes > 0 ? m.moe.dispatch_bytes : d;
    const double comb = m.moe.combine_bytes > 0 ? m.moe.combine_bytes : d;
    p.a2a_bytes = T / t * h * (disp + comb) * (v.network + v.nvlink);
    p.a2a_f = a2a_seconds(c, m.moe, v, T / t, h, disp, comb);
    p.a2a_b = a2a_seconds(c, m.moe, v, T / t, h, d, d);
  }
  if (par.recompute == Recompute::Selective) {
    p.act_bytes -= T * (d * at.dropped + fn.dropped_bytes) / t;
    p.rc = 2 * T * at.up_params / t / r.linear;  // norms and activation functions: element-wise, not counted
    if (!m.flash_attention) {  // an attention that keeps its scores drops them too, and redoes their products
      p.act_bytes -= T * at.lse / t;
      p.rc += score / r.attention;
    }
  } else if (par.recompute == Recompute::Full) {
    p.act_bytes = d * T * h / t;
    p.rc = p.f;
    p.a2a_b += p.a2a_f;
    p.tp_b += p.tp_f;
  }
  p.i += p.rc;
  return p;
}

// Final norm, vocabulary projection (vocabulary-parallel under tensor
// parallelism) and a loss in FP32 that keeps its softmax.
PartCost head_cost(const ModelSpec& m, const Parallel& par, const Rates& r) {
  const double t = par.tp, d = m.dtype_bytes, h = static_cast<double>(m.hidden), V = static_cast<double>(m.vocab);
  const double T = static_cast<double>(par.micro_batch_size) * static_cast<double>(m.seq_len);
  PartCost p;
  p.flops_f = 2 * T * h * V / t;
  p.f = p.i = p.w = p.flops_f / r.attention;
  p.dense_params = (m.tied_embeddings ? 0 : V * h / t) + h;
  p.act_bytes = (2 * d * T * h + (d + 4) * T * V) / t;
  return p;
}

}  // namespace

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::None: return "none";
    case Recompute::Selective: return "selective";
    case Recompute::Full: return "full";
  }
  return "";
}

PartCost& operator+=(PartCost& a, const PartCost& b) {
  a.flops_f += b.flops_f;
  a.f += b.f;
  a.i += b.i;
  a.w += b.w;
  a.rc += b.rc;
  a.a2a_f += b.a2a_f;
  a.a2a_b += b.a2a_b;
  a.a2a_bytes += b.a2a_bytes;
  a.tp_f += b.tp_f;
  a.tp_b += b.tp_b;
  a.act_bytes += b.act_bytes;
  a.dense_params += b.dense_params;
  a.expert_params += b.expert_params;
  return a;
}

double allreduce_seconds(const ClusterSpec& c, double bytes, int group, int stride) {
  if (group <= 1 || bytes <= 0) return 0;
  return 2.0 * (group - 1) / group * bytes / group_bandwidth(c, group, stride) + c.link_latency_us * 1e-6;
}

ModelCosts model_costs(const ModelSpec& m, const ClusterSpec& c, const Parallel& par) {
  check_degrees(m, c, par);
  const double d = m.dtype_bytes, h = static_cast<double>(m.hidden), s = static_cast<double>(m.seq_len);
  const double T = static_cast<double>(par.micro_batch_size) * s, t = par.tp;
  const Rates r{(m.gemm_precision == "fp8" ? c.fp8_tflops : c.matmul_tflops) * 1e12, c.matmul_tflops * 1e12};
  const Attention at = attention(m);
  ModelCosts out;
  for (int l = 0; l < m.layers; ++l) out.layers.push_back(layer_cost(m, c, par, r, at, l));
  // Embedding: a table lookup (no FLOPs worth counting); it keeps the token ids.
  out.embedding.dense_params = static_cast<double>(m.vocab) * h / t + (m.learned_positions ? s * h : 0);
  out.embedding.act_bytes = 8 * T;
  out.head = head_cost(m, par, r);
  // Multi-token prediction: per module a layer like the last one, a 2h x h
  // projection of [hidden; next token's embedding], and the shared head.
  for (int k = 0; k < m.mtp_depth; ++k) {
    PartCost mtp = layer_cost(m, c, par, r, at, m.layers - 1);
    const double proj = 2 * T * 2 * h * h / t;
    mtp.flops_f += proj;
    mtp.f += proj / r.linear;
    mtp.i += proj / r.linear;
    mtp.w += proj / r.linear;
    mtp.dense_params += 2 * h * h / t + 2 * h;
    mtp.act_bytes += 2 * d * T * h / t;
    PartCost head = head_cost(m, par, r);
    head.dense_params = 0;  // shared with the main head
    out.head += mtp;
    out.head += head;
  }
  out.boundary_bytes = d * T * h / t;
  // Pipeline neighbours are dp x tp devices apart (tensor-parallel fastest, then data-parallel).
  out.p2p_bandwidth = group_bandwidth(c, par.pp, par.dp * par.tp);
  out.p2p_latency = c.link_latency_us * 1e-6;
  out.p2p_seconds = par.pp > 1 ? out.p2p_latency + out.boundary_bytes / out.p2p_bandwidth : 0;
  return out;
}

}  // namespace dualpipe::plan

namespace dualpipe::plan {

double total_params(const ModelSpec& m) {
  ClusterSpec one;
  one.devices = 1;
  one.devices_per_node = 1;
  one.matmul_tflops = one.fp8_tflops = one.intra_node_gbps = one.inter_node_gbps = 1;
  const ModelCosts mc = model_costs(m, one, Parallel{});
  double n = mc.embedding.dense_params + mc.head.dense_params + mc.head.expert_params;  // the head holds the MTP modules
  for (const PartCost& p : mc.layers) n += p.dense_params + p.expert_params;
  return n;
}

double active_params(const ModelSpec& m) {
  const double mats = m.gated_ffn ? 3 : 2, h = static_cast<double>(m.hidden);
  double n = total_params(m);
  for (int l = 0; l < m.layers + m.mtp_depth; ++l)
    if (m.is_moe_layer(std::min(l, m.layers - 1)))
      n -= static_cast<double>(m.moe.experts - m.moe.top_k) * mats * h * static_cast<double>(m.moe.expert_ffn);
  return n;
}

}  // namespace dualpipe::plan
