#include "dualpipe/schedule/lower.h"

#include <algorithm>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/placement.h"

namespace dualpipe {

Schedule lower(const Schedule& s) {
  if (s.has_comm()) throw Error("schedule already holds communication actions; lower a compute-only schedule");
  check_or_throw(s);
  const int S = s.stages;
  // Where each (stage, mb) runs (its backward is on the same rank).
  const Placement placement = placement_of(s);
  auto at = [&](int stage, int mb) { return placement.rank(stage, mb); };

  Schedule out = s;
  for (int r = 0; r < s.ranks; ++r) {
    std::vector<Action> list;
    list.reserve(s.actions[r].size() * 2);
    auto recv_f = [&](int st, int mb) {
      if (st > 0 && at(st - 1, mb) != r) list.push_back(Action::make(Op::RECV_F, st, mb));
    };
    auto recv_b = [&](int st, int mb) {
      if (st + 1 < S && at(st + 1, mb) != r) list.push_back(Action::make(Op::RECV_B, st, mb));
    };
    auto send_f = [&](int st, int mb) {
      if (st + 1 < S && at(st + 1, mb) != r) list.push_back(Action::make(Op::SEND_F, st, mb));
    };
    auto send_b = [&](int st, int mb) {
      if (st > 0 && at(st - 1, mb) != r) list.push_back(Action::make(Op::SEND_B, st, mb));
    };
    // Inputs arrive before the action, outputs leave after it; an F&B pair
    // (F&B or F&F) needs both halves' inputs before it starts and sends both
    // outputs at its end.
    auto receive = [&](const Action& h) { h.op == Op::F ? recv_f(h.stage, h.mb) : recv_b(h.stage, h.mb); };
    auto send = [&](const Action& h) { h.op == Op::F ? send_f(h.stage, h.mb) : send_b(h.stage, h.mb); };
    for (const Action& a : s.actions[r]) {
      const bool moves_data = a.op == Op::F || is_backward(a.op) || is_pair(a.op);
      if (moves_data)
        for (const Action& h : halves(a)) receive(h);
      list.push_back(a);
      if (moves_data)
        for (const Action& h : halves(a)) send(h);
    }
    out.actions[r] = std::move(list);
  }
  return out;
}

namespace {

// Whether forward `f` on rank r has its input there from the start: the
// model's input (stage 0), or the output of a stage run on r itself.
bool input_local(const Placement& pl, int r, const Action& f) {
  return f.stage == 0 || pl.rank(f.stage - 1, f.mb) == r;
}

// The positions (first of two) of the forward pairs pair_forwards() forms on
// rank r's action list. A forward's input made on r comes from an earlier
// forward there (the schedule is valid), never the pair's first half (one
// micro-batch's two forwards do not pair).
std::vector<std::size_t> forward_pair_starts(const Placement& pl, int r, const std::vector<Action>& list) {
  std::vector<std::size_t> starts;
  std::size_t i = 0;
  while (i < list.size()) {
    if (list[i].op != Op::F) {
      ++i;
      continue;
    }
    std::size_t end = i;  // the run of lone forwards [i, end)
    while (end < list.size() && list[end].op == Op::F) ++end;
    for (std::size_t k = end; k >= i + 2;) {
      if (list[k - 2].mb != list[k - 1].mb && input_local(pl, r, list[k - 1])) {
        starts.push_back(k - 2);
        k -= 2;
      } else {
        k -= 1;
      }
    }
    i = end;
  }
  std::sort(starts.begin(), starts.end());
  return starts;
}

// `s` with rank r's forwards at `starts` (and the ones after them) paired.
void apply_pairs(Schedule& s, int r, const std::vector<std::size_t>& starts) {
  const auto& in = s.actions[r];
  std::vector<Action> out;
  out.reserve(in.size());
  std::size_t next = 0;
  for (std::size_t p = 0; p < in.size(); ++p) {
    if (next < starts.size() && starts[next] == p) {
      out.push_back(Action::forward_pair(in[p].stage, in[p].mb, in[p + 1].stage, in[p + 1].mb));
      ++p;
      ++next;
      continue;
    }
    out.push_back(in[p]);
  }
  s.actions[r] = std::move(out);
}

}  // namespace

Schedule pair_forwards(const Schedule& s) {
  if (s.has_comm()) throw Error("pair the forwards of a compute-only schedule, then lower it");
  check_or_throw(s);
  std::vector<std::vector<std::size_t>> starts(s.ranks);
  const Placement pl = placement_of(s);
  for (int r = 0; r < s.ranks; ++r) starts[r] = forward_pair_starts(pl, r, s.actions[r]);
  Schedule out = s;
  for (int r = 0; r < s.ranks; ++r) apply_pairs(out, r, starts[r]);
  // A pair needs what its first forward needed and an input already made on
  // the rank, so it cannot stall; checked all the same.
  check_or_throw(out);
  return out;
}

}  // namespace dualpipe
