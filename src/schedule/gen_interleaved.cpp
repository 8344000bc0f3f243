// Interleaved 1F1B (Megatron-LM; Narayanan et al., SC'21).
//
// P ranks, V = shape.chunks model chunks per rank, S = V*P stages. Chunk k of
// rank r is stage k*P + r, so a micro-batch visits every rank V times.
//
// Every rank walks one list of "virtual" forwards: micro-batches in groups
// of G (G = P in Megatron), each group through chunk 0, then chunk 1, ...,
// chunk V-1, then the next group. Backwards walk the same list with the
// chunks reversed (the gradient of the last chunk comes back first). Rank r
// issues
//   warm-up:   2(P-1-r) + (V-1)G forwards (all N*V of them if fewer),
//   steady:    one forward, then one backward, until the forwards run out,
//   cool-down: the remaining backwards.
// The warm-up is what rank r can compute before its first backward arrives:
// (V-1)G forwards take it to the last chunk of the first group, and 2(P-1-r)
// more cover the trip to rank P-1 and back. With G = P rank 0 holds up to
// VP+P-1 chunk activations, i.e. P + (P-1)/V full-stage ones.
//
// Supported shapes: P >= 1, V >= 1, any N >= 1.
//  - P divides N: groups of P, exactly Megatron's order (Megatron requires
//    N % P == 0).
//  - N > P otherwise: the N/P (rounded down) groups share N as evenly as
//    possible, larger first, so every group has at least P micro-batches.
//    (A short last group deadlocks: rank 0's warm-up reaches into it and
//    waits for a forward that rank P-1 issues only after a backward that
//    needs rank 0.) The bubble stays (P-1)(F+B)/V (the tests check it);
//    rank 0 holds (V-1)(G-P) more chunk activations.
//  - N < P: one group of N; valid, with a larger bubble (too few
//    micro-batches to fill the pipeline, as for 1F1B).
//
// Combined 1F1B (Megatron-LM's answer to DualPipe for MoE models): the same
// lists with one more warm-up forward per rank, and every steady-state
// forward merged with the backward after it into one F&B pair, whose halves
// the runtime overlaps (the all-to-alls of one hide behind the compute of
// the other). The extra forward keeps the two halves of every pair
// independent; it costs one more chunk activation per rank.
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"

namespace dualpipe {
namespace {

struct Slot {
  int chunk, mb;
};

// The forward order shared by every rank: micro-batches in groups, each
// group through all chunks before the next group starts (group sizes: see
// the top of the file). Sets first_group to the size of group 0.
std::vector<Slot> forward_order(int P, int V, int N, int& first_group) {
  const int groups = std::max(1, N / P);
  std::vector<Slot> order;
  order.reserve(static_cast<std::size_t>(N) * V);
  int first = 0;
  for (int g = 0; g < groups; ++g) {
    const int size = N / groups + (g < N % groups ? 1 : 0);
    if (g == 0) first_group = size;
    for (int k = 0; k < V; ++k)
      for (int m = first; m < first + size; ++m) order.push_back({k, m});
    first += size;
  }
  return order;
}

}  // namespace

namespace {

// Interleaved 1F1B's lists; `combined`: one more warm-up forward and each
// steady-state forward paired with the backward after it (F&B).
Schedule interleaved(const Shape& shape, bool combined) {
  const char* name = combined ? "combined-1f1b" : "interleaved-1f1b";
  require_basic_shape(name, shape);
  const int P = shape.ranks, N = shape.micro_batches, V = shape.chunks;
  if (V < 1) throw Error(fmt::format("{} needs at least 1 chunk per rank (got {})", name, V));
  Schedule s;
  s.method = name;
  s.ranks = P;
  s.stages = V * P;
  s.micro_batches = N;
  s.actions.resize(P);

  int G = 0;  // size of the first group
  const std::vector<Slot> order = forward_order(P, V, N, G);
  const int total = static_cast<int>(order.size());
  for (int r = 0; r < P; ++r) {
    auto F = [&](int i) { return Action::make(Op::F, order[i].chunk * P + r, order[i].mb); };
    // Backwards take the chunks in reverse: same micro-batch, mirrored chunk.
    auto B = [&](int i) { return Action::make(Op::B, (V - 1 - order[i].chunk) * P + r, order[i].mb); };
    auto& out = s.actions[r];
    out.reserve(2 * order.size());
    // Combined: the extra forward makes each pair's halves independent (on
    // the last rank the backward after a forward is otherwise that very
    // micro-batch's).
    const int warmup = std::min(2 * (P - 1 - r) + (V - 1) * G + (combined ? 1 : 0), total);
    int f = 0, b = 0;
    while (f < warmup) out.push_back(F(f++));
    while (f < total) {
      if (combined) {
        const Action fa = F(f++), ba = B(b++);
        out.push_back(Action::pair(fa.stage, fa.mb, ba.stage, ba.mb));
      } else {
        out.push_back(F(f++));
        out.push_back(B(b++));
      }
    }
    while (b < total) out.push_back(B(b++));
  }
  return s;
}

}  // namespace

Schedule interleaved_1f1b(const Shape& shape) { return interleaved(shape, false); }

Schedule combined_1f1b(const Shape& shape) {
  Schedule s = interleaved(shape, true);
  // A pair needs both halves' inputs before it starts; where the lists ask
  // for one that cannot come (too few micro-batches to leave a forward and
  // a backward independent), say so here rather than deadlock at run time.
  const CheckReport c = check(s, 1);
  if (!c.ok())
    throw Error(fmt::format("combined-1f1b cannot pair forwards and backwards at P={}, N={}, V={} ({}); use more "
                            "micro-batches or interleaved-1f1b",
                            shape.ranks, shape.micro_batches, shape.chunks, c.errors.front()));
  return s;
}

}  // namespace dualpipe
