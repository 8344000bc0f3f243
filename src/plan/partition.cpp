#include "dualpipe/plan/partition.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <numeric>

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

}  // namespace

std::vector<int> balance_layers(const std::vector<double>& layer_time, double first_extra, double last_extra,
                                const Placement& placement) {
  const int L = static_cast<int>(layer_time.size()), S = placement.stages;
  if (S > L)
    throw Error(fmt::format("the schedule on {} ranks has {} stages, more than the model's {} layers",
                            placement.stages_of.size(), S, L));
  std::vector<double> prefix(L + 1, 0.0);
  for (int l = 0; l < L; ++l) prefix[l + 1] = prefix[l] + layer_time[l];
  auto stage_time = [&](int s, int a, int b) {  // layers [a, b) as stage s
    return prefix[b] - prefix[a] + (s == 0 ? first_extra : 0) + (s == S - 1 ? last_extra : 0);
  };
  // 1. Linear partition: the cut that minimises the slowest stage (dynamic
  //    programming over (stages, layers)), which is optimal when every rank
  //    holds one stage.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(S + 1, std::vector<double>(L + 1, inf));
  std::vector<std::vector<int>> from(S + 1, std::vector<int>(L + 1, 0));
  best[0][0] = 0;
  for (int s = 1; s <= S; ++s)
    for (int l = s; l <= L - (S - s); ++l)
      for (int k = s - 1; k < l; ++k) {
        const double v = std::max(best[s - 1][k], stage_time(s - 1, k, l));
        if (v < best[s][l]) {
          best[s][l] = v;
          from[s][l] = k;
        }
      }
  std::vector<int> bounds(S + 1);
  bounds[S] = L;
  for (int s = S; s > 0; --s) bounds[s - 1] = from[s][bounds[s]];

  // 2. Where a rank holds several stages, move single boundaries while the
  //    busiest rank (then the slowest stage) gets lighter.
  const auto held = held_stages(placement);
  auto score = [&](const std::vector<int>& b) {
    std::vector<double> t(S);
    for (int s = 0; s < S; ++s) t[s] = stage_time(s, b[s], b[s + 1]);
    Score sc{0, *std::max_element(t.begin(), t.end())};
    for (const auto& stages : held) {
      double load = 0;
      for (const HeldStage& h : stages) load += t[h.stage] * h.share;
      sc.rank_max = std::max(sc.rank_max, load);
    }
    return sc;
  };
  Score cur = score(bounds);
  for (bool improved = true; improved;) {
    improved = false;
    for (int j = 1; j < S; ++j)
      for (int step : {-1, 1}) {
        const int nb = bounds[j] + step;
        if (nb <= bounds[j - 1] || nb >= bounds[j + 1]) continue;
        std::vector<int> trial = bounds;
        trial[j] = nb;
        const Score sc = score(trial);
        if (sc.better_than(cur)) {
          bounds = std::move(trial);
          cur = sc;
          improved = true;
        }
      }
  }
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
