// DualPipe and DualPipeV, stated as the eight steps of docs/design.md.
//
// Both share one per-rank recipe. A rank runs two "phases": phase 0 is the
// chunk that the pipeline enters at this rank's nearer end, phase 1 the
// other. Each phase carries `n` micro-batches through one stage. The recipe
// is parametrised by h (distance from the nearer end) and H (half the
// DualPipe rank count; P for DualPipeV), which is all that differs between
// the two methods besides the stage and micro-batch numbering.
//
// For n < 2H the eight steps are not defined (their counts go negative), so
// we run them for n = 2H and drop the actions of the missing micro-batches:
// a subsequence of a deadlock-free schedule keeps every dependency it had, so
// it stays valid, and the bubble grows where the dropped work was.
#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <utility>
#include <vector>

#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"

namespace dualpipe {
namespace {

struct PhaseInfo {
  int stage;      // global stage index of this phase's chunk on this rank
  int mb_offset;  // global index of this phase's first micro-batch
};

// Emits one rank's actions in the order the recipe calls for them, counting
// micro-batches per phase; phantom micro-batches (index >= n) are counted but
// not emitted.
struct RankEmitter {
  RankEmitter(PhaseInfo ph0, PhaseInfo ph1, int micro_batches) : ph{ph0, ph1}, n(micro_batches) {}

  PhaseInfo ph[2];
  int n;
  int fwd[2] = {0, 0};
  int bwd[2] = {0, 0};
  struct Pending {
    int phase, idx;
  };
  std::deque<Pending> pending_w;  // I's awaiting their W, oldest first
  std::vector<Action> out;

  bool real(int idx) const { return idx < n; }
  void F(int p) {
    int i = fwd[p]++;
    if (real(i)) out.push_back(Action::make(Op::F, ph[p].stage, ph[p].mb_offset + i));
  }
  // A full backward B, or an I whose W comes later.
  void backward(int p, bool full) {
    int i = bwd[p]++;
    if (!full) pending_w.push_back({p, i});
    if (real(i)) out.push_back(Action::make(full ? Op::B : Op::I, ph[p].stage, ph[p].mb_offset + i));
  }
  void W() {
    Pending w = pending_w.front();
    pending_w.pop_front();
    if (real(w.idx)) out.push_back(Action::make(Op::W, ph[w.phase].stage, ph[w.phase].mb_offset + w.idx));
  }
  // A forward of phase pf overlapped with a backward of phase pb.
  void FB(int pf, int pb) {
    int fi = fwd[pf]++;
    int bi = bwd[pb]++;
    bool f_real = real(fi), b_real = real(bi);
    if (f_real && b_real)
      out.push_back(Action::pair(ph[pf].stage, ph[pf].mb_offset + fi, ph[pb].stage, ph[pb].mb_offset + bi));
    else if (f_real)
      out.push_back(Action::make(Op::F, ph[pf].stage, ph[pf].mb_offset + fi));
    else if (b_real)
      out.push_back(Action::make(Op::B, ph[pb].stage, ph[pb].mb_offset + bi));
  }
};

std::vector<Action> dual_rank(int h, int H, int n, PhaseInfo ph0, PhaseInfo ph1) {
  const int n_run = std::max(n, 2 * H);  // run with phantoms when n is small
  RankEmitter e(ph0, ph1, n);
  e.out.reserve(static_cast<size_t>(3 * 2 * n));
  const int outer = H - h - 1;  // ranks nearer the middle do fewer of the edge steps
  // 1. Fill this rank's own direction.
  for (int i = 0; i < 2 * outer; ++i) e.F(0);
  // 2. Forwards of both phases, alternating.
  for (int i = 0; i < h + 1; ++i) {
    e.F(0);
    e.F(1);
  }
  // 3. The first backwards of phase 1 arrive; split them to fill gaps early.
  for (int i = 0; i < outer; ++i) {
    e.backward(1, false);
    e.W();
    e.F(1);
  }
  // 4. Steady state: every forward overlapped with a backward of the other phase.
  const int steady = n_run - 2 * H + h + 1;
  for (int i = 0; i < steady; ++i) {
    if (i == 0 && h == H - 1) {
      // The middle ranks have no backward ready to hide their first forward behind.
      e.F(0);
      e.backward(1, true);
    } else {
      e.FB(0, 1);
    }
    e.FB(1, 0);
  }
  // 5. Phase 0 has no forwards left.
  for (int i = 0; i < outer; ++i) {
    e.backward(1, true);
    e.FB(1, 0);
  }
  // 6. Drain backwards; the last half defer their weight gradients into the bubble.
  for (int i = 0; i < 2 * (h + 1); ++i) e.backward(i % 2 == 0 ? 1 : 0, i < h + 1);
  // 7. Weight gradients interleaved with the last input gradients of phase 0.
  for (int i = 0; i < outer; ++i) {
    e.W();
    e.backward(0, false);
  }
  // 8. The remaining weight gradients.
  for (int i = 0; i < h + 1; ++i) e.W();
  return std::move(e.out);
}

}  // namespace

Schedule dualpipe(const Shape& shape) {
  const int P = shape.ranks, N = shape.micro_batches;
  if (P < 2 || P % 2 != 0)
    throw Error(fmt::format("dualpipe needs an even number of ranks, at least 2 (got {})", P));
  if (N < 2 || N % 2 != 0)
    throw Error(fmt::format("dualpipe needs an even number of micro-batches, at least 2 (got {}); "
                            "N >= 2P = {} avoids the extra bubble of short runs",
                            N, 2 * P));
  Schedule s;
  s.method = "dualpipe";
  s.ranks = P;
  s.stages = P;
  s.micro_batches = N;
  const int H = P / 2, half = N / 2;
  for (int r = 0; r < P; ++r) {
    const int h = std::min(r, P - 1 - r);
    // Direction 0 (micro-batches 0..N/2-1) enters at rank 0, direction 1 at rank P-1.
    const bool first_half = r < H;
    PhaseInfo near{h, first_half ? 0 : half};
    PhaseInfo far{P - 1 - h, first_half ? half : 0};
    s.actions.push_back(dual_rank(h, H, half, near, far));
  }
  return s;
}

Schedule dualpipev(const Shape& shape) {
  const int P = shape.ranks, N = shape.micro_batches;
  if (P < 1) throw Error(fmt::format("dualpipev needs at least 1 rank (got {})", P));
  if (N < 1) throw Error(fmt::format("dualpipev needs at least 1 micro-batch (got {}); N >= 2P = {} avoids the extra "
                                     "bubble of short runs",
                                     N, 2 * P));
  Schedule s;
  s.method = "dualpipev";
  s.ranks = P;
  s.stages = 2 * P;
  s.micro_batches = N;
  for (int r = 0; r < P; ++r) s.actions.push_back(dual_rank(r, P, N, {r, 0}, {2 * P - 1 - r, 0}));
  return s;
}

}  // namespace dualpipe
