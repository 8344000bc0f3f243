#include "dualpipe/plan/measured.h"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "dualpipe/plan/spec.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe::plan {
namespace {

MeasuredPart parse_part(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error(fmt::format("{} is missing (an object with f, i, w, act_bytes)", where));
  MeasuredPart p;
  for (auto [key, out] : {std::pair<const char*, double*>{"f", &p.f}, {"i", &p.i}, {"w", &p.w},
                          {"act_bytes", &p.act_bytes}}) {
    if (!j.contains(key) || !j.at(key).is_number())
      throw Error(fmt::format("{}.{} is missing (a number >= 0)", where, key));
    *out = j.at(key).get<double>();
    if (!(*out >= 0) || !std::isfinite(*out))
      throw Error(fmt::format("{}.{} must be a finite number >= 0 (got {})", where, key, *out));
  }
  return p;
}

}  // namespace

MeasuredCosts parse_measured(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error(fmt::format("{}: expected a JSON object", where));
  MeasuredCosts m;
  m.source = where;
  if (!j.contains("micro_batch_size") || !j.at("micro_batch_size").is_number_integer() ||
      j.at("micro_batch_size").get<long long>() < 1 || j.at("micro_batch_size").get<long long>() > (1 << 20))
    throw Error(fmt::format("{}.micro_batch_size must be an integer in [1, {}]", where, 1 << 20));
  m.micro_batch_size = j.at("micro_batch_size").get<int>();
  const nlohmann::json none;
  m.layer = parse_part(j.contains("layer") ? j.at("layer") : none, where + ".layer");
  m.embedding = parse_part(j.contains("embedding") ? j.at("embedding") : none, where + ".embedding");
  m.head = parse_part(j.contains("head") ? j.at("head") : none, where + ".head");
  if (j.contains("dense_layer")) m.dense_layer = parse_part(j.at("dense_layer"), where + ".dense_layer");
  if (j.contains("expert_parallel")) {
    const nlohmann::json& e = j.at("expert_parallel");
    if (!e.is_number_integer() || e.get<long long>() < 1 || e.get<long long>() > (1 << 20))
      throw Error(fmt::format("{}.expert_parallel must be an integer in [1, {}]", where, 1 << 20));
    m.expert_parallel = e.get<int>();
  }
  return m;
}

MeasuredCosts read_measured_file(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  try {
    MeasuredCosts m = parse_measured(j, "profile");
    m.source = path;
    return m;
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", path, e.what()));
  }
}

void apply_measured(ModelCosts& mc, const MeasuredCosts& m, const Parallel& par) {
  const double scale = static_cast<double>(par.micro_batch_size) / m.micro_batch_size;
  auto put = [&](PartCost& p, const MeasuredPart& q, bool layer) {
    p.f = q.f * scale;
    p.i = q.i * scale;
    p.w = q.w * scale;
    p.act_bytes = q.act_bytes * scale;
    p.rc = 0;
    if (layer && par.recompute == Recompute::Full) {
      p.rc = p.f;
      p.i += p.f;
      p.act_bytes = mc.boundary_bytes;
    }
  };
  for (PartCost& p : mc.layers) put(p, p.expert_params == 0 && m.dense_layer ? *m.dense_layer : m.layer, true);
  put(mc.embedding, m.embedding, false);
  put(mc.head, m.head, false);
}

}  // namespace dualpipe::plan
