// Zero-bubble schedules of Qi et al., "Zero Bubble Pipeline Parallelism"
// (ICLR 2024): the backward is split into I (input gradients, on the critical
// path between stages) and W (weight gradients, needed by nobody downstream),
// and W's are moved into what would otherwise be bubbles.
//
// ZB-H1 ("zb1p"): P ranks, stage r on rank r, any N >= 1. Rank r runs 1F1B
// with I in place of B: min(P-1-r, N) warm-up forwards, then F and I
// alternating, then the remaining I's. After each I it issues the W of the
// oldest pending I, except that rank r keeps r W's pending: those are issued
// at the very end, where 1F1B's rank r sits idle waiting for the last
// gradients. Peak activations equal 1F1B's (P on rank 0). The bubble is the
// published (P-1)(F+B-2W) (the paper's (p-1)(T_F+T_B-T_W), its T_B being our
// I) when W <= F and W <= I, which covers the paper's F = I = W; otherwise it
// is (P-1) max(F+I-W, F, I): rank P-1 cannot start before (P-1)F, and rank 0,
// holding at most P activations, waits (P-1)I for its first gradient.
//
// ZB-V ("zbv"): P ranks, 2P stages, rank r holds stages r (chunk 0, going
// down) and 2P-1-r (chunk 1, coming back up), as DualPipeV. Any N >= 1. Rank r:
//   1. 2(P-r)-1 forwards of chunk 0;
//   2. r times: F chunk 1, F chunk 0;
//   3. P-r times: F, I, W of chunk 1;
//   4. n-P times: F (while any are left), I, W of chunk 0, then F, I, W of
//      chunk 1;
//   5. r times: I chunk 0, I chunk 1 (their W's wait);
//   6. P-r times: I chunk 0, W of the oldest pending chunk 0;
//   7. the pending W's of chunk 1, then those of chunk 0.
// Here n = max(N, 2P-1): the counts above need 2P-1 micro-batches to fill the
// V, so for smaller N we build the schedule for 2P-1 and drop the actions of
// the missing micro-batches (a subsequence of a deadlock-free schedule keeps
// all of its dependencies). Once N >= 2P every rank peaks at 2P chunk
// activations, the same memory as 1F1B on P ranks (a chunk is half a 1F1B
// stage). With
// F = I = W (the paper's "zero bubble" setting) and N >= 2P-1 the bubble is
// (P-1)F: only the unavoidable wait of rank P-1 for the first forward.
#include <algorithm>
#include <vector>

#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"

namespace dualpipe {

Schedule zb1p(const Shape& shape) {
  require_basic_shape("zb1p", shape);
  const int P = shape.ranks, N = shape.micro_batches;
  Schedule s;
  s.method = "zb1p";
  s.ranks = s.stages = P;
  s.micro_batches = N;
  s.actions.resize(P);
  for (int r = 0; r < P; ++r) {
    auto& out = s.actions[r];
    out.reserve(3 * static_cast<std::size_t>(N));
    int f = 0, b = 0, w = 0;
    auto F = [&]() { out.push_back(Action::make(Op::F, r, f++)); };
    // Weight gradients run in the order of their I's; r of them stay pending.
    auto I = [&]() {
      out.push_back(Action::make(Op::I, r, b++));
      if (b - w > r) out.push_back(Action::make(Op::W, r, w++));
    };
    const int warmup = std::min(P - 1 - r, N);
    while (f < warmup) F();
    while (f < N) {
      F();
      I();
    }
    while (b < N) I();
    while (w < N) out.push_back(Action::make(Op::W, r, w++));
  }
  return s;
}

Schedule zbv(const Shape& shape) {
  require_basic_shape("zbv", shape);
  const int P = shape.ranks, N = shape.micro_batches;
  Schedule s;
  s.method = "zbv";
  s.ranks = P;
  s.stages = 2 * P;
  s.micro_batches = N;
  s.actions.resize(P);
  const int n = std::max(N, 2 * P - 1);  // run with phantoms when N is small
  for (int r = 0; r < P; ++r) {
    auto& out = s.actions[r];
    out.reserve(6 * static_cast<std::size_t>(N));
    const int stage[2] = {r, 2 * P - 1 - r};
    int f[2] = {0, 0}, b[2] = {0, 0}, w[2] = {0, 0};
    // Each helper advances its counter even for a phantom micro-batch (index
    // >= N) and only emits real ones. W's of one chunk follow its I's in order.
    auto emit = [&](Op op, int c, int& counter) {
      const int mb = counter++;
      if (mb < N) out.push_back(Action::make(op, stage[c], mb));
    };
    auto F = [&](int c) { emit(Op::F, c, f[c]); };
    auto I = [&](int c) { emit(Op::I, c, b[c]); };
    auto W = [&](int c) { emit(Op::W, c, w[c]); };

    for (int i = 0; i < 2 * (P - r) - 1; ++i) F(0);  // 1. fill the way down
    for (int i = 0; i < r; ++i) {                    // 2. the way back starts
      F(1);
      F(0);
    }
    for (int i = 0; i < P - r; ++i) {  // 3. first gradients of chunk 1
      F(1);
      I(1);
      W(1);
    }
    for (int i = 0; i < n - P; ++i) {  // 4. steady state
      if (f[0] < n) F(0);
      I(0);
      W(0);
      F(1);
      I(1);
      W(1);
    }
    for (int i = 0; i < r; ++i) {  // 5. drain; defer W's into the tail
      I(0);
      I(1);
    }
    for (int i = 0; i < P - r; ++i) {  // 6.
      I(0);
      W(0);
    }
    while (w[1] < b[1]) W(1);  // 7.
    while (w[0] < b[0]) W(0);
  }
  return s;
}

}  // namespace dualpipe
