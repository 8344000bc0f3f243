#include "dualpipe/sim/simulate.h"

#include <algorithm>
#include <cmath>

#include "schedule/big_array.h"
#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/placement.h"
#include "schedule/walk.h"

namespace dualpipe {
namespace {

// The waits of one chunk run alone from `t0`: piece, all-to-all, piece, ...
void chunk_waits(const ChunkWork& w, double t0, std::vector<Span>& out) {
  const double piece = w.compute / (w.phases + 1);
  double t = t0;
  for (int k = 0; k < w.phases; ++k) {
    t += piece;
    out.push_back({t, t + w.a2a});
    t += w.a2a;
  }
}

double link_time(const ChunkWork& w) { return w.phases * w.a2a; }
bool talks(const ChunkWork& w) { return w.phases > 0 && w.a2a > 0; }

}  // namespace

PairTime serial_pair(const ChunkWork& f, const ChunkWork& b) {
  PairTime p;
  chunk_waits(f, 0, p.waits);
  const double f_end = f.compute + link_time(f);
  chunk_waits(b, f_end, p.waits);
  p.exposed = link_time(f) + link_time(b);
  p.duration = f_end + b.compute + link_time(b);
  return p;
}

PairTime overlapped_pair(const ChunkWork& f, const ChunkWork& b) {
  struct Task {
    double piece, a2a;
    int left;            // compute pieces still to run
    double ready = 0.0;  // when its last all-to-all is done
  };
  Task t[2] = {{f.compute / (f.phases + 1), f.a2a, f.phases + 1}, {b.compute / (b.phases + 1), b.a2a, b.phases + 1}};
  double baton = 0;  // when the running piece ends and the baton is free
  double link = 0;   // when the link is free
  int last = 1;      // task that ran last; the forward goes first
  PairTime p;
  while (t[0].left > 0 || t[1].left > 0) {
    int i = t[0].left == 0 ? 1 : 0;
    if (t[0].left > 0 && t[1].left > 0) {
      const double r0 = std::max(t[0].ready, baton), r1 = std::max(t[1].ready, baton);
      i = r0 < r1 ? 0 : r1 < r0 ? 1 : 1 - last;  // a tie: hand the baton over
    }
    Task& k = t[i];
    const double start = std::max(baton, k.ready);
    if (start > baton) {
      p.waits.push_back({baton, start});  // nobody can compute: both wait on the wire
      p.exposed += start - baton;
    }
    baton = start + k.piece;
    last = i;
    if (--k.left > 0) {
      link = std::max(baton, link) + k.a2a;
      k.ready = link;
    }
  }
  p.duration = baton;
  return p;
}

PairTime alternating_pair(const ChunkWork& f, const ChunkWork& b, const std::vector<double>& f_pieces,
                          const std::vector<double>& b_pieces) {
  struct Task {
    std::vector<double> pieces;
    double a2a;
    std::size_t next = 0;
    double ready = 0.0;  // when its posted all-to-all is done
    bool left() const { return next < pieces.size(); }
  };
  auto cut = [](const ChunkWork& w, const std::vector<double>& given) {
    if (!given.empty()) return given;
    return std::vector<double>(static_cast<std::size_t>(w.phases + 1), w.compute / (w.phases + 1));
  };
  Task t[2] = {{cut(f, f_pieces), f.a2a}, {cut(b, b_pieces), b.a2a}};
  double now = 0, link = 0;
  int cur = 0;  // the forward starts
  PairTime p;
  while (t[0].left() || t[1].left()) {
    if (!t[cur].left()) cur = 1 - cur;
    Task& k = t[cur];
    if (k.ready > now) {
      p.waits.push_back({now, k.ready});  // the turn holder waits for its transfer
      p.exposed += k.ready - now;
      now = k.ready;
    }
    now += k.pieces[k.next++];
    if (k.left()) {  // an all-to-all post: on the link after the ones before it
      link = std::max(now, link) + k.a2a;
      k.ready = link;
    }
    cur = 1 - cur;  // hand over (at a post, or for good when this half ended)
  }
  p.duration = now;
  return p;
}

SimResult simulate(const Schedule& s, const Costs& c, const SimOptions& opt) {
  check_or_throw(s);
  c.validate(s.stages);
  const int N = s.micro_batches;
  const std::size_t cells = static_cast<std::size_t>(s.stages) * N;
  auto idx = [N](int stage, int mb) { return static_cast<std::size_t>(stage) * N + mb; };

  BigArray<double> fwd_end(cells), grad_end(cells);
  const Placement placement = placement_of(s);  // rank of each (stage, mb)
  std::vector<double> free_at(s.ranks, 0.0);
  std::vector<int> live(s.ranks, 0), held(s.ranks, 0);
  SimResult res;
  res.per_rank.assign(s.ranks, RankStats{});
  if (opt.timeline) {
    res.timeline.resize(s.ranks);
    for (int r = 0; r < s.ranks; ++r) res.timeline[r].resize(s.actions[r].size());
  }
  const double hop = c.transfer();
  const bool comm = c.has_a2a();
  if (comm && opt.timeline) res.a2a_waits.resize(s.ranks);
  auto work = [&](double compute, int stage, bool fwd) {
    return ChunkWork{compute, c.phases(stage), fwd ? c.a2a_fwd(stage) : c.a2a_bwd(stage)};
  };
  auto arrive = [&](const BigArray<double>& end, int stage, int mb, int rank) {
    std::size_t k = idx(stage, mb);
    return end[k] + (placement.rank(stage, mb) != rank ? hop : 0.0);
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
      case Op::FB: {
        const Action f = a.forward_half(), b = a.backward_half();
        start = std::max({start, fwd_ready(f.stage, f.mb, r), bwd_ready(b.stage, b.mb, r)});
        dur = c.fb(f.stage, b.stage);
        break;
      }
      default: break;  // transfers are charged on the edge, not on the rank
    }
    // All-to-all phases: only chunks that have some, so that everything else
    // keeps exactly the figures it had without this model.
    double exposed = 0, on_link = 0;
    PairTime waits;
    if (comm && (a.op == Op::F || is_backward(a.op))) {
      const ChunkWork w = work(dur, a.stage, a.op == Op::F);
      if (talks(w)) {
        on_link = exposed = link_time(w);
        if (opt.timeline) chunk_waits(w, 0, waits.waits);
        dur += exposed;
      }
    } else if (comm && a.op == Op::FB) {
      const Action f = a.forward_half(), b = a.backward_half();
      ChunkWork wf = work(c.f(f.stage), f.stage, true), wb = work(c.b(b.stage), b.stage, false);
      if (talks(wf) || talks(wb)) {
        if (c.FB) {  // FB is the pair's compute: share it in the ratio F : B
          const double sum = wf.compute + wb.compute;
          wf.compute = sum > 0 ? *c.FB * wf.compute / sum : *c.FB / 2;
          wb.compute = sum > 0 ? *c.FB * wb.compute / sum : *c.FB / 2;
        }
        if (!c.fb_overlap)
          waits = serial_pair(wf, wb);
        else if (c.pair_turns == Costs::PairTurns::FirstReady)
          waits = overlapped_pair(wf, wb);
        else
          waits = alternating_pair(wf, wb, c.pieces_of(c.f_pieces, f.stage, wf), c.pieces_of(c.b_pieces, b.stage, wb));
        on_link = link_time(wf) + link_time(wb);
        exposed = waits.exposed;
        dur = c.fb_overlap ? waits.duration : dur + exposed;
      }
    }
    if (on_link > 0) {
      st.a2a_total += on_link;
      st.exposed_a2a += exposed;
      if (opt.timeline)
        for (const Span& w : waits.waits) res.a2a_waits[r].push_back({start + w.start, start + w.end});
    }
    const double end = start + dur;
    // An F&B pair ends both halves at its end. The new forward's activation
    // is alive from its start; a pair frees its backward's one at its end,
    // so it peaks at +1.
    for (const Action& h : halves(a)) {
      if (h.op == Op::F) {
        fwd_end[idx(h.stage, h.mb)] = end;
        st.peak_activations = std::max(st.peak_activations, ++live[r]);
        st.peak_held = std::max(st.peak_held, ++held[r]);
      }
      if (is_backward(h.op)) {
        grad_end[idx(h.stage, h.mb)] = end;
        --live[r];
        if (h.op == Op::B) --held[r];
      }
    }
    if (a.op == Op::W) --held[r];
    st.busy += dur;
    free_at[r] = end;
    if (opt.timeline) res.timeline[r][pos] = {start, end};
  });

  res.makespan = *std::max_element(free_at.begin(), free_at.end());
  // Each cost is finite (validate), but their sums can still overflow; an
  // "inf" step time with "nan" idle times would be a silent wrong answer.
  if (!std::isfinite(res.makespan))
    throw Error("costs too large: the simulated step time overflows a double (use smaller units)");
  for (int r = 0; r < s.ranks; ++r) {
    RankStats& st = res.per_rank[r];
    st.idle = res.makespan - st.busy;
    res.bubble = std::max(res.bubble, st.idle);
    st.stages_held = static_cast<int>(placement.stages_of[static_cast<std::size_t>(r)].size());
    st.param_copies = static_cast<double>(st.stages_held) * s.ranks / s.stages;
  }
  res.bubble_ratio = res.makespan > 0 ? res.bubble / res.makespan : 0.0;
  for (const RankStats& st : res.per_rank) {
    res.a2a_total += st.a2a_total;
    res.exposed_a2a += st.exposed_a2a;
  }
  res.a2a_hidden = res.a2a_total > 0 ? 1.0 - res.exposed_a2a / res.a2a_total : 0.0;
  return res;
}

}  // namespace dualpipe
