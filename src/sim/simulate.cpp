#include "sim/simulate.h"

#include <algorithm>
#include <cmath>

#include "schedule/big_array.h"
#include "schedule/check.h"
#include "schedule/error.h"
#include "schedule/walk.h"

namespace dp {

SimResult simulate(const Schedule& s, const Costs& c, const SimOptions& opt) {
  check_or_throw(s);
  c.validate(s.stages);
  const int N = s.micro_batches;
  const std::size_t cells = static_cast<std::size_t>(s.stages) * N;
  auto idx = [N](int stage, int mb) { return static_cast<std::size_t>(stage) * N + mb; };

  BigArray<double> fwd_end(cells), grad_end(cells);
  BigArray<int> where(cells);  // rank of each (stage, mb), set by its forward before any reader
  std::vector<double> free_at(s.ranks, 0.0);
  std::vector<int> live(s.ranks, 0), held(s.ranks, 0);
  SimResult res;
  res.per_rank.assign(s.ranks, RankStats{});
  if (opt.timeline) {
    res.timeline.resize(s.ranks);
    for (int r = 0; r < s.ranks; ++r) res.timeline[r].resize(s.actions[r].size());
  }
  const double hop = c.transfer();
  auto arrive = [&](const BigArray<double>& end, int stage, int mb, int rank) {
    std::size_t k = idx(stage, mb);
    return end[k] + (where[k] != rank ? hop : 0.0);
  };
  // Earliest start of each half, given the inputs it needs.
  auto fwd_ready = [&](int stage, int mb, int rank) {
    return stage > 0 ? arrive(fwd_end, stage - 1, mb, rank) : 0.0;
  };
  auto bwd_ready = [&](int stage, int mb, int rank) {
    double t = fwd_end[idx(stage, mb)];
    if (stage + 1 < s.stages) t = std::max(t, arrive(grad_end, stage + 1, mb, rank));
    return t;
  };

  Walker walker(s);
  walker.run([&](int r, std::size_t pos, const Action& a) {
    RankStats& st = res.per_rank[r];
    double start = free_at[r], dur = 0;
    switch (a.op) {
      case Op::F:
        start = std::max(start, fwd_ready(a.stage, a.mb, r));
        dur = c.f(a.stage);
        break;
      case Op::B:
      case Op::I:
        start = std::max(start, bwd_ready(a.stage, a.mb, r));
        dur = a.op == Op::B ? c.b(a.stage) : c.i(a.stage);
        break;
      case Op::W:
        start = std::max(start, grad_end[idx(a.stage, a.mb)]);
        dur = c.w(a.stage);
        break;
      case Op::FB:
        start = std::max({start, fwd_ready(a.stage, a.mb, r), bwd_ready(a.stage2, a.mb2, r)});
        dur = c.fb(a.stage, a.stage2);
        break;
      default: break;  // transfers are charged on the edge, not on the rank
    }
    const double end = start + dur;
    if (a.op == Op::F || a.op == Op::FB) {
      std::size_t k = idx(a.stage, a.mb);
      fwd_end[k] = end;
      where[k] = r;
      // The new forward's activation is alive from its start; an overlapped
      // pair frees the backward's one at its end, so it peaks at +1.
      st.peak_activations = std::max(st.peak_activations, ++live[r]);
      st.peak_held = std::max(st.peak_held, ++held[r]);
    }
    if (is_backward(a.op)) {
      grad_end[idx(a.stage, a.mb)] = end;
      --live[r];
      if (a.op == Op::B) --held[r];
    }
    if (a.op == Op::W) --held[r];
    if (a.op == Op::FB) {
      grad_end[idx(a.stage2, a.mb2)] = end;
      --live[r];
      --held[r];
    }
    st.busy += dur;
    free_at[r] = end;
    if (opt.timeline) res.timeline[r][pos] = {start, end};
  });

  res.makespan = *std::max_element(free_at.begin(), free_at.end());
  // Each cost is finite (validate), but their sums can still overflow; an
  // "inf" step time with "nan" idle times would be a silent wrong answer.
  if (!std::isfinite(res.makespan))
    throw Error("costs too large: the simulated step time overflows a double (use smaller units)");
  std::vector<int> held_by(s.stages, -1);  // last rank seen running each stage
  for (int r = 0; r < s.ranks; ++r) {
    RankStats& st = res.per_rank[r];
    st.idle = res.makespan - st.busy;
    res.bubble = std::max(res.bubble, st.idle);
    for (const Action& a : s.actions[r]) {
      if ((a.op == Op::F || a.op == Op::FB) && held_by[a.stage] != r) {
        held_by[a.stage] = r;
        ++st.stages_held;
      }
    }
    st.param_copies = static_cast<double>(st.stages_held) * s.ranks / s.stages;
  }
  res.bubble_ratio = res.makespan > 0 ? res.bubble / res.makespan : 0.0;
  return res;
}

}  // namespace dp
