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
  // Training state per parameter: weights as stored, gradients, optimizer
  // (e.g. Megatron's mixed precision: 2, 4, 12; DeepSeek-V3: 2, 4, 8).
  double param_bytes = 2, grad_bytes = 4, optimizer_bytes = 12;
  // Full activation recomputation: "auto" lets the planner try both.
  std::string recompute = "auto";  // auto, none or full

  bool is_moe_layer(int l) const { return moe.experts > 0 && moe.is_moe[static_cast<std::size_t>(l)]; }
};

struct ClusterSpec {
  std::string name;
  int devices = 0;
  int devices_per_node = 1;
  double memory_gib = 0;       // per device
  double matmul_tflops = 0;    // sustained matrix-product rate per device, in the model's dtype
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
