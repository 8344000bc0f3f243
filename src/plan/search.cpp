#include "dualpipe/plan/search.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"

namespace dualpipe::plan {
namespace {

// The search lays stages out as the generators do (PlacementStyle, from
// the registry) and orders each rank's work itself.
using Layout = PlacementStyle;

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::OnePerRank: return "one stage per rank";
    case Layout::TwoWay: return "DualPipe placement";
    case Layout::V: return "V placement";
    case Layout::Interleaved: return "interleaved placement";
  }
  return "";
}

struct Problem {
  int P, N, S;
  Layout layout;
  const Costs* costs;
  int limit;  // 0: none
  int rank_of(int stage, int mb) const { return style_rank(layout, P, N, stage, mb); }
};

// Knobs of one list-scheduling pass; the search tries several.
struct Knobs {
  double forward_bias = 1;  // > 0: a ready backward goes before a ready forward
  double stage_weight = 0;  // > 0: earlier stages first; < 0: later ones
  double mb_weight = 1;     // > 0: older micro-batches first
  bool split = true;        // backward as I now and W later, W filling idle time
  double w_fill = 0;        // issue a W when the next other action is at least this many W's away
  double noise = 0;         // random tie-breaking, in the units of the weights
  std::uint64_t salt = 0;
};

// A stream: the micro-batches one rank runs through one stage, in order.
struct Stream {
  int stage;
  std::vector<int> mbs;
  std::size_t next_f = 0, next_b = 0;
};

double hashed_noise(std::uint64_t salt, int a, int b, int c) {
  std::uint64_t x = salt ^ (static_cast<std::uint64_t>(a) * 0x9E3779B97F4A7C15ULL) ^
                    (static_cast<std::uint64_t>(b) * 0xC2B2AE3D27D4EB4FULL) ^ (static_cast<std::uint64_t>(c) << 17);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return static_cast<double>(x % 1000003) / 1000003.0;
}

// Builds every rank's order by simulating forward in time: the rank that can
// act earliest acts next, choosing among its ready actions by the knobs.
class ListScheduler {
 public:
  ListScheduler(const Problem& pb, const Knobs& k)
      : pb_(pb),
        k_(k),
        c_(*pb.costs),
        hop_(c_.transfer()),
        pairs_(c_.FB.has_value() && (pb.layout == Layout::TwoWay || pb.layout == Layout::V)),
        streams_(pb.P),
        fwd_end_(static_cast<std::size_t>(pb.S) * pb.N, -1),
        grad_end_(static_cast<std::size_t>(pb.S) * pb.N, -1),
        free_at_(pb.P, 0),
        live_(pb.P, 0),
        pending_w_(pb.P),
        w_head_(pb.P, 0),
        stale_(pb.P, 1) {
    for (int s = 0; s < pb.S; ++s)
      for (int m = 0; m < pb.N; ++m) {
        auto& list = streams_[pb.rank_of(s, m)];
        auto it = std::find_if(list.begin(), list.end(), [s](const Stream& st) { return st.stage == s; });
        if (it == list.end()) {
          list.push_back({s, {}});
          it = list.end() - 1;
        }
        it->mbs.push_back(m);
      }
    out_.method = "search";
    out_.ranks = pb.P;
    out_.stages = pb.S;
    out_.micro_batches = pb.N;
    out_.actions.resize(pb.P);
  }

  // Returns nothing when the activation limit stalls it. A rank's choice
  // is decided again only when something it depends on changed: its own
  // actions, or the end of an input it waits for (stale_); the earliest
  // choice (the lowest rank among equals) comes from an ordered set. Each
  // action costs O(log P), not O(P).
  std::optional<Schedule> run() {
    std::size_t left = fwd_end_.size() * 2;  // forwards and backwards still to place
    std::vector<Choice> choice(pb_.P);
    std::set<std::pair<double, int>> ready;  // (time, rank) of every rank that has a choice
    for (int q = 0; q < pb_.P; ++q) stale_list_.push_back(q);
    while (left > 0 || w_left_ > 0) {
      for (int q : stale_list_) {
        if (choice[q].kind >= 0) ready.erase({choice[q].time, q});
        choice[q] = decide(q);
        stale_[q] = 0;
        if (choice[q].kind >= 0) ready.insert({choice[q].time, q});
      }
      stale_list_.clear();
      if (ready.empty()) return std::nullopt;  // stalled by the activation limit
      const int r = ready.begin()->second;
      const Choice ch = choice[r];
      mark(r);
      if (ch.kind == 2) {
        place_w(r, ch.time);
        continue;
      }
      if (place_pair(r, ch)) {
        left -= 2;
        continue;
      }
      place_single(r, ch);
      --left;
    }
    return std::move(out_);
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  struct Choice {
    double time = std::numeric_limits<double>::infinity();
    int kind = -1;  // 0: F, 1: backward, 2: W
    int stream = -1;
  };

  std::size_t idx(int s, int m) const { return static_cast<std::size_t>(s) * pb_.N + m; }
  // Rank q decides again.
  void mark(int q) {
    if (stale_[q]) return;
    stale_[q] = 1;
    stale_list_.push_back(q);
  }
  // The rank running (stage, mb) decides again: an input it waits for is placed.
  void touch(int stage, int m) {
    if (stage >= 0 && stage < pb_.S) mark(pb_.rank_of(stage, m));
  }

  // When rank r could start the stream's next forward (kInf: not yet known).
  double f_ready(int r, const Stream& st) const {
    if (st.next_f >= st.mbs.size()) return kInf;
    const int m = st.mbs[st.next_f];
    if (st.stage == 0) return 0;
    const double e = fwd_end_[idx(st.stage - 1, m)];
    if (e < 0) return kInf;
    return e + (pb_.rank_of(st.stage - 1, m) != r ? hop_ : 0);
  }
  // The same for the stream's next backward.
  double b_ready(int r, const Stream& st) const {
    if (st.next_b >= st.next_f) return kInf;
    const int m = st.mbs[st.next_b];
    double t = fwd_end_[idx(st.stage, m)];
    if (st.stage + 1 < pb_.S) {
      const double e = grad_end_[idx(st.stage + 1, m)];
      if (e < 0) return kInf;
      t = std::max(t, e + (pb_.rank_of(st.stage + 1, m) != r ? hop_ : 0));
    }
    return t;
  }
  // Lower goes first.
  double priority(int kind, const Stream& st) const {
    const int m = kind == 0 ? st.mbs[st.next_f] : st.mbs[st.next_b];
    return (kind == 0 ? k_.forward_bias : 0.0) + k_.stage_weight * st.stage / pb_.S + k_.mb_weight * m / pb_.N +
           k_.noise * hashed_noise(k_.salt, st.stage, m, kind);
  }

  // What rank r does next, and when.
  Choice decide(int r) const {
    Choice best;
    double best_prio = kInf, earliest = kInf;
    int earliest_kind = -1, earliest_stream = -1;
    const bool room = pb_.limit == 0 || live_[r] < pb_.limit;
    for (std::size_t i = 0; i < streams_[r].size(); ++i) {
      const Stream& st = streams_[r][i];
      for (int kind : {0, 1}) {
        if (kind == 0 && !room) continue;
        const double t = kind == 0 ? f_ready(r, st) : b_ready(r, st);
        if (t == kInf) continue;
        const double start = std::max(t, free_at_[r]);
        if (start <= free_at_[r]) {
          const double p = priority(kind, st);
          if (p < best_prio) {
            best_prio = p;
            best = {free_at_[r], kind, static_cast<int>(i)};
          }
        } else if (start < earliest) {
          earliest = start;
          earliest_kind = kind;
          earliest_stream = static_cast<int>(i);
        }
      }
    }
    if (best.kind >= 0) return best;
    if (w_head_[r] < pending_w_[r].size()) {
      const int ws = pending_w_[r][w_head_[r]].first;
      if (earliest == kInf || earliest - free_at_[r] >= k_.w_fill * c_.w(ws)) return Choice{free_at_[r], 2, -1};
    }
    if (earliest_kind >= 0) return Choice{earliest, earliest_kind, earliest_stream};
    return Choice{};
  }

  // The oldest deferred W of rank r.
  void place_w(int r, double start) {
    const auto [s, m] = pending_w_[r][w_head_[r]++];
    --w_left_;
    out_.actions[r].push_back(Action::make(Op::W, s, m));
    free_at_[r] = start + c_.w(s);
  }

  // An overlapped pair: the chosen action with a ready partner of the other
  // kind, where pairing gains time. False if none was placed.
  bool place_pair(int r, const Choice& ch) {
    if (!pairs_ || !(pb_.limit == 0 || live_[r] < pb_.limit)) return false;
    int partner = -1;
    for (std::size_t i = 0; i < streams_[r].size() && partner < 0; ++i) {
      const Stream& o = streams_[r][i];
      if (static_cast<int>(i) == ch.stream) continue;
      const double t = ch.kind == 0 ? b_ready(r, o) : f_ready(r, o);
      if (t <= ch.time) partner = static_cast<int>(i);
    }
    if (partner < 0) return false;
    Stream& st = streams_[r][static_cast<std::size_t>(ch.stream)];
    Stream& o = streams_[r][static_cast<std::size_t>(partner)];
    Stream& fs = ch.kind == 0 ? st : o;
    Stream& bs = ch.kind == 0 ? o : st;
    if (!(c_.fb(fs.stage, bs.stage) < c_.f(fs.stage) + c_.b(bs.stage))) return false;  // no gain from pairing
    const int fm = fs.mbs[fs.next_f++], bm = bs.mbs[bs.next_b++];
    const double end = ch.time + c_.fb(fs.stage, bs.stage);
    out_.actions[r].push_back(Action::pair(fs.stage, fm, bs.stage, bm));
    fwd_end_[idx(fs.stage, fm)] = end;
    grad_end_[idx(bs.stage, bm)] = end;
    touch(fs.stage + 1, fm);
    touch(bs.stage - 1, bm);
    free_at_[r] = end;
    return true;
  }

  // The chosen forward, or backward (as I with its W deferred when split).
  void place_single(int r, const Choice& ch) {
    Stream& st = streams_[r][static_cast<std::size_t>(ch.stream)];
    if (ch.kind == 0) {
      const int m = st.mbs[st.next_f++];
      out_.actions[r].push_back(Action::make(Op::F, st.stage, m));
      free_at_[r] = ch.time + c_.f(st.stage);
      fwd_end_[idx(st.stage, m)] = free_at_[r];
      touch(st.stage + 1, m);
      ++live_[r];
    } else {
      const int m = st.mbs[st.next_b++];
      const bool split = k_.split && c_.w(st.stage) > 0;
      out_.actions[r].push_back(Action::make(split ? Op::I : Op::B, st.stage, m));
      free_at_[r] = ch.time + (split ? c_.i(st.stage) : c_.b(st.stage));
      grad_end_[idx(st.stage, m)] = free_at_[r];
      touch(st.stage - 1, m);
      if (split) {
        pending_w_[r].push_back({st.stage, m});
        ++w_left_;
      }
      --live_[r];
    }
  }

  const Problem& pb_;
  const Knobs& k_;
  const Costs& c_;
  const double hop_;
  const bool pairs_;  // whether F&B pairs can be formed
  std::vector<std::vector<Stream>> streams_;
  std::vector<double> fwd_end_, grad_end_;  // by idx(stage, mb); -1: not yet placed
  std::vector<double> free_at_;
  std::vector<int> live_;  // activations held
  std::vector<std::vector<std::pair<int, int>>> pending_w_;  // (stage, mb) of each rank's deferred W's
  std::vector<std::size_t> w_head_;
  std::size_t w_left_ = 0;  // W's queued and not yet placed
  std::vector<char> stale_;  // [rank]: its choice must be decided again
  std::vector<int> stale_list_;  // the ranks marked in stale_
  Schedule out_;
};

std::optional<Schedule> list_schedule(const Problem& pb, const Knobs& k) { return ListScheduler(pb, k).run(); }

struct Scored {
  double makespan = std::numeric_limits<double>::infinity();
  double sum_end = std::numeric_limits<double>::infinity();  // tie-breaker: every rank done earlier
  int peak = 0;
  bool ok = false;
  bool better_than(const Scored& o) const {
    if (!ok) return false;
    if (!o.ok) return true;
    const double eps = 1e-9 * std::max(1.0, o.makespan);
    if (makespan < o.makespan - eps) return true;
    if (makespan > o.makespan + eps) return false;
    return sum_end < o.sum_end - eps;
  }
};

Scored score(const Schedule& s, const Costs& c, int limit, long long& evaluations) {
  Scored sc;
  if (!check(s, 1).ok()) return sc;
  ++evaluations;
  const SimResult r = simulate(s, c);
  for (const RankStats& st : r.per_rank) sc.peak = std::max(sc.peak, st.peak_activations);
  if (limit > 0 && sc.peak > limit) return sc;
  sc.makespan = r.makespan;
  sc.sum_end = 0;
  for (const auto& spans : r.timeline)
    if (!spans.empty()) sc.sum_end += spans.back().end;
  sc.ok = true;
  return sc;
}

// Moves one compute action to a nearby position on its rank; the checker
// rejects moves that break a dependency.
void local_search(Schedule& best, Scored& best_score, const Costs& c, int limit, std::mt19937_64& rng, int moves,
                  long long& evaluations, const ProgressFn& progress) {
  std::vector<int> ranks;
  for (int r = 0; r < best.ranks; ++r)
    if (best.actions[r].size() > 1) ranks.push_back(r);
  if (ranks.empty()) return;
  for (int it = 0; it < moves; ++it) {
    if (progress) progress(Progress{"local search", it, moves});
    const int r = ranks[rng() % ranks.size()];
    auto& list = best.actions[r];
    const std::size_t from = rng() % list.size();
    const long shift = static_cast<long>(rng() % 8) + 1;
    const long to_l = (rng() & 1) ? static_cast<long>(from) + shift : static_cast<long>(from) - shift;
    if (to_l < 0 || to_l >= static_cast<long>(list.size())) continue;
    const std::size_t to = static_cast<std::size_t>(to_l);
    const Action moved = list[from];
    list.erase(list.begin() + static_cast<long>(from));
    list.insert(list.begin() + static_cast<long>(to), moved);
    const Scored sc = score(best, c, limit, evaluations);
    if (sc.better_than(best_score)) {
      best_score = sc;
    } else {
      list.erase(list.begin() + static_cast<long>(to));
      list.insert(list.begin() + static_cast<long>(from), moved);
    }
  }
}

}  // namespace

int search_stages(const SearchRequest& req) {
  if (req.stages > 0) return req.stages;
  std::size_t n = std::max({req.costs.F.size(), req.costs.B.size(), req.costs.W.size()});
  return n > 1 ? static_cast<int>(n) : req.ranks;
}

namespace {

void validate(const SearchRequest& req) {
  if (req.ranks < 1 || req.ranks > 1024) throw Error(fmt::format("--ranks must be in [1, 1024] (got {})", req.ranks));
  if (req.micro_batches < 1 || req.micro_batches > 4096)
    throw Error(fmt::format("--micro-batches must be in [1, 4096] (got {})", req.micro_batches));
  if (req.max_activations < 0)
    throw Error(fmt::format("--max-activations must be at least 0 (got {})", req.max_activations));
  if (req.iterations < 0 || req.iterations > 10000000)
    throw Error(fmt::format("--iterations must be in [0, 10000000] (got {})", req.iterations));
  if (static_cast<long long>(req.ranks) * req.micro_batches * 2 * std::max(1, req.chunks) > (1LL << 20))
    throw Error(fmt::format("--ranks x --micro-batches is too large to search: {} x {}, at most about {} stage x "
                            "micro-batch pairs",
                            req.ranks, req.micro_batches, 1 << 19));
}

// Baselines: every generator with this stage count that fits the limit; the
// best goes into `res`. Returns the placements to search.
std::vector<Layout> baselines(const SearchRequest& req, int S, SearchResult& res) {
  const int P = req.ranks, N = req.micro_batches;
  std::vector<Layout> layouts;
  for (const Method& m : methods()) {
    if (!req.from_method.empty() && req.from_method != m.name) continue;
    Schedule s;
    try {
      s = generate(m.name, Shape{P, N, req.chunks});
    } catch (const Error&) {
      continue;
    }
    if (s.stages != S) continue;
    const Layout l = m.placement;
    if (std::find(layouts.begin(), layouts.end(), l) == layouts.end()) layouts.push_back(l);
    Scored sc = score(s, req.costs, req.max_activations, res.evaluations);
    if (!sc.ok) continue;
    if (res.baseline_method.empty() || sc.makespan < res.baseline_makespan) {
      res.baseline_method = m.name;
      res.baseline_makespan = sc.makespan;
      res.schedule = s;
    }
  }
  if (!req.from_method.empty()) {
    find_method(req.from_method);
    if (layouts.empty())
      throw Error(fmt::format("--from-method {} does not run {} ranks, {} micro-batches with {} stages", req.from_method,
                              P, N, S));
  }
  if (layouts.empty()) {
    // No generator has this stage count: search the placements that could.
    if (S == P) layouts = {Layout::OnePerRank};
    else if (S == 2 * P) layouts = {Layout::V};
    else throw Error(fmt::format("no placement puts {} stages on {} ranks (give S = P or 2P)", S, P));
  }
  return layouts;
}

// Refuses a search that would run past kMaxSearchWork: `passes` list-scheduling
// passes and req.iterations local-search moves on schedules of S x N pairs.
void require_bounded_work(const SearchRequest& req, int S, std::size_t passes) {
  const double actions = 3.0 * S * req.micro_batches;
  const double work = actions * (4.0 * static_cast<double>(passes) + req.iterations);
  if (work > kMaxSearchWork)
    throw Error(fmt::format("--ranks {} --micro-batches {} with --iterations {}: about {:.3g} action simulations "
                            "({} stages x {} micro-batches, {} list-scheduling passes and {} moves), at most {:.3g} "
                            "(about a minute); lower --iterations, --micro-batches or --ranks",
                            req.ranks, req.micro_batches, req.iterations, work, S, req.micro_batches, passes,
                            req.iterations, kMaxSearchWork));
}

// A fixed set of knob settings, then 32 of them with seeded noise.
std::vector<Knobs> knob_settings(std::mt19937_64& rng) {
  std::vector<Knobs> knobs;
  for (double fb : {1.0, -1.0})
    for (double sw : {0.0, 1.0, -1.0})
      for (bool split : {true, false})
        for (double wf : {0.0, 0.5, 1.0}) {
          if (!split && wf > 0) continue;
          knobs.push_back({fb, sw, 1.0, split, wf, 0.0, 0});
        }
  const std::size_t fixed = knobs.size();
  for (int i = 0; i < 32; ++i) {
    Knobs k = knobs[rng() % fixed];
    k.noise = 0.5 + static_cast<double>(rng() % 1000) / 1000.0;
    k.salt = rng();
    knobs.push_back(k);
  }
  return knobs;
}

}  // namespace

SearchResult search(const SearchRequest& req) {
  validate(req);
  const int P = req.ranks, N = req.micro_batches, S = search_stages(req);
  req.costs.validate(S);

  SearchResult res;
  const std::vector<Layout> layouts = baselines(req, S, res);
  Scored best;
  if (!res.baseline_method.empty()) {
    best = score(res.schedule, req.costs, req.max_activations, res.evaluations);
    res.found_by = "baseline";
  }

  // 1. List scheduling under a fixed set of knob settings, then seeded noise.
  std::mt19937_64 rng(req.seed);
  const std::vector<Knobs> knobs = knob_settings(rng);
  require_bounded_work(req, S, layouts.size() * knobs.size());
  const long long passes = static_cast<long long>(layouts.size() * knobs.size());
  long long pass = 0;
  for (Layout l : layouts) {
    if (l == Layout::TwoWay && (P % 2 != 0 || N % 2 != 0)) continue;
    const Problem pb{P, N, S, l, &req.costs, req.max_activations};
    for (std::size_t i = 0; i < knobs.size(); ++i) {
      if (req.progress) req.progress(Progress{"list scheduling", pass++, passes});
      std::optional<Schedule> s = list_schedule(pb, knobs[i]);
      if (!s) continue;
      const Scored sc = score(*s, req.costs, req.max_activations, res.evaluations);
      if (sc.better_than(best)) {
        best = sc;
        res.schedule = std::move(*s);
        res.found_by = fmt::format("list scheduling ({})", layout_name(l));
      }
    }
  }
  if (!best.ok)
    throw Error(fmt::format("no schedule fits --max-activations {}: neither a generator nor the search found one "
                            "(raise the limit)",
                            req.max_activations));
  // 2. Local search from the best so far.
  const double before = best.makespan;
  local_search(res.schedule, best, req.costs, req.max_activations, rng, req.iterations, res.evaluations,
               req.progress);
  if (best.makespan < before - 1e-9 * std::max(1.0, before)) res.found_by += " + local search";
  res.schedule.method = "search";
  res.sim = simulate(res.schedule, req.costs);
  for (const RankStats& st : res.sim.per_rank) res.peak_activations.push_back(st.peak_activations);
  return res;
}

}  // namespace dualpipe::plan
