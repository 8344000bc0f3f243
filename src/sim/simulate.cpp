#include "dualpipe/sim/simulate.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "schedule/big_array.h"
#include "sim/link.h"
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

namespace {

// One half of a pair (or a chunk alone) as the runtime runs it: compute
// pieces with an all-to-all posted between each two; at its end its output
// transfer (`send` link time, then `latency`) is posted.
struct HalfRun {
  std::vector<double> pieces;
  double compute = 0;   // the pieces' sum
  double a2a = 0;
  double send = -1;     // link time of its output transfer; < 0: none
  RankLink* to = nullptr;  // the receiving rank's link (duplex)
  double latency = 0;
  double fill = 0;      // weight-gradient work that fills waits (Costs::fill_waits), part of compute
  double queued = 0;    // of it, queued and not run yet
  bool rest_after = true;  // the rest runs after its output (a B); false: its W runs it (an I)
  std::size_t next = 0;
  double ready = 0;     // when its posted all-to-all is done
  double posted = 0;    // when it was posted
  double arrived = 0;   // out: when its output is at the receiver
  double end = 0;       // out: when its last piece ended
  bool left() const { return next < pieces.size(); }
};

std::vector<double> cut(const ChunkWork& w, const std::vector<double>& given) {
  if (!given.empty()) return given;
  return std::vector<double>(static_cast<std::size_t>(w.phases + 1), w.compute / (w.phases + 1));
}

// Runs the halves from `t0` on `link`: alternating (the engine's turns: they
// swap at every all-to-all post, B first, a half that comes back waits for
// its transfer) or one after the other (F, then B). `n` halves: 1 (a chunk)
// or 2 (h[0] the forward, h[1] the backward).
// Returns times relative to t0; the halves get their absolute end and arrival.
PairTime run_halves(HalfRun* h, int n, bool alternate, RankLink& link, double t0) {
  double now = t0;
  int cur = alternate && n > 1 ? 1 : 0;  // alternating, the backward starts
  PairTime p;
  auto any_left = [&] { return h[0].left() || (n > 1 && h[1].left()); };
  // Queued weight-gradient work run by the turn holder until `until`.
  auto fill_until = [&](double until) {
    for (int i = 0; i < n && now < until; ++i) {
      const double d = std::min(h[i].queued, until - now);
      h[i].queued -= d;
      now += d;
    }
  };
  double piece_sum[2] = {0, 0};
  for (int i = 0; i < n; ++i)
    for (double x : h[i].pieces) piece_sum[i] += x;
  while (any_left()) {
    if (!h[cur].left()) cur = 1 - cur;
    HalfRun& k = h[cur];
    if (k.ready > now) fill_until(k.ready);
    if (k.ready > now) {
      p.waits.push_back({now - t0, k.ready - t0});  // the turn holder waits for its transfer
      // A whole transfer waited from its post: its own time, unrounded.
      p.exposed += now == k.posted && k.ready == k.posted + k.a2a ? k.a2a : k.ready - now;
      now = k.ready;
    }
    const double piece = k.pieces[k.next++];
    now += piece;
    if (k.fill > 0) k.queued += piece_sum[cur] > 0 ? k.fill * piece / piece_sum[cur] : 0.0;
    if (k.left()) {
      k.posted = now;
      k.ready = link.exchange(now, k.a2a);  // an all-to-all post: on the link in posting order
    } else {
      k.end = now;
      k.arrived = k.send < 0 ? now : link.send_to(now, k.send, k.to) + k.latency;
      if (k.rest_after) {
        now += k.queued;  // the rest of its weight gradients, after its output is sent
        k.queued = 0;
      } else {
        k.compute -= k.queued;  // left to its W
      }
    }
    if (alternate && n > 1) cur = 1 - cur;  // hand over (at a post, or for good when this half ended)
  }
  // At every moment a piece computes or the turn holder waits: the same
  // sum, without the rounding of adding up pieces.
  double compute = 0;
  for (int i = 0; i < n; ++i) compute += h[i].compute;
  p.duration = compute + p.exposed;
  return p;
}

}  // namespace

PairTime alternating_pair(const ChunkWork& f, const ChunkWork& b, const std::vector<double>& f_pieces,
                          const std::vector<double>& b_pieces) {
  HalfRun h[2];
  h[0].pieces = cut(f, f_pieces);
  h[0].compute = f.compute;
  h[0].a2a = f.a2a;
  h[1].pieces = cut(b, b_pieces);
  h[1].compute = b.compute;
  h[1].a2a = b.a2a;
  RankLink link;
  return run_halves(h, 2, true, link, 0.0);
}

namespace {

// How one action ran on its rank's link: its all-to-all time and how much of
// it was exposed, its waits (relative to its start), and its halves' runs.
struct LinkRun {
  double exposed = 0, a2a_time = 0;
  PairTime waits;
  HalfRun runs[2];
  bool ran = false;  // the halves ran on the link (their ends and arrivals are known)
};

// One simulation in progress: the schedule's actions, in the walker's order,
// each started when its rank is free and its inputs are there.
class Simulation {
 public:
  Simulation(const Schedule& s, const Costs& c, const SimOptions& opt)
      : s_(s),
        c_(c),
        opt_(opt),
        N_(s.micro_batches),
        fwd_end_(cells()),
        grad_end_(cells()),
        placement_(placement_of(s)),
        free_at_(s.ranks, 0.0),
        live_(s.ranks, 0),
        held_(s.ranks, 0),
        hop_(c.transfer()),
        comm_(c.has_a2a()),
        on_link_(c.link != Costs::Link::Apart),
        send_work_(c.bandwidth > 0 ? c.act_bytes / c.bandwidth : 0.0),
        links_(static_cast<std::size_t>(s.ranks), RankLink(c.link)),
        fwd_at_(cells()),
        grad_at_(cells()),
        filled_w_(cells()) {
    res_.per_rank.assign(s.ranks, RankStats{});
    if (opt.timeline) {
      res_.timeline.resize(s.ranks);
      for (int r = 0; r < s.ranks; ++r) res_.timeline[r].resize(s.actions[r].size());
    }
    if (comm_ && opt.timeline) res_.a2a_waits.resize(s.ranks);
  }

  // Runs action `a`, at position `pos` of rank r's list.
  void step(int r, std::size_t pos, const Action& a) {
    RankStats& st = res_.per_rank[r];
    double start = free_at_[r], dur = 0;
    compute_of(a, start, dur);
    // All-to-all phases (only chunks that have some, so that everything else
    // keeps exactly the figures it had without this model) and, with a link
    // model, the pipeline sends: on the rank's link.
    LinkRun lr;
    if (a.op == Op::F || is_backward(a.op) || a.op == Op::W)
      run_chunk(a, r, pos, start, dur, lr);
    else if (is_pair(a.op))
      run_pair(a, r, start, dur, lr);
    if (lr.a2a_time > 0) {
      st.a2a_total += lr.a2a_time;
      st.exposed_a2a += lr.exposed;
      if (opt_.timeline)
        for (const Span& w : lr.waits.waits) res_.a2a_waits[r].push_back({start + w.start, start + w.end});
    }
    const double end = start + dur;
    finish_halves(a, r, end, lr);
    if (a.op == Op::W) --held_[r];
    st.busy += dur;
    free_at_[r] = end;
    if (opt_.timeline) res_.timeline[r][pos] = {start, end};
  }

  // The step's totals, once every action ran.
  SimResult finish() {
    SimResult& res = res_;
    res.makespan = *std::max_element(free_at_.begin(), free_at_.end());
    // Each cost is finite (validate), but their sums can still overflow; an
    // "inf" step time with "nan" idle times would be a silent wrong answer.
    if (!std::isfinite(res.makespan))
      throw Error("costs too large: the simulated step time overflows a double (use smaller units)");
    for (int r = 0; r < s_.ranks; ++r) {
      RankStats& st = res.per_rank[r];
      st.idle = res.makespan - st.busy;
      res.bubble = std::max(res.bubble, st.idle);
      st.stages_held = static_cast<int>(placement_.stages_of[static_cast<std::size_t>(r)].size());
      st.param_copies = static_cast<double>(st.stages_held) * s_.ranks / s_.stages;
    }
    res.bubble_ratio = res.makespan > 0 ? res.bubble / res.makespan : 0.0;
    for (const RankStats& st : res.per_rank) {
      res.a2a_total += st.a2a_total;
      res.exposed_a2a += st.exposed_a2a;
    }
    res.a2a_hidden = res.a2a_total > 0 ? 1.0 - res.exposed_a2a / res.a2a_total : 0.0;
    return std::move(res_);
  }

 private:
  std::size_t cells() const { return static_cast<std::size_t>(s_.stages) * N_; }
  std::size_t idx(int stage, int mb) const { return static_cast<std::size_t>(stage) * N_ + mb; }

  ChunkWork work(double compute, int stage, bool fwd) const {
    return ChunkWork{compute, c_.phases(stage), fwd ? c_.a2a_fwd(stage) : c_.a2a_bwd(stage)};
  }
  // The weight-gradient work of a B of `stage` lasting `compute` that fills
  // its waits (Costs::fill_waits), at most the B.
  double fill_of(int stage, double compute) const {
    return c_.fill_waits ? std::min(c_.w(stage), compute) : 0.0;
  }
  // A chunk's measured compute pieces (F and B), scaled to `w`; empty: equal ones.
  std::vector<double> measured_pieces(Op op, int stage, const ChunkWork& w) const {
    if (op == Op::F) return c_.pieces_of(c_.f_pieces, stage, w);
    if (op == Op::B) return c_.pieces_of(c_.b_pieces, stage, w);
    return {};
  }
  // Earliest start of each half, given the inputs it needs.
  double fwd_ready(int stage, int mb) const { return stage > 0 ? fwd_at_[idx(stage - 1, mb)] : 0.0; }
  double bwd_ready(int stage, int mb) const {
    double t = fwd_end_[idx(stage, mb)];
    if (stage + 1 < s_.stages) t = std::max(t, grad_at_[idx(stage + 1, mb)]);
    return t;
  }
  // The stage that takes half h's output; -1: none (a W, or the pipeline's end).
  int consumer_stage(const Action& h) const {
    const int to = h.op == Op::F ? h.stage + 1 : h.stage - 1;
    return h.op == Op::W || to < 0 || to >= s_.stages ? -1 : to;
  }
  // Whether half h, run on rank r, sends its output to another rank.
  bool sends_away(const Action& h, int r) const {
    const int to = consumer_stage(h);
    return to >= 0 && placement_.rank(to, h.mb) != r;
  }
  // The link time of half h's output transfer, run on rank r: none (-1) when
  // its consumer runs on r or there is none.
  double send_of(const Action& h, int r) const { return sends_away(h, r) ? send_work_ : -1.0; }
  // The link of the rank that receives half h's output (null: none).
  RankLink* receiver_of(const Action& h) {
    const int to = consumer_stage(h);
    return to < 0 ? nullptr : &links_[static_cast<std::size_t>(placement_.rank(to, h.mb))];
  }
  // Records when a half's output is at its consumer.
  void deliver(const Action& h, double at) {
    if (h.op == Op::F) fwd_at_[idx(h.stage, h.mb)] = at;
    if (is_backward(h.op)) grad_at_[idx(h.stage, h.mb)] = at;
  }

  // The earliest `start` of `a` (given when its rank is free) and its compute
  // time `dur`; transfers are charged on the edge, not on the rank.
  void compute_of(const Action& a, double& start, double& dur) const {
    switch (a.op) {
      case Op::F:
        start = std::max(start, fwd_ready(a.stage, a.mb));
        dur = c_.f(a.stage);
        break;
      case Op::B:
      case Op::I:
        start = std::max(start, bwd_ready(a.stage, a.mb));
        dur = a.op == Op::B ? c_.b(a.stage) : c_.i(a.stage);
        break;
      case Op::W:
        start = std::max(start, grad_end_[idx(a.stage, a.mb)]);
        dur = std::max(0.0, c_.w(a.stage) - filled_w_[idx(a.stage, a.mb)]);  // less what its I ran in waits
        break;
      case Op::FB: {
        const Action f = a.forward_half(), b = a.backward_half();
        start = std::max({start, fwd_ready(f.stage, f.mb), bwd_ready(b.stage, b.mb)});
        dur = c_.fb(f.stage, b.stage);
        break;
      }
      case Op::FF: {
        const Action f = a.forward_half(), g = a.second_half();
        start = std::max({start, fwd_ready(f.stage, f.mb), fwd_ready(g.stage, g.mb)});
        dur = c_.f(f.stage) + c_.f(g.stage);
        break;
      }
      default: break;
    }
  }

  // A chunk alone (F, B, I or W) on rank r's link: `dur` becomes its time
  // with the waits for its all-to-all.
  void run_chunk(const Action& a, int r, std::size_t pos, double start, double& dur, LinkRun& lr) {
    const ChunkWork wk = work(dur, a.stage, a.op == Op::F);
    const bool talk = comm_ && a.op != Op::W && talks(wk);
    if (!talk && !on_link_) return;
    ChunkWork w = talk ? wk : ChunkWork{dur, 0, 0};
    HalfRun* runs = lr.runs;
    // A B fills its waits with its own weight gradients; an I with its W's
    // when that W is the rank's next compute action (the runtime's rule).
    const bool w_next = w_comes_next(s_.actions[static_cast<std::size_t>(r)], pos);
    if (talk && (a.op == Op::B || w_next)) runs[0].fill = fill_of(a.stage, a.op == Op::B ? w.compute : c_.w(a.stage));
    if (a.op == Op::B) w.compute -= runs[0].fill;
    runs[0].rest_after = a.op == Op::B;
    runs[0].pieces = cut(w, talk ? measured_pieces(a.op, a.stage, w) : std::vector<double>{});
    runs[0].compute = w.compute + runs[0].fill;
    if (w_next) filled_w_[idx(a.stage, a.mb)] = runs[0].fill;  // less the rest, below
    runs[0].a2a = w.a2a;
    runs[0].send = on_link_ ? send_of(a, r) : -1;
    runs[0].to = receiver_of(a);
    runs[0].latency = c_.latency;
    lr.waits = run_halves(runs, 1, false, links_[r], start);
    if (w_next) filled_w_[idx(a.stage, a.mb)] -= runs[0].queued;
    if (talk) lr.a2a_time = link_time(w);
    lr.exposed = lr.waits.exposed;
    dur = lr.waits.duration;
    lr.ran = true;
  }

  // A pair on rank r's link (F&B, or two forwards): its compute shared
  // between the halves, which alternate (or run one after the other): `dur`
  // becomes its time.
  void run_pair(const Action& a, int r, double start, double& dur, LinkRun& lr) {
    const Action f = a.forward_half(), b = a.second_half();
    const bool fb = a.op == Op::FB;
    ChunkWork wf = work(c_.f(f.stage), f.stage, true), wb = work(fb ? c_.b(b.stage) : c_.f(b.stage), b.stage, !fb);
    const bool talk = comm_ && (talks(wf) || talks(wb));
    if (fb && (c_.FB || !c_.FB_pair.empty())) {  // the pair's compute given: share it in the ratio F : B
      const double sum = wf.compute + wb.compute;
      wf.compute = sum > 0 ? dur * wf.compute / sum : dur / 2;
      wb.compute = sum > 0 ? dur * wb.compute / sum : dur / 2;
    }
    if (!talk) {  // no all-to-all: the pair's compute as one piece, both sends at its end
      wf = ChunkWork{dur, 0, 0};
      wb = ChunkWork{0, 0, 0};
    }
    if (!talks(wf)) wf = ChunkWork{wf.compute, 0, 0};
    if (!talks(wb)) wb = ChunkWork{wb.compute, 0, 0};
    const bool alternate = talk && c_.fb_overlap;
    HalfRun* runs = lr.runs;
    const bool first_ready = alternate && c_.pair_turns == Costs::PairTurns::FirstReady;
    runs[1].fill = fb && talks(wb) && !first_ready ? fill_of(b.stage, wb.compute) : 0.0;
    wb.compute -= runs[1].fill;
    if (first_ready) {
      lr.waits = overlapped_pair(wf, wb);  // its own link (the pipeline sends go out at its end)
      dur = lr.waits.duration;
    } else if (talk || on_link_) {
      // Measured pieces where the halves talk; equal ones otherwise.
      runs[0].pieces = cut(wf, talk ? measured_pieces(Op::F, f.stage, wf) : std::vector<double>{});
      runs[1].pieces = cut(wb, talk ? measured_pieces(b.op, b.stage, wb) : std::vector<double>{});
      runs[0].compute = wf.compute;
      runs[1].compute = wb.compute + runs[1].fill;
      runs[0].a2a = wf.a2a;
      runs[1].a2a = wb.a2a;
      runs[0].send = on_link_ ? send_of(f, r) : -1;
      runs[1].send = on_link_ ? send_of(b, r) : -1;
      runs[0].to = receiver_of(f);
      runs[1].to = receiver_of(b);
      runs[0].latency = runs[1].latency = c_.latency;
      lr.waits = run_halves(runs, 2, alternate, links_[r], start);
      dur = lr.waits.duration;
      lr.ran = true;
    }
    if (talk) {
      lr.a2a_time = link_time(wf) + link_time(wb);
      lr.exposed = lr.waits.exposed;
    }
  }

  // The halves of `a`, ended at `end` on rank r: their outputs delivered,
  // their activations counted. An F&B pair ends both halves at its end. The
  // new forward's activation is alive from its start; a pair frees its
  // backward's one at its end, so it peaks at +1.
  void finish_halves(const Action& a, int r, double end, const LinkRun& lr) {
    RankStats& st = res_.per_rank[r];
    const auto parts = halves(a);
    for (int k = 0; k < parts.count; ++k) {
      const Action& h = parts.part[k];
      // Without a link model (or for a pair whose halves ran elsewhere) the
      // output goes at the action's end and takes transfer() on its own edge.
      double at = end + (sends_away(h, r) ? hop_ : 0.0);
      if (lr.ran && on_link_) at = lr.runs[k].arrived;
      deliver(h, at);
      if (h.op == Op::F) {
        fwd_end_[idx(h.stage, h.mb)] = end;
        st.peak_activations = std::max(st.peak_activations, ++live_[r]);
        st.peak_held = std::max(st.peak_held, ++held_[r]);
      }
      if (is_backward(h.op)) {
        grad_end_[idx(h.stage, h.mb)] = end;
        --live_[r];
        if (h.op == Op::B) --held_[r];
      }
    }
  }

  const Schedule& s_;
  const Costs& c_;
  const SimOptions& opt_;
  const int N_;
  BigArray<double> fwd_end_, grad_end_;
  const Placement placement_;  // rank of each (stage, mb)
  std::vector<double> free_at_;
  std::vector<int> live_, held_;
  const double hop_;
  const bool comm_;
  const bool on_link_;
  const double send_work_;  // a pipeline send on the link
  std::vector<RankLink> links_;
  // When each output is at its consumer's rank.
  BigArray<double> fwd_at_, grad_at_;
  BigArray<double> filled_w_;  // W work an I ran in its waits, per (stage, mb)
  SimResult res_;
};

}  // namespace

SimResult simulate(const Schedule& s, const Costs& c, const SimOptions& opt) {
  check_or_throw(s);
  c.validate(s.stages);
  Simulation sim(s, c, opt);
  Walker walker(s);
  walker.run([&](int r, std::size_t pos, const Action& a) { sim.step(r, pos, a); });
  return sim.finish();
}

}  // namespace dualpipe
