// The two classic one-chunk schedules: GPipe and 1F1B (PipeDream-Flush).
// Rank r holds stage r; micro-batches flow 0 -> P-1.
#include <fmt/format.h>

#include <algorithm>

#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"

namespace dualpipe {

// Shared shape checks for schedules with P ranks and P stages.
void require_basic_shape(const char* method, const Shape& shape) {
  if (shape.ranks < 1) throw Error(fmt::format("{} needs at least 1 rank (got {})", method, shape.ranks));
  if (shape.micro_batches < 1)
    throw Error(fmt::format("{} needs at least 1 micro-batch (got {})", method, shape.micro_batches));
}

namespace {

Schedule one_chunk(const char* method, const Shape& shape) {
  require_basic_shape(method, shape);
  Schedule s;
  s.method = method;
  s.ranks = s.stages = shape.ranks;
  s.micro_batches = shape.micro_batches;
  s.actions.resize(shape.ranks);
  return s;
}

}  // namespace

Schedule gpipe(const Shape& shape) {
  Schedule s = one_chunk("gpipe", shape);
  for (int r = 0; r < s.ranks; ++r) {
    for (int m = 0; m < s.micro_batches; ++m) s.actions[r].push_back(Action::make(Op::F, r, m));
    for (int m = 0; m < s.micro_batches; ++m) s.actions[r].push_back(Action::make(Op::B, r, m));
  }
  return s;
}

Schedule one_f_one_b(const Shape& shape) {
  Schedule s = one_chunk("1f1b", shape);
  const int P = s.ranks, N = s.micro_batches;
  for (int r = 0; r < P; ++r) {
    auto& out = s.actions[r];
    // Rank r fills the pipe with P-1-r forwards, then alternates, then drains.
    const int warmup = std::min(P - 1 - r, N);
    int f = 0, b = 0;
    for (; f < warmup; ++f) out.push_back(Action::make(Op::F, r, f));
    while (f < N) {
      out.push_back(Action::make(Op::F, r, f++));
      out.push_back(Action::make(Op::B, r, b++));
    }
    while (b < N) out.push_back(Action::make(Op::B, r, b++));
  }
  return s;
}

}  // namespace dualpipe
