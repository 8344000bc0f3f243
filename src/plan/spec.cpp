#include "dualpipe/plan/spec.h"

#include <fmt/format.h>

#include <cmath>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "plan/presets.h"
#include "dualpipe/schedule/closest.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe::plan {
namespace {

using nlohmann::json;

// Sizes beyond these are not a model this planner can say anything useful
// about (and keep every product below 2^63 and finite in a double).
constexpr std::int64_t kMaxDim = std::int64_t{1} << 24;
constexpr int kMaxLayers = 4096;

// Reads one field with its valid range; "where.key" names it in errors.
class Fields {
 public:
  Fields(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) throw Error(fmt::format("{}: expected a JSON object", where_));
  }
  bool has(const char* key) const {
    known_.insert(key);
    return j_.contains(key) && !j_.at(key).is_null();
  }
  // Refuses any key no accessor asked for (a misspelt field would otherwise
  // be silently left at its default), naming the closest known one.
  void no_other_keys() const {
    known_.insert("about");  // free text, for the reader
    for (const auto& item : j_.items()) {
      if (known_.count(item.key())) continue;
      // Suggest only names within 3 edits.
      const std::string closest = closest_word(item.key(), {known_.begin(), known_.end()});
      throw Error(fmt::format("{}.{} is not a field of {}{}", where_, item.key(), where_,
                              closest.empty() ? "" : fmt::format(" (did you mean {}?)", closest)));
    }
  }
  std::string name(const char* key) const { return fmt::format("{}.{}", where_, key); }

  std::int64_t integer(const char* key, std::int64_t lo, std::int64_t hi) const {
    if (!has(key)) throw Error(fmt::format("{} is missing (an integer in [{}, {}])", name(key), lo, hi));
    return integer_value(key, lo, hi);
  }
  std::int64_t integer(const char* key, std::int64_t lo, std::int64_t hi, std::int64_t fallback) const {
    return has(key) ? integer_value(key, lo, hi) : fallback;
  }
  double number(const char* key, double lo, double hi) const {
    if (!has(key)) throw Error(fmt::format("{} is missing (a number in [{:g}, {:g}])", name(key), lo, hi));
    return number_value(key, lo, hi);
  }
  double number(const char* key, double lo, double hi, double fallback) const {
    return has(key) ? number_value(key, lo, hi) : fallback;
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_.at(key).is_boolean()) throw Error(fmt::format("{} must be true or false", name(key)));
    return j_.at(key).get<bool>();
  }
  std::string text(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!j_.at(key).is_string()) throw Error(fmt::format("{} must be a string", name(key)));
    return j_.at(key).get<std::string>();
  }
  const json& at(const char* key) const { return j_.at(key); }

 private:
  std::int64_t integer_value(const char* key, std::int64_t lo, std::int64_t hi) const {
    const json& v = j_.at(key);
    const bool whole = v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() &&
                                                 std::fabs(v.get<double>()) < 9e18);
    if (!whole) throw Error(fmt::format("{} must be an integer in [{}, {}] (got {})", name(key), lo, hi, v.dump()));
    const double d = v.get<double>();
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
      throw Error(fmt::format("{} must be in [{}, {}] (got {})", name(key), lo, hi, v.dump()));
    return v.is_number_integer() ? v.get<std::int64_t>() : static_cast<std::int64_t>(d);
  }
  double number_value(const char* key, double lo, double hi) const {
    const json& v = j_.at(key);
    if (!v.is_number()) throw Error(fmt::format("{} must be a number in [{:g}, {:g}] (got {})", name(key), lo, hi, v.dump()));
    const double d = v.get<double>();
    if (!(d >= lo && d <= hi)) throw Error(fmt::format("{} must be in [{:g}, {:g}] (got {})", name(key), lo, hi, v.dump()));
    return d;
  }

  const json& j_;
  std::string where_;
  mutable std::set<std::string> known_;
};

int dtype_size(const std::string& dtype, const std::string& field) {
  if (dtype == "fp8") return 1;
  if (dtype == "bf16" || dtype == "fp16") return 2;
  if (dtype == "fp32" || dtype == "float32") return 4;
  if (dtype == "fp64" || dtype == "float64") return 8;
  throw Error(fmt::format("{} must be one of fp8, bf16, fp16, fp32, fp64 (got '{}')", field, dtype));
}

MoeSpec parse_moe(const json& j, const std::string& where, int layers) {
  Fields f(j, where);
  MoeSpec m;
  m.experts = static_cast<int>(f.integer("experts", 1, 1 << 16));
  m.top_k = static_cast<int>(f.integer("top_k", 1, m.experts));
  m.shared_experts = static_cast<int>(f.integer("shared_experts", 0, 64, 0));
  m.expert_ffn = f.integer("expert_ffn", 1, kMaxDim);
  m.max_nodes = static_cast<int>(f.integer("max_nodes", 0, 1 << 20, 0));
  m.dispatch_bytes = f.number("dispatch_bytes", 0.5, 8, 0);
  m.combine_bytes = f.number("combine_bytes", 0.5, 8, 0);
  m.imbalance = f.number("imbalance", 1, 100, 1);
  m.is_moe.assign(static_cast<std::size_t>(layers), false);
  if (f.has("layers") && f.has("first_dense_layers"))
    throw Error(fmt::format("{}: give either layers or first_dense_layers, not both", where));
  if (f.has("layers")) {
    const json& list = f.at("layers");
    if (!list.is_array() || list.empty())
      throw Error(fmt::format("{}.layers must be a non-empty list of layer indices in [0, {}]", where, layers - 1));
    for (const json& v : list) {
      if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() >= layers)
        throw Error(fmt::format("{}.layers: every entry must be a layer index in [0, {}] (got {})", where, layers - 1,
                                v.dump()));
      m.is_moe[v.get<std::size_t>()] = true;
    }
  } else {
    const auto first_dense = f.integer("first_dense_layers", 0, layers - 1, 0);
    for (int l = static_cast<int>(first_dense); l < layers; ++l) m.is_moe[static_cast<std::size_t>(l)] = true;
  }
  f.no_other_keys();
  return m;
}

MlaSpec parse_mla(const json& j, const std::string& where) {
  Fields f(j, where);
  MlaSpec a;
  a.q_lora_rank = f.integer("q_lora_rank", 0, kMaxDim, 0);
  a.kv_lora_rank = f.integer("kv_lora_rank", 1, kMaxDim);
  a.qk_nope_dim = f.integer("qk_nope_head_dim", 1, kMaxDim);
  a.qk_rope_dim = f.integer("qk_rope_head_dim", 0, kMaxDim, 0);
  a.v_head_dim = f.integer("v_head_dim", 1, kMaxDim);
  f.no_other_keys();
  return a;
}

void parse_training(const Fields& t, ModelSpec& m) {
  m.param_bytes = t.number("param_bytes", 0.5, 16, m.dtype_bytes);
  m.grad_bytes = t.number("grad_bytes", 0, 16, 4);
  m.optimizer_bytes = t.number("optimizer_bytes", 0, 64, 12);
  m.recompute = t.text("recompute", "auto");
  if (m.recompute != "auto" && m.recompute != "none" && m.recompute != "selective" && m.recompute != "full")
    throw Error(fmt::format("{} must be auto, none, selective or full (got '{}')", t.name("recompute"), m.recompute));
  m.gemm_precision = t.text("gemm_precision", m.dtype == "fp8" ? "fp8" : "bf16");
  if (m.gemm_precision != "bf16" && m.gemm_precision != "fp8")
    throw Error(fmt::format("{} must be bf16 or fp8 (got '{}')", t.name("gemm_precision"), m.gemm_precision));
  m.fp8_activations = t.boolean("fp8_activations", false);
  t.no_other_keys();
}

// Fills the cluster's rates, memory and NVLink from a device preset.
void apply_device(const Fields& f, ClusterSpec& c) {
  const std::string name = f.text("device", "");
  std::string names;
  for (const DeviceSpec& d : device_presets()) {
    names += (names.empty() ? "" : ", ") + d.name;
    if (d.name != name) continue;
    c.memory_gib = d.memory_gib;
    c.matmul_tflops = d.peak_bf16_tflops * d.bf16_efficiency;
    c.fp8_tflops = d.peak_fp8_tflops * d.fp8_efficiency;
    c.intra_node_gbps = d.intra_node_gbps;
    c.reserve_gib = d.reserve_gib;
    return;
  }
  throw Error(fmt::format("{} must be one of {} (got '{}')", f.name("device"), names, name));
}

}  // namespace

// Peak dense rates are the vendors' data-sheet figures (SXM parts, without
// sparsity). Efficiencies: the share of peak a large matrix product
// sustains, one per precision, from published per-product measurements
// (docs/planner.md, "Device presets", says which); H800 is an H100 with
// fewer NVLink lanes, so the two share them.
const std::vector<DeviceSpec>& device_presets() {
  static const std::vector<DeviceSpec> list = {
      {"H100", 989.4, 1978.9, 0.80, 0.70, 79.6, 450, 4},
      {"H800", 989.4, 1978.9, 0.80, 0.70, 79.6, 160, 4},
      {"A100", 312, 0, 0.87, 0, 79.2, 300, 4},
  };
  return list;
}

nlohmann::json read_json_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(fmt::format("cannot read '{}': it is a directory", path));
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("cannot open '{}'", path));
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    std::string what = e.what();
    throw Error(fmt::format("'{}' is not valid JSON: {}", path, what.substr(0, what.find('\n'))));
  }
}

ModelSpec parse_model(const json& j, const std::string& where) {
  Fields f(j, where);
  ModelSpec m;
  m.name = f.text("name", "model");
  m.layers = static_cast<int>(f.integer("layers", 1, kMaxLayers));
  m.hidden = f.integer("hidden", 1, kMaxDim);
  m.heads = f.integer("heads", 1, m.hidden);
  m.kv_heads = f.integer("kv_heads", 1, m.heads, m.heads);
  if (m.heads % m.kv_heads != 0)
    throw Error(fmt::format("{} ({}) must divide {} ({})", f.name("kv_heads"), m.kv_heads, f.name("heads"), m.heads));
  m.head_dim = f.integer("head_dim", 1, kMaxDim, m.hidden / m.heads);
  m.vocab = f.integer("vocab", 1, kMaxDim);
  m.seq_len = f.integer("seq_len", 1, kMaxDim);
  m.dtype = f.text("dtype", "bf16");
  m.dtype_bytes = dtype_size(m.dtype, f.name("dtype"));
  m.gated_ffn = f.boolean("gated_ffn", true);
  m.flash_attention = f.boolean("flash_attention", true);
  m.tied_embeddings = f.boolean("tied_embeddings", false);
  m.learned_positions = f.boolean("learned_positions", false);
  if (f.has("moe")) m.moe = parse_moe(f.at("moe"), f.name("moe"), m.layers);
  if (f.has("mla")) m.mla = parse_mla(f.at("mla"), f.name("mla"));
  m.mtp_depth = static_cast<int>(f.integer("mtp_depth", 0, 16, 0));
  bool any_dense = m.moe.experts == 0;
  for (int l = 0; l < m.layers && !any_dense; ++l) any_dense = !m.is_moe_layer(l);
  // ffn is the dense layers' width: required only where a dense layer exists.
  m.ffn = any_dense ? f.integer("ffn", 1, kMaxDim) : f.integer("ffn", 1, kMaxDim, 0);
  if (f.has("training")) {
    parse_training(Fields(f.at("training"), f.name("training")), m);
  } else {
    m.param_bytes = m.dtype_bytes;
  }
  f.no_other_keys();
  return m;
}

ClusterSpec parse_cluster(const json& j, const std::string& where) {
  Fields f(j, where);
  ClusterSpec c;
  c.name = f.text("name", "cluster");
  c.devices = static_cast<int>(f.integer("devices", 1, 1 << 20));
  c.devices_per_node = static_cast<int>(f.integer("devices_per_node", 1, c.devices, 1));
  if (c.devices % c.devices_per_node != 0)
    throw Error(fmt::format("{} ({}) must divide {} ({})", f.name("devices_per_node"), c.devices_per_node,
                            f.name("devices"), c.devices));
  if (f.has("device")) {
    apply_device(f, c);
    c.memory_gib = f.number("memory_gib", 1e-6, 1e6, c.memory_gib);
    c.matmul_tflops = f.number("matmul_tflops", 1e-9, 1e6, c.matmul_tflops);
    c.fp8_tflops = f.number("fp8_tflops", 0, 1e6, c.fp8_tflops);
    c.intra_node_gbps = f.number("intra_node_gbps", 1e-9, 1e6, c.intra_node_gbps);
    c.reserve_gib = f.number("reserve_gib", 0, 1e6, c.reserve_gib);
  } else {
    c.memory_gib = f.number("memory_gib", 1e-6, 1e6);
    c.matmul_tflops = f.number("matmul_tflops", 1e-9, 1e6);
    c.fp8_tflops = f.number("fp8_tflops", 0, 1e6, 0);
    c.intra_node_gbps = f.number("intra_node_gbps", 1e-9, 1e6);
    c.reserve_gib = f.number("reserve_gib", 0, 1e6, 0);
  }
  if (c.reserve_gib >= c.memory_gib)
    throw Error(fmt::format("{} ({:g}) must be below {} ({:g})", f.name("reserve_gib"), c.reserve_gib,
                            f.name("memory_gib"), c.memory_gib));
  c.all_to_all_efficiency = f.number("all_to_all_efficiency", 0.01, 1, 1);
  // One node: nothing crosses nodes, so the field may be left out.
  c.inter_node_gbps = c.devices > c.devices_per_node ? f.number("inter_node_gbps", 1e-9, 1e6)
                                                     : f.number("inter_node_gbps", 1e-9, 1e6, c.intra_node_gbps);
  c.link_latency_us = f.number("link_latency_us", 0, 1e6, 0);
  f.no_other_keys();
  return c;
}

namespace {

// Runs `parse`, prefixing any error with `source` (a file or a preset).
template <typename Parse>
auto from_source(const std::string& source, Parse parse) {
  try {
    return parse();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", source, e.what()));
  }
}

}  // namespace

ModelSpec read_model_file(const std::string& path) {
  const json j = read_json_file(path);
  return from_source(path, [&] { return parse_model(j); });
}

ClusterSpec read_cluster_file(const std::string& path) {
  const json j = read_json_file(path);
  return from_source(path, [&] { return parse_cluster(j); });
}

Preset load_preset(const std::string& name) {
  for (const EmbeddedPreset& p : embedded_presets()) {
    if (name != p.name) continue;
    const json j = json::parse(p.json);
    const std::string source = fmt::format("preset {}", name);
    return {from_source(source, [&] { return parse_model(j.at("model")); }),
            from_source(source, [&] { return parse_cluster(j.at("cluster")); })};
  }
  std::string names;
  for (const std::string& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  throw Error(fmt::format("unknown preset '{}' (presets: {})", name, names));
}

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  for (const EmbeddedPreset& p : embedded_presets()) out.emplace_back(p.name);
  return out;
}

}  // namespace dualpipe::plan
