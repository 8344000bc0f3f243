#include "dualpipe/plan/partition.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <numeric>
#include <set>

#include "dualpipe/schedule/error.h"

namespace dualpipe::plan {

std::vector<std::vector<HeldStage>> held_stages(const Placement& pl) {
  std::vector<std::vector<HeldStage>> out(pl.stages_of.size());
  for (std::size_t r = 0; r < out.size(); ++r)
    for (int st : pl.stages_of[r])
      out[r].push_back({st, static_cast<double>(pl.micro_batches_on(st, static_cast<int>(r))) / pl.micro_batches});
  return out;
}

namespace {

struct Score {
  double rank_max, stage_max;
  bool better_than(const Score& o) const {
    const double eps = 1e-12 * std::max(1.0, o.rank_max);
    if (rank_max < o.rank_max - eps) return true;
    if (rank_max > o.rank_max + eps) return false;
    return stage_max < o.stage_max - 1e-12 * std::max(1.0, o.stage_max);
  }
};

// The layers' times as stages: layers [a, b) as stage s, with the
// embedding on the first stage and the head on the last.
struct StageTimes {
  std::vector<double> prefix;  // [l]: time of layers [0, l)
  double first_extra, last_extra;
  int S;
  double operator()(int s, int a, int b) const {
    return prefix[b] - prefix[a] + (s == 0 ? first_extra : 0) + (s == S - 1 ? last_extra : 0);
  }
};

// 1. Linear partition: the cut (stage boundaries, S + 1 of them) that
//    minimises the slowest stage, by dynamic programming over (stages,
//    layers); optimal when every rank holds one stage. For the first l
//    layers in s stages, the last stage [k, l) is chosen where
//    max(best[s-1][k], its time) is least, the first such k. best[s-1][k]
//    never falls as k grows and the stage's time never rises, so that k is
//    where the first reaches the second or just before it; and that
//    crossing never moves left as l grows, so one sweep finds it for every
//    l: O(S L), not O(S L^2), for models of thousands of layers.
std::vector<int> linear_partition(const StageTimes& time, int L) {
  const int S = time.S, W = L - S + 1;  // row s holds l in [s, s + W)
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> prev(L + 1, inf), cur(L + 1, inf);
  std::vector<int> from(static_cast<std::size_t>(S + 1) * W, 0);
  prev[0] = 0;
  for (int s = 1; s <= S; ++s) {
    std::fill(cur.begin(), cur.end(), inf);
    int cross = s - 1;  // the first k in [s-1, l) with prev[k] >= the stage's time, else l
    for (int l = s; l <= L - (S - s); ++l) {
      auto v = [&](int k) { return std::max(prev[k], time(s - 1, k, l)); };
      while (cross < l && prev[cross] < time(s - 1, cross, l)) ++cross;
      int k = cross;
      if (k == l || (k > s - 1 && v(k - 1) <= v(k))) {
        --k;  // the stage's time decides: take the first k with the same value
        while (k > s - 1 && v(k - 1) == v(k)) --k;
      }
      cur[l] = v(k);
      from[static_cast<std::size_t>(s) * W + (l - s)] = k;
    }
    std::swap(prev, cur);
  }
  std::vector<int> bounds(S + 1);
  bounds[S] = L;
  for (int s = S; s > 0; --s) bounds[s - 1] = from[static_cast<std::size_t>(s) * W + (bounds[s] - s)];
  return bounds;
}

// 2. Where a rank holds several stages, moves single boundaries while the
//    busiest rank (then the slowest stage) gets lighter. Moving boundary j
//    changes stages j-1 and j and the ranks that hold them: only those are
//    recomputed (each from scratch, so the values are the same as a full
//    recount), and the maxima come from ordered sets, so a pass costs
//    O(S log S), not O(S^2).
void balance_ranks(const StageTimes& time, const Placement& placement, std::vector<int>& bounds) {
  const int S = time.S;
  const auto held = held_stages(placement);
  std::vector<std::vector<int>> holders(S);  // [stage]: the ranks that hold it
  for (std::size_t r = 0; r < held.size(); ++r)
    for (const HeldStage& h : held[r]) holders[h.stage].push_back(static_cast<int>(r));
  std::vector<double> t(S), load(held.size());
  auto load_of = [&](int r) {
    double l = 0;
    for (const HeldStage& h : held[r]) l += t[h.stage] * h.share;
    return l;
  };
  std::multiset<double> stages, ranks;
  for (int s = 0; s < S; ++s) stages.insert(t[s] = time(s, bounds[s], bounds[s + 1]));
  for (std::size_t r = 0; r < held.size(); ++r) ranks.insert(load[r] = load_of(static_cast<int>(r)));
  auto score = [&]() { return Score{std::max(0.0, *ranks.rbegin()), *stages.rbegin()}; };
  auto set_stage = [&](int s) {  // stage s's time and its holders' loads from the bounds
    stages.erase(stages.find(t[s]));
    stages.insert(t[s] = time(s, bounds[s], bounds[s + 1]));
    for (int r : holders[s]) {
      ranks.erase(ranks.find(load[r]));
      ranks.insert(load[r] = load_of(r));
    }
  };
  Score cur = score();
  for (bool improved = true; improved;) {
    improved = false;
    for (int j = 1; j < S; ++j)
      for (int step : {-1, 1}) {
        const int was = bounds[j], nb = was + step;
        if (nb <= bounds[j - 1] || nb >= bounds[j + 1]) continue;
        bounds[j] = nb;
        set_stage(j - 1);
        set_stage(j);
        const Score sc = score();
        if (sc.better_than(cur)) {
          cur = sc;
          improved = true;
        } else {
          bounds[j] = was;
          set_stage(j - 1);
          set_stage(j);
        }
      }
  }
}

}  // namespace

std::vector<int> balance_layers(const std::vector<double>& layer_time, double first_extra, double last_extra,
                                const Placement& placement) {
  const int L = static_cast<int>(layer_time.size()), S = placement.stages;
  if (S > L)
    throw Error(fmt::format("the schedule on {} ranks has {} stages, more than the model's {} layers",
                            placement.stages_of.size(), S, L));
  StageTimes time{std::vector<double>(L + 1, 0.0), first_extra, last_extra, S};
  for (int l = 0; l < L; ++l) time.prefix[l + 1] = time.prefix[l] + layer_time[l];
  std::vector<int> bounds = linear_partition(time, L);
  balance_ranks(time, placement, bounds);
  std::vector<int> out(S);
  for (int s = 0; s < S; ++s) out[s] = bounds[s + 1] - bounds[s];
  return out;
}

std::vector<int> parse_layout(const std::string& text, int stages, int layers) {
  const bool symbolic = std::any_of(text.begin(), text.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); });
  const char sep = symbolic ? '|' : ',';
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    const auto end = text.find(sep, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (static_cast<int>(parts.size()) != stages)
    throw Error(fmt::format("--layout '{}' has {} stages; this schedule has {}", text, parts.size(), stages));
  std::vector<int> out;
  for (std::size_t s = 0; s < parts.size(); ++s) {
    const std::string& p = parts[s];
    long n = 0;
    if (!symbolic) {
      char* end = nullptr;
      n = std::strtol(p.c_str(), &end, 10);
      if (p.empty() || *end != '\0' || n < 1 || n > layers)
        throw Error(fmt::format("--layout: stage {} has '{}' layers; give a whole number in [1, {}]", s, p, layers));
    } else {
      for (std::size_t i = 0; i < p.size(); ++i) {
        const char c = p[i];
        if (c == 'E' && s == 0 && i == 0) continue;
        if (c == 'L' && s + 1 == parts.size() && i + 1 == p.size()) continue;
        if (c != 't')
          throw Error(fmt::format("--layout: stage {} ('{}'): expected t, t*K, E first in stage 0 or L last in the "
                                  "last stage",
                                  s, p));
        long k = 1;
        if (i + 1 < p.size() && p[i + 1] == '*') {
          char* end = nullptr;
          k = std::strtol(p.c_str() + i + 2, &end, 10);
          if (end == p.c_str() + i + 2 || k < 1 || k > layers)
            throw Error(fmt::format("--layout: stage {} ('{}'): t*K needs K in [1, {}]", s, p, layers));
          i = static_cast<std::size_t>(end - p.c_str()) - 1;
        }
        n += k;
      }
      // Megatron's embedding-only first and loss-only last stages: "E|...", "...|L".
      const bool alone = (p == "E" && s == 0) || (p == "L" && s + 1 == parts.size());
      if (n < 1 && !alone)
        throw Error(fmt::format("--layout: stage {} ('{}') holds no layer; every stage but an embedding-only first "
                                "(E) or loss-only last (L) one needs at least 1",
                                s, p));
    }
    out.push_back(static_cast<int>(n));
  }
  const long total = std::accumulate(out.begin(), out.end(), 0L);
  if (total != layers)
    throw Error(fmt::format("--layout '{}' places {} layers; the model has {}", text, total, layers));
  return out;
}

std::string layout_text(const std::vector<int>& layers_per_stage) {
  return fmt::format("{}", fmt::join(layers_per_stage, ","));
}

}  // namespace dualpipe::plan
