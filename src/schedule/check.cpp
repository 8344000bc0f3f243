#include "dualpipe/schedule/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <unordered_map>

#include "schedule/big_array.h"
#include "dualpipe/schedule/error.h"
#include "schedule/walk.h"

namespace dualpipe {
namespace {

// Every action has a global index: its rank's offset plus its position. One
// 32-bit index per (stage, micro-batch) and event is all the checker stores,
// which keeps it at a few bytes per action on schedules of millions. "Same
// rank" and "earlier" are range and order tests on that index while we scan
// the rank in question, so the hot loops never look a rank up.
// Tables hold index + 1 so that zero (fresh BigArray memory) means "not seen".
using Index = std::uint32_t;
constexpr Index kUnset = std::numeric_limits<Index>::max();

struct Sites {
  BigArray<Index> stored;
  void init(std::size_t n) { stored = BigArray<Index>(n); }
  Index get(std::size_t c) const { return stored[c] - 1; }  // kUnset when never set
  Index operator[](std::size_t c) const { return get(c); }
  void set(std::size_t c, Index g) { stored[c] = g + 1; }
};

struct Checker {
  const Schedule& s;
  std::size_t max_errors;
  CheckReport rep;
  int S = 0, N = 0;
  std::vector<std::size_t> offset;  // offset[r] = global index of rank r's first action; offset[ranks] = total
  Sites fwd, bwd, wgt, send_f, recv_f, send_b, recv_b;
  BigArray<std::uint8_t> bwd_is_i;

  Checker(const Schedule& sched, std::size_t max_err) : s(sched), max_errors(max_err) {}

  bool full() const { return rep.errors.size() >= max_errors; }

  template <class... Args>
  void error(fmt::format_string<Args...> f, Args&&... args) {
    if (!full()) rep.errors.push_back(fmt::format(f, std::forward<Args>(args)...));
  }

  int rank_of(Index g) const {
    return static_cast<int>(std::upper_bound(offset.begin(), offset.end(), static_cast<std::size_t>(g)) -
                            offset.begin()) - 1;
  }
  std::string where(int r, std::size_t p) const {
    return fmt::format("rank {}, position {} ({})", r, p, to_string(s.actions[r][p]));
  }
  std::string where(Index g) const {
    int r = rank_of(g);
    return where(r, g - offset[r]);
  }
  bool on_rank(Index g, int r) const { return g != kUnset && g >= offset[r] && g < offset[r + 1]; }
  std::size_t cell(int stage, int mb) const { return static_cast<std::size_t>(stage) * N + mb; }

  bool shape_ok() {
    if (s.ranks < 1) error("a schedule needs at least 1 rank (got {})", s.ranks);
    if (s.stages < 1) error("a schedule needs at least 1 stage (got {})", s.stages);
    if (s.micro_batches < 1) error("a schedule needs at least 1 micro-batch (got {})", s.micro_batches);
    if (s.ranks >= 1 && static_cast<int>(s.actions.size()) != s.ranks)
      error("schedule declares {} ranks but has action lists for {}", s.ranks, s.actions.size());
    if (!rep.ok()) return false;
    S = s.stages;
    N = s.micro_batches;
    offset.assign(s.ranks + 1, 0);
    for (int r = 0; r < s.ranks; ++r) offset[r + 1] = offset[r] + s.actions[r].size();
    if (offset.back() >= kUnset) error("schedule has {} actions; at most {} are supported", offset.back(), kUnset - 1);
    // Every (stage, micro-batch) needs its own forward. Checking the count
    // first keeps memory linear in the actions when a file names a huge index.
    std::size_t forwards = 0;
    for (const auto& r : s.actions)
      for (const Action& a : r)
        for (const Action& h : halves(a)) forwards += h.op == Op::F;
    const std::size_t needed = static_cast<std::size_t>(S) * static_cast<std::size_t>(N);
    if (forwards < needed) {
      // Like every other error, name a place: where the largest indices,
      // which set the shape of a file, were written (a stray index is the
      // usual cause).
      std::size_t mb_r = 0, mb_p = 0, st_r = 0, st_p = 0;
      int hi_mb = -1, hi_st = -1;
      for (std::size_t r = 0; r < s.actions.size(); ++r)
        for (std::size_t p = 0; p < s.actions[r].size(); ++p) {
          const Action& a = s.actions[r][p];
          if (is_stage_only(a.op)) continue;
          if (std::max(a.mb, a.mb2) > hi_mb) hi_mb = std::max(a.mb, a.mb2), mb_r = r, mb_p = p;
          if (std::max(a.stage, a.stage2) > hi_st) hi_st = std::max(a.stage, a.stage2), st_r = r, st_p = p;
        }
      std::string at;
      if (hi_mb >= 0)
        at = fmt::format(" (largest micro-batch index at {}, largest stage at {})",
                         where(static_cast<int>(mb_r), mb_p), where(static_cast<int>(st_r), st_p));
      error("{} stages x {} micro-batches need {} forwards but the schedule holds {}{}", S, N, needed, forwards, at);
    }
    return rep.ok();
  }

  bool in_range(int stage, int mb) const { return stage >= 0 && stage < S && mb >= 0 && mb < N; }

  bool ranges_ok() {
    for (int r = 0; r < s.ranks && !full(); ++r) {
      for (std::size_t p = 0; p < s.actions[r].size(); ++p) {
        const Action& a = s.actions[r][p];
        if (is_stage_only(a.op)) {
          if (a.stage < 0 || a.stage >= S) error("{}: stage must be in 0..{}", where(r, p), S - 1);
          continue;
        }
        if (!in_range(a.stage, a.mb) || (is_pair(a.op) && !in_range(a.stage2, a.mb2))) {
          error("{}: stage must be in 0..{} and micro-batch in 0..{}", where(r, p), S - 1, N - 1);
          continue;
        }
        bool edge_ok = true;
        if (a.op == Op::SEND_F || a.op == Op::RECV_B) edge_ok = a.stage < S - 1;
        if (a.op == Op::RECV_F || a.op == Op::SEND_B) edge_ok = a.stage > 0;
        if (!edge_ok) error("{}: stage {} has no neighbour on that side (stages 0..{})", where(r, p), a.stage, S - 1);
      }
    }
    return rep.ok();
  }

  // Records event `g` for a cell; returns false (and reports) on a repeat.
  bool record(Sites& sites, std::size_t c, Index g, const char* what, int stage, int mb) {
    if (sites.get(c) == kUnset) {
      sites.set(c, g);
      return true;
    }
    error("{}: second {} of stage {}, micro-batch {} (first at {})", where(g), what, stage, mb,
          where(sites.get(c)));
    return false;
  }

  // Calls f(rank, global index, action) for every action, rank by rank.
  template <class F>
  void each(F&& f) {
    for (int r = 0; r < s.ranks; ++r) {
      Index g = static_cast<Index>(offset[r]);
      for (const Action& a : s.actions[r]) f(r, g++, a);
    }
  }

  void compute_consistency() {
    const std::size_t n = static_cast<std::size_t>(S) * N;
    fwd.init(n);
    bwd.init(n);
    wgt.init(n);
    bwd_is_i = BigArray<std::uint8_t>(n);
    // Forwards first, so that each backward can be checked against its forward.
    each([&](int, Index g, const Action& a) {
      for (const Action& h : halves(a))
        if (h.op == Op::F) record(fwd, cell(h.stage, h.mb), g, "forward", h.stage, h.mb);
    });
    auto backward = [&](int r, Index g, int stage, int mb, bool is_i) {
      const std::size_t c = cell(stage, mb);
      if (!record(bwd, c, g, "backward", stage, mb)) return;
      bwd_is_i[c] = is_i;
      const Index f = fwd[c];
      if (f == kUnset) return;  // reported as missing below
      if (!on_rank(f, r))
        error("{}: backward runs on rank {} but its forward ({}) is on rank {}", where(g), r, where(f), rank_of(f));
      else if (g < f)
        error("{}: backward issued before its forward at position {}", where(g), f - offset[r]);
    };
    each([&](int r, Index g, const Action& a) {
      for (const Action& h : halves(a))
        if (is_backward(h.op)) backward(r, g, h.stage, h.mb, h.op == Op::I);
    });
    each([&](int r, Index g, const Action& a) {
      if (a.op != Op::W) return;
      const std::size_t c = cell(a.stage, a.mb);
      if (!record(wgt, c, g, "weight-gradient action", a.stage, a.mb)) return;
      const Index b = bwd[c];
      if (b == kUnset || !bwd_is_i[c])
        error("{}: W without an I (a B already includes the weight gradient)", where(g));
      else if (!on_rank(b, r))
        error("{}: W runs on rank {} but its I ({}) is on rank {}", where(g), r, where(b), rank_of(b));
      else if (g < b)
        error("{}: W issued before its I at position {}", where(g), b - offset[r]);
    });
    for (int st = 0; st < S && !full(); ++st) {
      for (int mb = 0; mb < N && !full(); ++mb) {
        const std::size_t c = cell(st, mb);
        if (fwd[c] == kUnset) error("forward of stage {}, micro-batch {} is missing", st, mb);
        if (bwd[c] == kUnset) error("backward of stage {}, micro-batch {} is missing", st, mb);
        if (bwd_is_i[c] && wgt[c] == kUnset)
          error("{}: input-gradient backward has no W for its weight gradient", where(bwd[c]));
      }
    }
  }

  // Stage-only actions (UNSHARD, RESHARD, REDUCE_GRAD): each names a stage
  // its rank runs; REDUCE_GRAD comes once per stage and rank, after the
  // stage's last backward and W there. Tables are keyed by (rank, stage) and
  // built only when such actions exist, so ordinary schedules pay nothing.
  void stage_only_consistency() {
    bool any = false;
    for (const auto& r : s.actions)
      for (const Action& a : r) any = any || is_stage_only(a.op);
    if (!any) return;
    auto key = [&](int r, int stage) { return static_cast<long long>(r) * S + stage; };
    std::unordered_map<long long, Index> last_grad;  // last backward or W of a stage on a rank
    std::unordered_map<long long, Index> reduce;     // its REDUCE_GRAD
    each([&](int r, Index g, const Action& a) {
      for (const Action& h : halves(a)) {
        if (is_backward(h.op) || h.op == Op::W) last_grad[key(r, h.stage)] = g;
        if (h.op == Op::F) last_grad.try_emplace(key(r, h.stage), kUnset);
      }
    });
    each([&](int r, Index g, const Action& a) {
      if (!is_stage_only(a.op)) return;
      const auto runs = last_grad.find(key(r, a.stage));
      if (runs == last_grad.end()) {
        error("{}: {} of stage {} on rank {}, which runs none of that stage's actions", where(g), op_name(a.op),
              a.stage, r);
        return;
      }
      if (a.op != Op::REDUCE_GRAD) return;
      auto [first, fresh] = reduce.try_emplace(key(r, a.stage), g);
      if (!fresh)
        error("{}: second REDUCE_GRAD of stage {} on rank {} (first at position {})", where(g), a.stage, r,
              first->second - offset[r]);
      else if (runs->second != kUnset && g < runs->second)
        error("{}: REDUCE_GRAD of stage {} before its last backward on rank {}, at position {}", where(g), a.stage, r,
              runs->second - offset[r]);
    });
  }

  // Transfers, for lowered schedules. Forward data crosses from stage s to
  // s+1 (SEND_F s, RECV_F s+1), gradients from s+1 to s (SEND_B s+1, RECV_B s).
  void comm_consistency() {
    const std::size_t n = static_cast<std::size_t>(S) * N;
    for (auto* v : {&send_f, &recv_f, &send_b, &recv_b}) v->init(n);
    // Each transfer action: recorded once, on the rank of the data it moves,
    // on the right side of it, and only across ranks.
    each([&](int r, Index g, const Action& a) {
      if (!is_comm(a.op)) return;
      const std::size_t c = cell(a.stage, a.mb);
      const char* name = op_name(a.op);
      const bool send = a.op == Op::SEND_F || a.op == Op::SEND_B;
      const bool forward = a.op == Op::SEND_F || a.op == Op::RECV_F;
      auto& sites = forward ? (send ? send_f : recv_f) : (send ? send_b : recv_b);
      if (!record(sites, c, g, name, a.stage, a.mb)) return;
      const Index own = forward ? fwd[c] : bwd[c];  // the data produced (send) or consumed (recv) here
      const int peer_stage = a.stage + ((forward == send) ? 1 : -1);
      const Index peer = forward ? fwd[cell(peer_stage, a.mb)] : bwd[cell(peer_stage, a.mb)];
      if (!on_rank(own, r))
        error("{}: {} must be on rank {}, where {} runs", where(g), name, rank_of(own), where(own));
      else if (on_rank(peer, r))
        error("{}: {} between stages on the same rank {}", where(g), name, r);
      else if (send && g < own)
        error("{}: {} issued before what it sends, at position {}", where(g), name, own - offset[r]);
      else if (!send && g > own)
        error("{}: {} issued after its consumer at position {}", where(g), name, own - offset[r]);
    });
    // Every cross-rank edge has both ends.
    each([&](int r, Index g, const Action& a) {
      auto needs = [&](bool forward, int stage, int mb) {
        auto& events = forward ? fwd : bwd;
        if (stage > 0 && !on_rank(events[cell(stage - 1, mb)], r)) {
          // This stage talks to stage-1 on another rank.
          const Index t = forward ? recv_f[cell(stage, mb)] : send_b[cell(stage, mb)];
          if (t == kUnset)
            error("missing {}{}{} on rank {} {} {}", stage, forward ? "RECV_F" : "SEND_B", mb, r,
                  forward ? "before" : "after", where(g));
        }
        if (stage + 1 < S && !on_rank(events[cell(stage + 1, mb)], r)) {
          const Index t = forward ? send_f[cell(stage, mb)] : recv_b[cell(stage, mb)];
          if (t == kUnset)
            error("missing {}{}{} on rank {} {} {}", stage, forward ? "SEND_F" : "RECV_B", mb, r,
                  forward ? "after" : "before", where(g));
        }
      };
      for (const Action& h : halves(a)) {
        if (h.op == Op::F) needs(true, h.stage, h.mb);
        if (is_backward(h.op)) needs(false, h.stage, h.mb);
      }
    });
  }

  static const char* need_name(Need n) {
    switch (n) {
      case Need::FwdDone: return "the forward";
      case Need::GradDone: return "the backward";
      case Need::SentF: return "SEND_F";
      case Need::SentB: return "SEND_B";
    }
    return "?";
  }

  void deadlock() {
    Walker walker(s);
    WalkResult res = walker.run([](int, std::size_t, const Action&) {});
    for (const WalkStall& st : res.stalled)
      error("deadlock: {} waits forever for {} of stage {}, micro-batch {} ({} of {} ranks stall)",
            where(st.rank, st.pos), need_name(st.need), st.stage, st.mb, res.stalled.size(), s.ranks);
  }

  CheckReport run() {
    if (!shape_ok() || !ranges_ok()) return rep;
    compute_consistency();
    if (rep.ok()) stage_only_consistency();
    if (rep.ok() && s.has_comm()) comm_consistency();
    if (rep.ok()) deadlock();
    return rep;
  }
};

}  // namespace

CheckReport check(const Schedule& s, std::size_t max_errors) { return Checker(s, max_errors).run(); }

void check_or_throw(const Schedule& s) {
  CheckReport rep = check(s, 2);
  if (rep.ok()) return;
  std::string msg = "invalid schedule: " + rep.errors.front();
  if (rep.errors.size() > 1) msg += " (and more; run 'dualpipe schedule --from FILE' for the full list)";
  throw Error(msg);
}

}  // namespace dualpipe
