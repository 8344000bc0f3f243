#pragma once
// What the planner is told: a model (its shape, in the units of a
// transformer) and a cluster (devices, memory, compute and link rates), read
// from JSON. docs/planner.md gives the schema; presets/ holds examples, which
// are embedded in the program (presets.h).
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dualpipe::plan {

// Mixture-of-experts layers: routed experts of which each token uses top_k,
// plus shared experts every token uses (DeepSeek-V3: 256, 8 and 1).
struct MoeSpec {
  int experts = 0;          // routed experts per MoE layer; 0: a dense model
  int top_k = 0;
  int shared_experts = 0;
  std::int64_t expert_ffn = 0;  // inner width of one expert
  std::vector<bool> is_moe;     // [layer]: true where the layer's FFN is the MoE one
  // Node-limited routing (DeepSeek-V3: 4): a token's experts lie on at most
  // this many nodes, and its hidden state crosses the network once per node,
  // then goes on over NVLink to each expert there. 0: no limit, every expert
  // copy sent on its own.
  int max_nodes = 0;
  // Bytes per element sent by the forward's dispatch and combine (DeepSeek-V3:
  // FP8 dispatch, 1; BF16 combine, 2); the backward sends gradients in the
  // model's dtype. Default: the model's dtype.
  double dispatch_bytes = 0, combine_bytes = 0;
  // The busiest device's tokens over the mean (routing imbalance), >= 1.
  double imbalance = 1;
};

// Multi-head latent attention (DeepSeek-V2/V3): queries and keys/values
// through low-rank latents, heads of a no-RoPE part and a RoPE part.
struct MlaSpec {
  std::int64_t q_lora_rank = 0;  // 0: queries projected directly
  std::int64_t kv_lora_rank = 0;  // > 0: MLA is on
  std::int64_t qk_nope_dim = 0, qk_rope_dim = 0, v_head_dim = 0;
  bool on() const { return kv_lora_rank > 0; }
};

struct ModelSpec {
  std::string name;
  int layers = 0;
  std::int64_t hidden = 0, ffn = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0, seq_len = 0;
  std::string dtype = "bf16";
  int dtype_bytes = 2;          // activations, parameters and transfers
  bool gated_ffn = true;        // SwiGLU (3 matrices) or GELU (2)
  bool flash_attention = true;  // no s x s score matrix kept for the backward
  bool tied_embeddings = false;
  bool learned_positions = false;  // a seq_len x hidden position table beside the token embedding
  MoeSpec moe;
  MlaSpec mla;
  // Multi-token prediction modules after the last layer (DeepSeek-V3: 1):
  // each a transformer layer, a 2h x h projection and the shared head.
  int mtp_depth = 0;
  // Training state per parameter: weights as stored, gradients, optimizer
  // (e.g. Megatron's mixed precision: 2, 4, 12; DeepSeek-V3: 2, 4, 8).
  double param_bytes = 2, grad_bytes = 4, optimizer_bytes = 12;
  // Activation recomputation: none, selective (norms, attention
  // up-projections and the FFN activation function are recomputed in the
  // backward rather than kept), full (a layer keeps only its input), or auto
  // (the planner tries all three).
  std::string recompute = "auto";
  // Precision of the matrix products of the linear layers (bf16 or fp8);
  // attention scores, the head and the embedding stay in the model's dtype.
  std::string gemm_precision = "bf16";
  // Inputs of the FFN and expert matrix products kept for the backward in
  // FP8, and the attention output projection's input in 12 bits
  // (DeepSeek-V3's low-precision activation cache).
  bool fp8_activations = false;

  bool is_moe_layer(int l) const { return moe.experts > 0 && moe.is_moe[static_cast<std::size_t>(l)]; }
};

// One accelerator type: peak dense matrix-product rates per precision, one
// efficiency per precision (the sustained share of peak of large matrix
// products, calibrated once from a published per-matrix-product figure:
// docs/planner.md), memory and NVLink rate. Used for every model.
struct DeviceSpec {
  std::string name;
  double peak_bf16_tflops = 0, peak_fp8_tflops = 0;  // 0: no such precision
  double bf16_efficiency = 0, fp8_efficiency = 0;
  double memory_gib = 0, intra_node_gbps = 0;
  double reserve_gib = 0;  // CUDA context, communication buffers, fragmentation
};
const std::vector<DeviceSpec>& device_presets();

struct ClusterSpec {
  std::string name;
  int devices = 0;
  int devices_per_node = 1;
  double memory_gib = 0;       // per device
  // Sustained matrix-product rate per device, TFLOP/s, in BF16/FP16 (or the
  // model's dtype) and in FP8 (0: no FP8); from `device` or given.
  double matmul_tflops = 0;
  double fp8_tflops = 0;
  double reserve_gib = 0;      // memory no plan may use (context, buffers, fragmentation)
  double all_to_all_efficiency = 1;  // achieved share of the link rates in an all-to-all
  double intra_node_gbps = 0;  // GB/s one device sends within its node
  double inter_node_gbps = 0;  // GB/s one device sends to other nodes
  double link_latency_us = 0;  // per transfer
};

// Parse and validate; every problem is a dualpipe::Error naming the field (with
// the `where` prefix, e.g. "model.hidden") and its valid range. A key that
// is not a field (a misspelling) is refused, naming the closest field;
// "about" (free text) is allowed in every object.
ModelSpec parse_model(const nlohmann::json& j, const std::string& where = "model");
ClusterSpec parse_cluster(const nlohmann::json& j, const std::string& where = "cluster");
// Reads a JSON file; names the file in errors.
nlohmann::json read_json_file(const std::string& path);
// Reads and parses a model or cluster file; errors start with the file name
// ("m.json: model.hidden must be ...").
ModelSpec read_model_file(const std::string& path);
ClusterSpec read_cluster_file(const std::string& path);

// The model and cluster of a preset (presets/NAME.json, embedded).
struct Preset {
  ModelSpec model;
  ClusterSpec cluster;
};
Preset load_preset(const std::string& name);
std::vector<std::string> preset_names();

// Parameters of the whole model (all experts), for summaries and tests.
double total_params(const ModelSpec& m);
// Parameters one token uses (top-k experts only).
double active_params(const ModelSpec& m);

}  // namespace dualpipe::plan
