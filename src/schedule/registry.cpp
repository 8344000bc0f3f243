#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"

namespace dualpipe {

namespace {

// Published formulas (docs/design.md, "The published table"), for uniform stages.
double one_f_one_b_bubble(const PublishedTerms& t) { return (t.PP - 1) * (t.F + t.B); }
double dualpipe_bubble(const PublishedTerms& t) { return (t.PP / 2.0 - 1) * (t.FB + t.B - 3 * t.W); }
PublishedActivations pp_activations(const PublishedTerms& t) { return {static_cast<double>(t.PP)}; }
// DualPipe's PP + 1 in units of its own stages, which are PP/S of a PP-stage.
PublishedActivations dualpipe_activations(const PublishedTerms& t) { return {(t.S + 1.0) * t.PP / t.S}; }


}  // namespace

const std::vector<Method>& methods() {
  using P = PublishedTerms;
  using A = PublishedActivations;
  static const std::vector<Method> list = {
      {"dualpipe", dualpipe, "DeepSeek-V3 bidirectional schedule; P ranks, P stages, two replicas per rank",
       PlacementStyle::TwoWay, dualpipe_bubble, dualpipe_activations, {"direction 0", "direction 1"}},
      {"dualpipev", dualpipev, "DualPipe cut in half (V shape); P ranks, 2P stages", PlacementStyle::V,
       dualpipe_bubble, dualpipe_activations, {"the V going down", "the way back up"}},
      {"1f1b", one_f_one_b, "one forward, one backward (PipeDream-Flush); P ranks, P stages",
       PlacementStyle::OnePerRank, one_f_one_b_bubble, pp_activations, {nullptr, nullptr}},
      {"gpipe", gpipe, "all forwards, then all backwards; P ranks, P stages", PlacementStyle::OnePerRank,
       one_f_one_b_bubble, [](const P& t) { return A{static_cast<double>(t.N)}; }, {nullptr, nullptr}},
      {"interleaved-1f1b", interleaved_1f1b, "Megatron interleaved 1F1B; P ranks, V*P stages (--chunks V)",
       PlacementStyle::Interleaved, [](const P& t) { return (t.PP - 1) * (t.F + t.B) / t.chunks; },
       [](const P& t) { return A{t.PP + (t.PP - 1.0) / t.chunks, -1, true}; }, {nullptr, nullptr}},
      {"combined-1f1b", combined_1f1b,
       "interleaved 1F1B with F&B pairs in its steady state (Megatron's combined 1F1B); P ranks, V*P stages",
       PlacementStyle::Interleaved, nullptr, nullptr, {nullptr, nullptr}},
      {"zb1p", zb1p, "zero-bubble ZB-H1 (Qi et al. 2024); P ranks, P stages", PlacementStyle::OnePerRank,
       [](const P& t) { return (t.PP - 1) * (t.F + t.B - 2 * t.W); }, pp_activations, {nullptr, nullptr}},
      {"zbv", zbv, "zero-bubble V schedule (ZB-V); P ranks, 2P stages", PlacementStyle::V, nullptr, nullptr,
       {"the V going down", "the way back up"}},
      {"chimera", chimera, "Chimera bidirectional pipelines (Li & Hoefler 2021); P ranks, P stages",
       PlacementStyle::TwoWay, [](const P& t) { return (t.PP / 2.0 - 1) * (t.F + t.B); },
       [](const P& t) { return A{static_cast<double>(t.PP / 2 + 1), static_cast<double>(t.PP)}; },
       {"the down pipeline", "the up pipeline"}},
  };
  return list;
}

int stage_count(PlacementStyle style, int ranks, int chunks) {
  switch (style) {
    case PlacementStyle::V: return 2 * ranks;
    case PlacementStyle::Interleaved: return chunks * ranks;
    case PlacementStyle::OnePerRank:
    case PlacementStyle::TwoWay: break;
  }
  return ranks;
}

int style_rank(PlacementStyle style, int ranks, int micro_batches, int stage, int mb) {
  switch (style) {
    case PlacementStyle::OnePerRank: return stage;
    case PlacementStyle::TwoWay: return mb < micro_batches / 2 ? stage : ranks - 1 - stage;
    case PlacementStyle::V: return stage < ranks ? stage : 2 * ranks - 1 - stage;
    case PlacementStyle::Interleaved: return stage % ranks;
  }
  return 0;
}

const Method* method_named(const std::string& name) {
  // Any case: "DualPipe", as the papers write it, is dualpipe.
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const Method& m : methods())
    if (lower == m.name) return &m;
  return nullptr;
}

const Method& find_method(const std::string& name) {
  if (const Method* m = method_named(name)) return *m;
  std::string known;
  for (const Method& m : methods()) known += known.empty() ? m.name : fmt::format(", {}", m.name);
  throw Error(fmt::format("unknown method '{}' (known: {})", name, known));
}

void require_feasible_size(const std::string& method, const Shape& shape) {
  if (shape.ranks < 1 || shape.micro_batches < 1 || shape.chunks < 1) return;  // the generator says why
  // In double: V * P * N of three int arguments can exceed 64 bits.
  const double P = shape.ranks, N = shape.micro_batches;
  // Not a method ("compare" for its reference cut): P stages.
  const Method* m = method_named(method);
  const double stages = m ? m->stage_count(1, shape.chunks) * P : P;
  const double cells = stages * std::max(N, 2 * P);
  if (cells > static_cast<double>(kMaxGeneratedCells))
    throw Error(fmt::format("{} with {} ranks, {} micro-batches{} is too large: {:.3g} (stage, micro-batch) pairs, "
                            "at most {} are supported",
                            method, shape.ranks, shape.micro_batches,
                            m && m->takes_chunks() ? fmt::format(" and {} chunks", shape.chunks) : "", cells,
                            kMaxGeneratedCells));
}

Schedule generate(const std::string& method, const Shape& shape) {
  const Method& m = find_method(method);
  require_feasible_size(m.name, shape);
  return m.generate(shape);
}

bool w_comes_next(const std::vector<Action>& list, std::size_t pos) {
  const Action& a = list[pos];
  if (a.op != Op::I) return false;
  std::size_t q = pos + 1;
  while (q < list.size() && !is_compute(list[q].op)) ++q;
  return q < list.size() && list[q] == Action::make(Op::W, a.stage, a.mb);
}

Schedule compute_only(const Schedule& s) {
  Schedule out = s;
  for (auto& rank : out.actions) {
    rank.clear();
  }
  for (std::size_t r = 0; r < s.actions.size(); ++r)
    for (const Action& a : s.actions[r])
      if (!is_comm(a.op)) out.actions[r].push_back(a);
  return out;
}

}  // namespace dualpipe
