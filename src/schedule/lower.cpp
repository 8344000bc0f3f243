#include "schedule/lower.h"

#include "schedule/check.h"
#include "schedule/error.h"

namespace dp {

Schedule lower(const Schedule& s) {
  if (s.has_comm()) throw Error("schedule already holds communication actions; lower a compute-only schedule");
  check_or_throw(s);
  const int S = s.stages, N = s.micro_batches;
  // Where each (stage, mb) runs: its forward's rank (its backward is on the same one).
  std::vector<int> rank_of(static_cast<std::size_t>(S) * N, -1);
  for (int r = 0; r < s.ranks; ++r)
    for (const Action& a : s.actions[r])
      if (a.op == Op::F || a.op == Op::FB) rank_of[static_cast<std::size_t>(a.stage) * N + a.mb] = r;
  auto at = [&](int stage, int mb) { return rank_of[static_cast<std::size_t>(stage) * N + mb]; };

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
    for (const Action& a : s.actions[r]) {
      switch (a.op) {
        case Op::F:
          recv_f(a.stage, a.mb);
          list.push_back(a);
          send_f(a.stage, a.mb);
          break;
        case Op::B:
        case Op::I:
          recv_b(a.stage, a.mb);
          list.push_back(a);
          send_b(a.stage, a.mb);
          break;
        case Op::FB:
          // Both inputs must be there before the pair starts; both outputs leave at its end.
          recv_f(a.stage, a.mb);
          recv_b(a.stage2, a.mb2);
          list.push_back(a);
          send_f(a.stage, a.mb);
          send_b(a.stage2, a.mb2);
          break;
        default: list.push_back(a); break;
      }
    }
    out.actions[r] = std::move(list);
  }
  return out;
}

}  // namespace dp
