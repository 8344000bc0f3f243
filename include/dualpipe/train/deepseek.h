#pragma once
// `deepseek`: a small DeepSeek-V3 for character-level language modelling,
// cut into pipeline stages like gpt (gpt.h: the same corpus, the same block
// split over stages, the same initialisation). docs/models.md gives every
// part with its formula and the option that sets it.
//
//   stage 0:       token embedding (positions come from RoPE)
//   every stage:   its share of the L blocks (pre-RMSNorm)
//                    x = x + MLA(norm1(x))
//                    x = x + FFN(norm2(x))   blocks < dense_layers: a dense
//                                            SwiGLU MLP; the others DeepSeekMoE
//                                            (train/moe.h, MoeConfig::deepseek)
//   last stage:    final RMSNorm + LM head; with multi-token prediction
//                  (mtp_weight > 0) also the MTP module of depth 1
//
// Multi-head latent attention (MLA), per token h (d = hidden, H heads of
// d_h = d / H, d_c = kv_latent, d'_c = q_latent, d_r = rope_dim):
//   c_Q = norm(W_DQ h)                 [d'_c]
//   q_C = W_UQ c_Q, q_R = RoPE(W_QR c_Q)   per head [d_h], [d_r]
//   c_KV = norm(W_DKV h)               [d_c]
//   k_C = W_UK c_KV, v = W_UV c_KV         per head [d_h]
//   k_R = RoPE(W_KR h)                 [d_r], one for all heads
//   head i attends causally with q = [q_C; q_R], k = [k_C; k_R], scale
//   1/sqrt(d_h + d_r); out = W_O [o_1; ...; o_H].
//
// Multi-token prediction: the tokens travel with the hidden state as one
// more channel of the stage boundary ([B, T, d + 1]; no gradient flows into
// it), so the last stage sees them. For positions i < T-1:
//   h'_i = M [norm(h_i); norm(E'(t_{i+1}))],  h''= block(h'),
//   logits'_i = head(norm_f(h''_i)) predicts t_{i+2}
// with the main model's output head and final norm, and E = E' the main
// model's token embedding: the last stage holds a copy of stage 0's, tied to
// it (PipelineModel::tied: the two copies' gradients are summed, so they
// stay equal; with one stage it is the same module). The
// last stage returns [logits; logits'] along the sequence ([B, 2T-1, V]);
// loss = CE(main) + mtp_weight * CE(MTP).
//
// Stateless functions; the model's callbacks follow PipelineModel's rules.
#include "dualpipe/train/models.h"

namespace dualpipe {

// Throws dualpipe::Error for bad deepseek settings (one line each).
void check_deepseek(const ModelConfig& c);

PipelineModel deepseek_model(const ModelConfig& c, const ExpertGroup& experts = {});

// Effective latent sizes (0 means hidden / 2).
inline int64_t kv_latent(const ModelConfig& c) { return c.kv_latent > 0 ? c.kv_latent : std::max<int64_t>(1, c.hidden / 2); }
inline int64_t q_latent(const ModelConfig& c) { return c.q_latent > 0 ? c.q_latent : std::max<int64_t>(1, c.hidden / 2); }

}  // namespace dualpipe
