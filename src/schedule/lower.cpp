#include "dualpipe/schedule/lower.h"

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
    // needs both halves' inputs before it starts and sends both outputs at its end.
    auto receive = [&](const Action& h) { h.op == Op::F ? recv_f(h.stage, h.mb) : recv_b(h.stage, h.mb); };
    auto send = [&](const Action& h) { h.op == Op::F ? send_f(h.stage, h.mb) : send_b(h.stage, h.mb); };
    for (const Action& a : s.actions[r]) {
      const bool moves_data = a.op == Op::F || is_backward(a.op) || a.op == Op::FB;
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

}  // namespace dualpipe
