#include "dualpipe/sim/cost.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "dualpipe/schedule/error.h"

namespace dualpipe {
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

template <class T>
std::string list_text(const std::vector<T>& v) {
  return fmt::format("{}", fmt::join(v, ":"));
}

// Colon-separated pieces of an option value; an empty piece is an error.
std::vector<std::string> split_colons(const std::string& text, const std::string& what) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    auto colon = text.find(':', start);
    out.push_back(text.substr(start, colon - start));
    if (out.back().empty()) throw Error(fmt::format("{}: expected a number or numbers separated by ':' (got '{}')",
                                                    what, text));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return out;
}

}  // namespace

std::vector<double> parse_stage_values(const std::string& text, const std::string& what) {
  std::vector<double> out;
  for (const std::string& piece : split_colons(text, what)) {
    const char* begin = piece.c_str();
    char* end = nullptr;
    double v = std::strtod(begin, &end);
    if (end != begin + piece.size() || !std::isfinite(v))
      throw Error(fmt::format("{}: '{}' is not a finite number", what, piece));
    out.push_back(v);
  }
  return out;
}

std::vector<int> parse_stage_counts(const std::string& text, const std::string& what) {
  std::vector<int> out;
  for (const std::string& piece : split_colons(text, what)) {
    const char* begin = piece.c_str();
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(begin, &end, 10);
    if (end != begin + piece.size() || errno == ERANGE || v < 0 || v > 1000000)
      throw Error(fmt::format("{}: '{}' is not a whole number from 0 to 1000000", what, piece));
    out.push_back(static_cast<int>(v));
  }
  return out;
}

const char* link_name(Costs::Link link) {
  switch (link) {
    case Costs::Link::Fifo: return "fifo";
    case Costs::Link::Shared: return "shared";
    case Costs::Link::Duplex: return "duplex";
    default: return "apart";
  }
}

Costs::Link link_of(const std::string& name) {
  for (Costs::Link l : {Costs::Link::Apart, Costs::Link::Fifo, Costs::Link::Shared, Costs::Link::Duplex})
    if (name == link_name(l)) return l;
  throw Error("link model '" + name + "' is none of apart, fifo, shared, duplex");
}

bool Costs::has_a2a() const {
  const std::size_t n = std::max({a2a_bytes.size(), a2a_bwd_bytes.size(), a2a_phases.size(), std::size_t{1}});
  for (std::size_t s = 0; s < n; ++s) {
    const int st = static_cast<int>(s);
    if (phases(st) > 0 && (a2a_fwd(st) > 0 || a2a_bwd(st) > 0)) return true;
  }
  return false;
}

Costs parse_costs(const std::string& spec) {
  Costs c;
  if (spec.empty()) return c;
  std::vector<std::string> seen;  // a key given twice would silently keep the last value
  std::size_t start = 0;
  while (start <= spec.size()) {
    auto comma = spec.find(',', start);
    std::string item = spec.substr(start, comma - start);
    auto eq = item.find('=');
    if (eq == std::string::npos)
      throw Error(fmt::format("cost '{}': expected KEY=VALUE with KEY one of F, B, W, FB", item));
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (value.empty()) throw Error(fmt::format("cost {}: missing value", key));
    if (std::find(seen.begin(), seen.end(), key) != seen.end())
      throw Error(fmt::format("cost {} is given twice in '{}': give each of F, B, W, FB once", key, spec));
    seen.push_back(key);
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
  if (!FB_pair.empty() &&
      (FB_pair_stages != stages || FB_pair.size() != static_cast<std::size_t>(stages) * static_cast<std::size_t>(stages)))
    throw Error(fmt::format("cost FB per pair of stages has {} values for {} stages; give {} x {}", FB_pair.size(),
                            FB_pair_stages, stages, stages));
  for (double x : FB_pair)
    if (!(x >= 0)) throw Error(fmt::format("cost FB must not be negative (got {})", x));
  // NaN fails every comparison, so "x < 0" alone would let --comm-latency nan
  // through (CLI11 reads "nan" and "inf" as doubles) and poison every time.
  auto finite_non_negative = [](double x, const char* what) {
    if (!std::isfinite(x)) throw Error(fmt::format("{} must be a finite number (got {})", what, x));
    if (x < 0) throw Error(fmt::format("{} must not be negative (got {})", what, x));
  };
  finite_non_negative(latency, "communication latency");
  finite_non_negative(bandwidth, "communication bandwidth");
  finite_non_negative(act_bytes, "activation size");

  // All-to-all: lists of 1 or `stages` values, finite, not negative, and a
  // rate wherever there are bytes to move (else a phase would take forever).
  auto check_a2a_list = [&](std::size_t size, const char* what) {
    if (size != 1 && static_cast<int>(size) != stages)
      throw Error(fmt::format("{} has {} values; give one for all stages or one per stage ({})", what, size, stages));
  };
  check_a2a_list(a2a_bytes.size(), "all-to-all bytes");
  if (!a2a_bwd_bytes.empty()) check_a2a_list(a2a_bwd_bytes.size(), "backward all-to-all bytes");
  check_a2a_list(a2a_phases.size(), "all-to-all phases");
  for (double x : a2a_bytes) finite_non_negative(x, "all-to-all bytes");
  for (double x : a2a_bwd_bytes) finite_non_negative(x, "backward all-to-all bytes");
  for (int k : a2a_phases)
    if (k < 0) throw Error(fmt::format("all-to-all phases must not be negative (got {})", k));
  finite_non_negative(a2a_rate, "all-to-all link rate");
  finite_non_negative(a2a_latency, "all-to-all latency");
  auto positive = [](double x) { return x > 0; };
  const bool bytes = std::any_of(a2a_bytes.begin(), a2a_bytes.end(), positive) ||
                     std::any_of(a2a_bwd_bytes.begin(), a2a_bwd_bytes.end(), positive);
  if (bytes && a2a_rate <= 0)
    throw Error("all-to-all bytes need an all-to-all link rate (bytes per time unit) above 0");
  // A phase, and a chunk's phases together, must stay finite.
  for (int s = 0; s < stages; ++s) {
    const double worst = std::max(a2a_fwd(s), a2a_bwd(s)) * phases(s);
    if (!std::isfinite(worst))
      throw Error(fmt::format("all-to-all time of a chunk of stage {} overflows (use other units)", s));
  }
}

std::string describe(const Costs& c) {
  std::string s = fmt::format("F={} B={} W={}", list_text(c.F), list_text(c.B), list_text(c.W));
  s += c.FB ? fmt::format(" FB={}", *c.FB) : std::string(" FB=F+B");
  if (c.transfer() > 0) s += fmt::format(" transfer={}", c.transfer());
  if (c.has_a2a()) {
    s += fmt::format(" a2a={}", list_text(c.a2a_bytes));
    if (!c.a2a_bwd_bytes.empty()) s += fmt::format("/{}", list_text(c.a2a_bwd_bytes));
    s += fmt::format(" phases={} rate={}", list_text(c.a2a_phases), c.a2a_rate);
    if (c.a2a_latency > 0) s += fmt::format(" a2a-latency={}", c.a2a_latency);
    s += c.fb_overlap ? " overlap=on" : " overlap=off";
  }
  return s;
}

Costs costs_from_stage_times(const std::vector<StageTimes>& stages) {
  Costs c;
  c.F.assign(stages.size(), 0);
  c.B.assign(stages.size(), 0);
  c.W.assign(stages.size(), 0);
  for (std::size_t s = 0; s < stages.size(); ++s) {
    const StageTimes& t = stages[s];
    c.F[s] = std::max(t.F, 0.0);
    c.W[s] = std::max(t.W, 0.0);
    c.B[s] = t.B >= 0 ? t.B : std::max(t.I, 0.0) + c.W[s];
    c.W[s] = std::min(c.W[s], c.B[s]);
  }
  return c;
}

}  // namespace dualpipe
