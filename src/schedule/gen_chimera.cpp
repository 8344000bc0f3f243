// Chimera (Li & Hoefler, SC'21): two pipelines in opposite directions over
// the same P ranks. The "down" pipeline puts stage s on rank s, the "up"
// pipeline puts stage s on rank P-1-s (so every rank holds two stage
// replicas, as in DualPipe).
//
// Micro-batches follow DualPipe's convention: the first N/2 go down, the last
// N/2 go up. A basic unit is P micro-batches, K = P/2 per direction; unit u
// carries down micro-batches uK..uK+K-1 and up micro-batches N/2+uK..N/2+uK+K-1.
//
// The order comes from a slot picture in which F and B take one slot each
// (the paper counts bubbles this way). Within a unit, micro-batch j of each
// pipeline enters at slot 2j (every other slot) and its backward starts
// right after its last forward:
//   forward  of stage s, micro-batch j: slot s + 2j
//   backward of stage s, micro-batch j: slot 2P-1-s + 2j
// On rank w the down pipeline then uses slots w, w+2, ..., w+2P-2 and the up
// pipeline P-1-w, P+1-w, ..., 3P-3-w; P is even, so the two sets have
// opposite parity and never collide. Unit u is the same picture shifted by
// 2P slots, which lands every unit in free slots of the one before: each rank
// is busy in 2N of 2N+P-2 slots, idle P-2 = 2(P/2-1). Each rank issues its
// actions in slot order, which respects every dependency (each action's
// inputs sit in earlier slots). With F = B this gives the published bubble
// (P/2-1)(F+B) for every N. With F != B the same order runs with a bubble
// of (P/2-1)(F+B) + (2N/P-1)(P/2-1)|B-F| (measured; the tests check it): the
// first unit loses (P/2-1)|B-F| to slots of unequal length, each further
// unit 2(P/2-1)|B-F| (the paper's "intermediate bubbles" of direct
// concatenation; its remedies, forward doubling and backward halving, change
// the work of a micro-batch and are not done here).
//
// Peak activations: rank 0 holds K down activations plus the up one in
// flight, P/2+1; the middle ranks up to P.
//
// Supported shapes: P even, P >= 2; N a positive multiple of P.
#include <fmt/format.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"

namespace dualpipe {

Schedule chimera(const Shape& shape) {
  require_basic_shape("chimera", shape);
  const int P = shape.ranks, N = shape.micro_batches;
  if (P < 2 || P % 2 != 0)
    throw Error(fmt::format("chimera needs an even number of ranks, at least 2 (got {})", P));
  if (N % P != 0)
    throw Error(fmt::format("chimera needs a number of micro-batches that is a multiple of the ranks P = {} (got {})",
                            P, N));
  Schedule s;
  s.method = "chimera";
  s.ranks = P;
  s.stages = P;
  s.micro_batches = N;
  s.actions.resize(P);
  const int K = P / 2, units = N / P;
  for (int w = 0; w < P; ++w) {
    const int down = w, up = P - 1 - w;  // the stage each pipeline runs here
    std::vector<std::pair<long, Action>> timed;
    timed.reserve(2 * static_cast<std::size_t>(N));
    for (int u = 0; u < units; ++u) {
      const long base = 2L * P * u;
      for (int j = 0; j < K; ++j) {
        const int mb_down = u * K + j, mb_up = N / 2 + u * K + j;
        timed.emplace_back(base + down + 2 * j, Action::make(Op::F, down, mb_down));
        timed.emplace_back(base + 2 * P - 1 - down + 2 * j, Action::make(Op::B, down, mb_down));
        timed.emplace_back(base + up + 2 * j, Action::make(Op::F, up, mb_up));
        timed.emplace_back(base + 2 * P - 1 - up + 2 * j, Action::make(Op::B, up, mb_up));
      }
    }
    // Slots are distinct on a rank (see above), so this order is unique.
    std::sort(timed.begin(), timed.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& t : timed) s.actions[w].push_back(t.second);
  }
  return s;
}

}  // namespace dualpipe
