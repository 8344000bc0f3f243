#include "dualpipe/sim/memory.h"

#include <algorithm>

namespace dualpipe {

RankMemory state_memory(const HeldParams& p, const BytesPerParam& bytes, bool zero1) {
  RankMemory m;
  const double n = p.dense + p.expert;
  m.params = n * bytes.param;
  m.grads = n * bytes.grad;
  m.optimizer = zero1 ? bytes.optimizer * (p.dense / std::max(1, p.dense_replicas) +
                                           p.expert / std::max(1, p.expert_replicas))
                      : bytes.optimizer * n;
  return m;
}

std::vector<double> peak_activation_bytes(const Schedule& s, const std::vector<double>& bytes_per_stage) {
  auto size = [&](int stage) { return bytes_per_stage.size() == 1 ? bytes_per_stage[0] : bytes_per_stage[stage]; };
  std::vector<double> peak(s.ranks, 0.0);
  for (int r = 0; r < s.ranks; ++r) {
    double live = 0;
    // An F&B pair is its forward half, then its backward half: it holds both while it runs.
    for (const Action& a : s.actions[r])
      for (const Action& h : halves(a)) {
        switch (h.op) {
          case Op::F:
            live += size(h.stage);
            peak[r] = std::max(peak[r], live);
            break;
          case Op::B:
          case Op::W: live -= size(h.stage); break;
          default: break;  // I keeps what W needs; transfers hold nothing here
        }
      }
  }
  return peak;
}

}  // namespace dualpipe
