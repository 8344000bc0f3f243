#include "dualpipe/plan/cost_model.h"

#include <fmt/format.h>

#include <algorithm>

#include "dualpipe/schedule/error.h"

namespace dualpipe::plan {
namespace {

// Bytes per second of the slowest link a group of devices, `stride` apart,
// uses: NVLink-class if the whole group sits in one node, the network otherwise.
double group_bandwidth(const ClusterSpec& c, int group, int stride) {
  const double span = static_cast<double>(group - 1) * stride + 1;
  return (span <= c.devices_per_node ? c.intra_node_gbps : c.inter_node_gbps) * 1e9;
}

// Seconds one device spends sending `bytes` spread evenly over the other
// members of its expert group (ep consecutive devices): the share for its
// node goes over NVLink, the rest over the network, both at once.
double all_to_all_seconds(const ClusterSpec& c, double bytes, int ep) {
  if (ep <= 1 || bytes <= 0) return 0;
  const int local_peers = std::min(ep, c.devices_per_node) - 1;
  const double local = bytes * local_peers / (ep - 1), remote = bytes - local;
  const double t = std::max(local / (c.intra_node_gbps * 1e9), remote / (c.inter_node_gbps * 1e9));
  return t + c.link_latency_us * 1e-6;
}

}  // namespace

PartCost& operator+=(PartCost& a, const PartCost& b) {
  a.flops_f += b.flops_f;
  a.f += b.f;
  a.i += b.i;
  a.w += b.w;
  a.a2a_f += b.a2a_f;
  a.a2a_b += b.a2a_b;
  a.a2a_bytes += b.a2a_bytes;
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
  if (par.pp < 1 || par.dp < 1 || par.ep < 1 || par.micro_batch_size < 1)
    throw Error("parallel degrees and the micro-batch size must be at least 1");
  if (static_cast<long long>(par.pp) * par.dp != c.devices)
    throw Error(fmt::format("pipeline x data-parallel degree ({} x {}) must equal cluster.devices ({})", par.pp,
                            par.dp, c.devices));
  if (par.dp % par.ep != 0)
    throw Error(fmt::format("expert-parallel degree {} must divide the data-parallel degree {}", par.ep, par.dp));
  if (m.moe.experts > 0 ? m.moe.experts % par.ep != 0 : par.ep != 1)
    throw Error(fmt::format("expert-parallel degree {} must divide model.moe.experts ({})", par.ep, m.moe.experts));

  const double d = m.dtype_bytes, h = static_cast<double>(m.hidden), s = static_cast<double>(m.seq_len);
  const double b = par.micro_batch_size, T = b * s;  // tokens of one micro-batch
  const double heads = static_cast<double>(m.heads), kv = static_cast<double>(m.kv_heads);
  const double hd = static_cast<double>(m.head_dim), V = static_cast<double>(m.vocab);
  const double rate = c.matmul_tflops * 1e12;
  const double mats = m.gated_ffn ? 3 : 2;  // matrices of one FFN (SwiGLU: gate, up, down)

  // Compute time from FLOPs: a matrix product's backward is two products of
  // the same size, one for the input gradient, one for the weight gradient;
  // the attention score products have no weights, so both of their backward
  // products go to the input gradient.
  auto timed = [&](PartCost& p, double linear_flops, double score_flops) {
    p.flops_f = linear_flops + score_flops;
    p.f = p.flops_f / rate;
    p.i = (linear_flops + 2 * score_flops) / rate;
    p.w = linear_flops / rate;
  };

  ModelCosts out;
  const double attn_params = h * hd * (2 * heads + 2 * kv) + 2 * h;  // q, k, v, o and two norms
  // QK^T and AV: 2 products of T x hd x s per head; causal flash attention skips the masked half.
  const double score_flops = 4 * b * s * s * heads * hd * (m.flash_attention ? 0.5 : 1.0);
  const double attn_act = d * T * (2 * h + (heads + 2 * kv) * hd + heads * hd) +
                          (m.flash_attention ? 4 * T * heads : d * b * heads * s * s);
  for (int l = 0; l < m.layers; ++l) {
    PartCost p;
    double linear_params = attn_params - 2 * h, ffn_act = 0;
    p.dense_params = attn_params;
    if (m.is_moe_layer(l)) {
      const double e = static_cast<double>(m.moe.expert_ffn), E = m.moe.experts, k = m.moe.top_k;
      const double one = mats * h * e, shared = m.moe.shared_experts;
      p.dense_params += shared * one + h * E;  // shared experts and the router: on every device
      p.expert_params = E / par.ep * one;
      linear_params += (k + shared) * one + h * E;  // what one token multiplies with
      ffn_act = 2 * d * T * h + k * T * d * (h + (mats == 3 ? 3 : 2) * e) + shared * T * d * (mats == 3 ? 3 : 2) * e +
                4 * T * E;
      // Dispatch and combine: each token's hidden state to and from its top-k
      // experts; (ep-1)/ep of them live on other devices.
      p.a2a_bytes = 2 * d * T * k * h * (par.ep - 1) / par.ep;
      p.a2a_f = p.a2a_b = all_to_all_seconds(c, p.a2a_bytes, par.ep);
    } else {
      const double f = static_cast<double>(m.ffn);
      p.dense_params += mats * h * f;
      linear_params += mats * h * f;
      ffn_act = 2 * d * T * h + d * T * f * (mats == 3 ? 3 : 2);
    }
    timed(p, 2 * T * linear_params, score_flops);
    p.act_bytes = attn_act + ffn_act;
    if (par.recompute) {
      p.act_bytes = d * T * h;
      p.i += p.f;
      p.a2a_b += p.a2a_f;
    }
    out.layers.push_back(p);
  }
  // Embedding: a table lookup (no FLOPs worth counting); it keeps the token ids.
  out.embedding.dense_params = V * h + (m.learned_positions ? s * h : 0);
  out.embedding.act_bytes = 8 * T;
  // Head: final norm, the vocabulary projection, and a loss in fp32 that
  // keeps its softmax.
  timed(out.head, 2 * T * h * V, 0);
  out.head.dense_params = (m.tied_embeddings ? 0 : V * h) + 2 * h;
  out.head.act_bytes = 2 * d * T * h + (d + 4) * T * V;

  out.boundary_bytes = d * T * h;
  // Pipeline neighbours are dp devices apart (the data-parallel index varies fastest).
  out.p2p_bandwidth = group_bandwidth(c, par.pp, par.dp);
  out.p2p_latency = c.link_latency_us * 1e-6;
  out.p2p_seconds = par.pp > 1 ? out.p2p_latency + out.boundary_bytes / out.p2p_bandwidth : 0;
  return out;
}

}  // namespace dualpipe::plan

namespace dualpipe::plan {

double total_params(const ModelSpec& m) {
  ClusterSpec one;
  one.devices = 1;
  one.matmul_tflops = one.intra_node_gbps = one.inter_node_gbps = 1;
  const ModelCosts mc = model_costs(m, one, Parallel{});
  double n = mc.embedding.dense_params + mc.head.dense_params;
  for (const PartCost& p : mc.layers) n += p.dense_params + p.expert_params;
  return n;
}

double active_params(const ModelSpec& m) {
  const double mats = m.gated_ffn ? 3 : 2, h = static_cast<double>(m.hidden);
  double n = total_params(m);
  for (int l = 0; l < m.layers; ++l)
    if (m.is_moe_layer(l))
      n -= static_cast<double>(m.moe.experts - m.moe.top_k) * mats * h * static_cast<double>(m.moe.expert_ffn);
  return n;
}

}  // namespace dualpipe::plan
