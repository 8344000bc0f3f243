#include "sim/cost.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

#include "schedule/error.h"

namespace dp {
namespace {

double parse_number(const std::string& text, const std::string& key) {
  const char* begin = text.c_str();
  char* end = nullptr;
  double v = std::strtod(begin, &end);
  if (text.empty() || end != begin + text.size() || !std::isfinite(v))
    throw Error(fmt::format("cost {}: '{}' is not a number", key, text));
  return v;
}

std::vector<double> parse_list(const std::string& text, const std::string& key) {
  std::vector<double> out;
  std::size_t start = 0;
  while (true) {
    auto colon = text.find(':', start);
    out.push_back(parse_number(text.substr(start, colon - start), key));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return out;
}

std::string list_text(const std::vector<double>& v) {
  return fmt::format("{}", fmt::join(v, ":"));
}

}  // namespace

Costs parse_costs(const std::string& spec) {
  Costs c;
  if (spec.empty()) return c;
  std::size_t start = 0;
  while (start <= spec.size()) {
    auto comma = spec.find(',', start);
    std::string item = spec.substr(start, comma - start);
    auto eq = item.find('=');
    if (eq == std::string::npos)
      throw Error(fmt::format("cost '{}': expected KEY=VALUE with KEY one of F, B, W, FB", item));
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (value.empty()) throw Error(fmt::format("cost {}: missing value", key));
    if (key == "F")
      c.F = parse_list(value, key);
    else if (key == "B")
      c.B = parse_list(value, key);
    else if (key == "W")
      c.W = parse_list(value, key);
    else if (key == "FB")
      c.FB = parse_number(value, key);
    else
      throw Error(fmt::format("unknown cost '{}': expected F, B, W or FB", key));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return c;
}

void Costs::validate(int stages) const {
  auto check_list = [&](const std::vector<double>& v, const char* key) {
    if (v.size() != 1 && static_cast<int>(v.size()) != stages)
      throw Error(fmt::format("cost {} has {} values; give one for all stages or one per stage ({})", key, v.size(),
                              stages));
    for (double x : v)
      if (x < 0) throw Error(fmt::format("cost {} must not be negative (got {})", key, x));
  };
  check_list(F, "F");
  check_list(B, "B");
  check_list(W, "W");
  for (int s = 0; s < stages; ++s)
    if (w(s) > b(s))
      throw Error(fmt::format("cost W ({}) exceeds B ({}) at stage {}: B is the whole backward, W its weight part",
                              w(s), b(s), s));
  if (FB && *FB < 0) throw Error(fmt::format("cost FB must not be negative (got {})", *FB));
  // NaN fails every comparison, so "x < 0" alone would let --comm-latency nan
  // through (CLI11 reads "nan" and "inf" as doubles) and poison every time.
  auto finite_non_negative = [](double x, const char* what) {
    if (!std::isfinite(x)) throw Error(fmt::format("{} must be a finite number (got {})", what, x));
    if (x < 0) throw Error(fmt::format("{} must not be negative (got {})", what, x));
  };
  finite_non_negative(latency, "communication latency");
  finite_non_negative(bandwidth, "communication bandwidth");
  finite_non_negative(act_bytes, "activation size");
}

std::string describe(const Costs& c) {
  std::string s = fmt::format("F={} B={} W={}", list_text(c.F), list_text(c.B), list_text(c.W));
  s += c.FB ? fmt::format(" FB={}", *c.FB) : std::string(" FB=F+B");
  if (c.transfer() > 0) s += fmt::format(" transfer={}", c.transfer());
  return s;
}

}  // namespace dp
