#include "schedule/check.h"

#include <fmt/format.h>

#include "schedule/error.h"
#include "schedule/walk.h"

namespace dp {
namespace {

constexpr int kNone = -1;

// Where one (stage, micro-batch) event was issued.
struct Site {
  int rank = kNone;
  int pos = kNone;
  int count = 0;
  bool set() const { return rank != kNone; }
};

struct Checker {
  const Schedule& s;
  std::size_t max_errors;
  CheckReport rep;
  int S, N;
  // Per (stage, mb): forward, backward, weight-gradient, and the four transfers.
  std::vector<Site> fwd, bwd, wgt, send_f, recv_f, send_b, recv_b;
  std::vector<std::uint8_t> bwd_is_i;

  Checker(const Schedule& sched, std::size_t max_err)
      : s(sched), max_errors(max_err), S(sched.stages), N(sched.micro_batches) {}

  bool full() const { return rep.errors.size() >= max_errors; }

  template <class... Args>
  void error(fmt::format_string<Args...> f, Args&&... args) {
    if (!full()) rep.errors.push_back(fmt::format(f, std::forward<Args>(args)...));
  }

  std::string where(int r, int p) const {
    return fmt::format("rank {}, position {} ({})", r, p, to_string(s.actions[r][p]));
  }
  std::string where(const Site& site) const { return where(site.rank, site.pos); }

  std::size_t idx(int stage, int mb) const { return static_cast<std::size_t>(stage) * N + mb; }

  bool shape_ok() {
    if (s.ranks < 1) error("a schedule needs at least 1 rank (got {})", s.ranks);
    if (s.stages < 1) error("a schedule needs at least 1 stage (got {})", s.stages);
    if (s.micro_batches < 1) error("a schedule needs at least 1 micro-batch (got {})", s.micro_batches);
    if (s.ranks >= 1 && static_cast<int>(s.actions.size()) != s.ranks)
      error("schedule declares {} ranks but has action lists for {}", s.ranks, s.actions.size());
    if (!rep.ok()) return false;
    // Every (stage, micro-batch) needs its own forward. Checking the count
    // first keeps memory linear in the actions when a file names a huge index.
    std::size_t forwards = 0;
    for (const auto& r : s.actions)
      for (const Action& a : r) forwards += (a.op == Op::F || a.op == Op::FB);
    const std::size_t needed = static_cast<std::size_t>(S) * static_cast<std::size_t>(N);
    if (forwards < needed)
      error("{} stages x {} micro-batches need {} forwards but the schedule holds {}", S, N, needed, forwards);
    return rep.ok();
  }

  bool in_range(int stage, int mb) const { return stage >= 0 && stage < S && mb >= 0 && mb < N; }

  bool ranges_ok() {
    for (int r = 0; r < s.ranks && !full(); ++r) {
      for (std::size_t p = 0; p < s.actions[r].size(); ++p) {
        const Action& a = s.actions[r][p];
        bool ok = in_range(a.stage, a.mb) && (a.op != Op::FB || in_range(a.stage2, a.mb2));
        if (!ok) {
          error("{}: stage must be in 0..{} and micro-batch in 0..{}", where(r, static_cast<int>(p)), S - 1,
                N - 1);
          continue;
        }
        bool edge_ok = true;
        if (a.op == Op::SEND_F || a.op == Op::RECV_B) edge_ok = a.stage < S - 1;
        if (a.op == Op::RECV_F || a.op == Op::SEND_B) edge_ok = a.stage > 0;
        if (!edge_ok)
          error("{}: stage {} has no neighbour on that side (stages 0..{})", where(r, static_cast<int>(p)),
                a.stage, S - 1);
      }
    }
    return rep.ok();
  }

  void record(std::vector<Site>& sites, int stage, int mb, int r, int p, const char* what) {
    Site& site = sites[idx(stage, mb)];
    if (site.count++ == 0) {
      site.rank = r;
      site.pos = p;
    } else if (site.count == 2) {
      error("{}: second {} of stage {}, micro-batch {} (first at {})", where(r, p), what, stage, mb, where(site));
    }
  }

  void collect() {
    const std::size_t n = static_cast<std::size_t>(S) * N;
    for (auto* v : {&fwd, &bwd, &wgt}) v->assign(n, Site{});
    // Transfer sites cost as much again; only lowered schedules need them.
    if (s.has_comm())
      for (auto* v : {&send_f, &recv_f, &send_b, &recv_b}) v->assign(n, Site{});
    bwd_is_i.assign(n, 0);
    for (int r = 0; r < s.ranks; ++r) {
      for (std::size_t pp = 0; pp < s.actions[r].size(); ++pp) {
        const Action& a = s.actions[r][pp];
        const int p = static_cast<int>(pp);
        switch (a.op) {
          case Op::F: record(fwd, a.stage, a.mb, r, p, "forward"); break;
          case Op::B: record(bwd, a.stage, a.mb, r, p, "backward"); break;
          case Op::I:
            record(bwd, a.stage, a.mb, r, p, "backward");
            bwd_is_i[idx(a.stage, a.mb)] = 1;
            break;
          case Op::W: record(wgt, a.stage, a.mb, r, p, "weight-gradient action"); break;
          case Op::FB:
            record(fwd, a.stage, a.mb, r, p, "forward");
            record(bwd, a.stage2, a.mb2, r, p, "backward");
            break;
          case Op::SEND_F: record(send_f, a.stage, a.mb, r, p, "SEND_F"); break;
          case Op::RECV_F: record(recv_f, a.stage, a.mb, r, p, "RECV_F"); break;
          case Op::SEND_B: record(send_b, a.stage, a.mb, r, p, "SEND_B"); break;
          case Op::RECV_B: record(recv_b, a.stage, a.mb, r, p, "RECV_B"); break;
        }
      }
    }
  }

  void compute_consistency() {
    for (int st = 0; st < S && !full(); ++st) {
      for (int mb = 0; mb < N && !full(); ++mb) {
        const std::size_t k = idx(st, mb);
        const Site &f = fwd[k], &b = bwd[k], &w = wgt[k];
        if (!f.set()) error("forward of stage {}, micro-batch {} is missing", st, mb);
        if (!b.set()) error("backward of stage {}, micro-batch {} is missing", st, mb);
        if (f.set() && b.set()) {
          if (b.rank != f.rank)
            error("{}: backward runs on rank {} but its forward ({}) is on rank {}", where(b), b.rank, where(f),
                  f.rank);
          else if (b.pos < f.pos)
            error("{}: backward issued before its forward at position {}", where(b), f.pos);
        }
        if (bwd_is_i[k] && !w.set())
          error("{}: input-gradient backward has no W for its weight gradient", where(b));
        if (w.set()) {
          if (!b.set() || !bwd_is_i[k])
            error("{}: W without an I (a B already includes the weight gradient)", where(w));
          else if (w.rank != b.rank)
            error("{}: W runs on rank {} but its I ({}) is on rank {}", where(w), w.rank, where(b), b.rank);
          else if (w.pos < b.pos)
            error("{}: W issued before its I at position {}", where(w), b.pos);
        }
      }
    }
  }

  // One transfer edge: `producer` on one rank feeds `consumer`; if the ranks
  // differ the schedule needs exactly one send after the producer on its rank
  // and one receive before the consumer on the other.
  void edge(const Site& producer, const Site& consumer, const Site& send, const Site& recv, const char* send_name,
            const char* recv_name, int send_stage, int recv_stage, int mb) {
    if (!producer.set() || !consumer.set()) return;  // already reported as missing
    if (producer.rank == consumer.rank) {
      if (send.set()) error("{}: {} between stages on the same rank {}", where(send), send_name, producer.rank);
      if (recv.set()) error("{}: {} between stages on the same rank {}", where(recv), recv_name, producer.rank);
      return;
    }
    if (!send.set())
      error("missing {}{}{} on rank {} after {}", send_stage, send_name, mb, producer.rank, where(producer));
    else if (send.rank != producer.rank)
      error("{}: {} must be on rank {}, where {} runs", where(send), send_name, producer.rank, where(producer));
    else if (send.pos < producer.pos)
      error("{}: {} issued before what it sends, at position {}", where(send), send_name, producer.pos);
    if (!recv.set())
      error("missing {}{}{} on rank {} before {}", recv_stage, recv_name, mb, consumer.rank, where(consumer));
    else if (recv.rank != consumer.rank)
      error("{}: {} must be on rank {}, where {} runs", where(recv), recv_name, consumer.rank, where(consumer));
    else if (recv.pos > consumer.pos)
      error("{}: {} issued after its consumer at position {}", where(recv), recv_name, consumer.pos);
  }

  void comm_consistency() {
    for (int st = 0; st + 1 < S && !full(); ++st) {
      for (int mb = 0; mb < N && !full(); ++mb) {
        const std::size_t lo = idx(st, mb), hi = idx(st + 1, mb);
        edge(fwd[lo], fwd[hi], send_f[lo], recv_f[hi], "SEND_F", "RECV_F", st, st + 1, mb);
        edge(bwd[hi], bwd[lo], send_b[hi], recv_b[lo], "SEND_B", "RECV_B", st + 1, st, mb);
      }
    }
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
    if (res.complete) return;
    for (const WalkStall& st : res.stalled)
      error("deadlock: {} waits forever for {} of stage {}, micro-batch {} ({} of {} ranks stall)",
            where(st.rank, static_cast<int>(st.pos)), need_name(st.need), st.stage, st.mb, res.stalled.size(),
            s.ranks);
  }

  CheckReport run() {
    if (!shape_ok() || !ranges_ok()) return rep;
    collect();
    compute_consistency();
    if (s.has_comm()) comm_consistency();
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

}  // namespace dp
