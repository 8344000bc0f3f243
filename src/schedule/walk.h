#pragma once
// Dependency walk: visits every action of a schedule in an order that keeps
// each rank's issue order and every data dependency, in O(actions) time.
//
// This one engine serves the checker (does the walk finish, or where does it
// stall?) and the simulator (which computes times inside the visitor, knowing
// that every input of the visited action has already been visited).
//
// Dependencies (docs/design.md, "Simulation semantics"):
//   F(s,m)        needs F(s-1,m)
//   B/I(s,m)      needs B/I(s+1,m) and F(s,m)
//   W(s,m)        needs I(s,m)
//   FB, FF        need what both halves need
//   SEND_F(s,m)   needs F(s,m);   RECV_F(s,m) needs SEND_F(s-1,m)
//   SEND_B(s,m)   needs B/I(s,m); RECV_B(s,m) needs SEND_B(s+1,m)
//   UNSHARD, RESHARD, REDUCE_GRAD (stage-only) need nothing
// A send never waits for its receive (isend semantics, as PyTorch's runtime
// and ours execute it); a receive waits until its send has been issued.
//
// Precondition: stage and micro-batch indices are in range (the checker's
// structural pass guarantees it).
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "schedule/big_array.h"
#include "dualpipe/schedule/schedule.h"

namespace dualpipe {

enum class Need : std::uint8_t { FwdDone, GradDone, SentF, SentB };

struct WalkStall {
  int rank;
  std::size_t pos;  // index of the action the rank cannot issue
  Need need;        // what it waits for
  int stage, mb;    // ... of which (stage, micro-batch)
};

struct WalkResult {
  bool complete = true;
  std::vector<WalkStall> stalled;  // one per rank that did not finish
};

class Walker {
 public:
  explicit Walker(const Schedule& s)
      : s_(s),
        S_(s.stages),
        N_(s.micro_batches),
        state_(static_cast<std::size_t>(S_) * N_),
        next_waiter_(s.ranks, -1),
        pos_(s.ranks, 0),
        waiting_on_(s.ranks, -1) {
    waiter_.reserve(static_cast<std::size_t>(2 * s.ranks));
  }

  template <class Visit>
  WalkResult run(Visit&& visit) {
    std::vector<int> ready;
    ready.reserve(s_.ranks);
    for (int r = s_.ranks - 1; r >= 0; --r) ready.push_back(r);
    while (!ready.empty()) {
      const int r = ready.back();
      ready.pop_back();
      waiting_on_[r] = -1;
      const auto& list = s_.actions[r];
      std::size_t& p = pos_[r];
      while (p < list.size()) {
        const Action& a = list[p];
        long missing = first_missing(a);
        if (missing >= 0) {
          wait(r, missing);
          break;
        }
        visit(r, p, a);
        produce(a, ready);
        ++p;
      }
    }
    WalkResult res;
    for (int r = 0; r < s_.ranks; ++r) {
      if (pos_[r] < s_.actions[r].size()) {
        res.complete = false;
        long k = waiting_on_[r];
        long cell = k >> 2;
        res.stalled.push_back({r, pos_[r], static_cast<Need>(k & 3), static_cast<int>(cell / N_),
                               static_cast<int>(cell % N_)});
      }
    }
    return res;
  }

 private:
  // One byte per (stage, mb): bit n says Need n is done, bit 4+n that some
  // rank waits for it. Only the few keys being waited on go into waiter_.
  long key(Need n, int stage, int mb) const {
    return ((static_cast<long>(stage) * N_ + mb) << 2) | static_cast<long>(n);
  }
  static std::uint8_t done_bit(long k) { return static_cast<std::uint8_t>(1u << (k & 3)); }
  static std::uint8_t wait_bit(long k) { return static_cast<std::uint8_t>(16u << (k & 3)); }
  std::uint8_t& state(long k) { return state_[static_cast<std::size_t>(k >> 2)]; }
  bool has(Need n, int stage, int mb) const {
    long k = key(n, stage, mb);
    return (state_[static_cast<std::size_t>(k >> 2)] & done_bit(k)) != 0;
  }

  // Returns the key of the first unmet input of `a`, or -1 if it can run.
  long first_missing(const Action& a) const {
    auto need = [&](Need n, int st, int mb) -> long { return has(n, st, mb) ? -1 : key(n, st, mb); };
    auto fwd = [&](int st, int mb) -> long { return st > 0 ? need(Need::FwdDone, st - 1, mb) : -1; };
    auto bwd = [&](int st, int mb) -> long {
      long k = st + 1 < S_ ? need(Need::GradDone, st + 1, mb) : -1;
      return k >= 0 ? k : need(Need::FwdDone, st, mb);
    };
    switch (a.op) {
      case Op::F: return fwd(a.stage, a.mb);
      case Op::B:
      case Op::I: return bwd(a.stage, a.mb);
      case Op::W: return need(Need::GradDone, a.stage, a.mb);
      case Op::FB:
      case Op::FF:
        for (const Action& h : halves(a))
          if (long k = first_missing(h); k >= 0) return k;
        return -1;
      case Op::SEND_F: return need(Need::FwdDone, a.stage, a.mb);
      case Op::SEND_B: return need(Need::GradDone, a.stage, a.mb);
      case Op::RECV_F: return need(Need::SentF, a.stage - 1, a.mb);
      case Op::RECV_B: return need(Need::SentB, a.stage + 1, a.mb);
      case Op::UNSHARD:
      case Op::RESHARD:
      case Op::REDUCE_GRAD: return -1;  // stage-only: no data dependency
    }
    return -1;
  }

  void wait(int r, long k) {
    waiting_on_[r] = k;
    state(k) |= wait_bit(k);
    auto [it, fresh] = waiter_.try_emplace(k, r);
    next_waiter_[r] = fresh ? -1 : it->second;
    it->second = r;
  }

  void mark(Need n, int stage, int mb, std::vector<int>& ready) {
    long k = key(n, stage, mb);
    std::uint8_t& st = state(k);
    st |= done_bit(k);
    if (!(st & wait_bit(k))) return;
    st &= static_cast<std::uint8_t>(~wait_bit(k));
    auto it = waiter_.find(k);
    for (int w = it->second; w >= 0; w = next_waiter_[w]) ready.push_back(w);
    waiter_.erase(it);
  }

  void produce(const Action& a, std::vector<int>& ready) {
    switch (a.op) {
      case Op::F: mark(Need::FwdDone, a.stage, a.mb, ready); break;
      case Op::B:
      case Op::I: mark(Need::GradDone, a.stage, a.mb, ready); break;
      case Op::FB:
      case Op::FF:
        for (const Action& h : halves(a)) produce(h, ready);
        break;
      case Op::SEND_F: mark(Need::SentF, a.stage, a.mb, ready); break;
      case Op::SEND_B: mark(Need::SentB, a.stage, a.mb, ready); break;
      case Op::W:
      case Op::RECV_F:
      case Op::RECV_B:
      case Op::UNSHARD:
      case Op::RESHARD:
      case Op::REDUCE_GRAD: break;
    }
  }

  const Schedule& s_;
  int S_, N_;
  BigArray<std::uint8_t> state_;
  std::unordered_map<long, int> waiter_;  // key -> first rank waiting on it
  std::vector<int> next_waiter_;          // per rank: next rank waiting on the same key
  std::vector<std::size_t> pos_;
  std::vector<long> waiting_on_;
};

}  // namespace dualpipe
