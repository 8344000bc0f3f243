// libFuzzer target: the checker on schedules built from fuzz bytes.
//
// Byte 0 picks the mode. Raw mode declares ranks, stages and micro-batches
// (optionally as raw 32-bit values: negative, zero, huge) and reads an action
// list, so the checker sees every shape of nonsense, including absurd counts
// from a few bytes, which must be refused with an error rather than by
// allocating stage x micro-batch tables. Mutate mode starts from a generated
// schedule and edits it (swap, drop, duplicate, change an index, move an
// action to another rank), which reaches the deep parts of the checker
// (ordering, W/I pairing, deadlock) far more often than random lists do.
//
// Whatever check() accepts must lower to a schedule check() also accepts,
// and both must simulate to the same step time with free transfers.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "invariants.h"
#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/sim/simulate.h"

namespace {

struct Bytes {
  const std::uint8_t* p;
  std::size_t n;
  bool empty() const { return n == 0; }
  std::uint8_t u8() {
    if (!n) return 0;
    --n;
    return *p++;
  }
  std::int32_t i32() {
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v = (v << 8) | u8();
    std::int32_t out;
    std::memcpy(&out, &v, sizeof out);
    return out;
  }
};

// Small indices around the valid range, -1 included, so that range errors
// and edge stages come up often.
int small_index(Bytes& b, int limit) { return static_cast<int>(b.u8() % static_cast<unsigned>(limit + 2)) - 1; }

dualpipe::Action random_action(Bytes& b, int S, int N) {
  const auto op = static_cast<dualpipe::Op>(b.u8() % 9);
  const int lim_s = S > 0 && S < 64 ? S : 8, lim_n = N > 0 && N < 64 ? N : 8;
  dualpipe::Action a = dualpipe::Action::make(op, small_index(b, lim_s), small_index(b, lim_n));
  if (op == dualpipe::Op::FB) {
    a.stage2 = small_index(b, lim_s);
    a.mb2 = small_index(b, lim_n);
  }
  return a;
}

dualpipe::Schedule raw(Bytes& b) {
  dualpipe::Schedule s;
  s.method = "fuzz";
  const std::uint8_t flags = b.u8();
  s.ranks = flags & 1 ? b.i32() : 1 + b.u8() % 8;
  s.stages = flags & 2 ? b.i32() : 1 + b.u8() % 16;
  s.micro_batches = flags & 4 ? b.i32() : 1 + b.u8() % 16;
  // The action lists exist for min(ranks, 8) ranks, plus or minus one when
  // flag 8 says so, to exercise the declared-versus-present mismatch.
  int lists = s.ranks > 0 && s.ranks <= 8 ? s.ranks : 1 + (s.ranks & 7);
  if (flags & 8) lists += (flags & 16) ? 1 : -1;
  if (lists < 0) lists = 0;
  s.actions.resize(static_cast<std::size_t>(lists));
  while (!b.empty() && lists > 0) {
    const int r = b.u8() % lists;
    s.actions[static_cast<std::size_t>(r)].push_back(random_action(b, s.stages, s.micro_batches));
  }
  return s;
}

dualpipe::Schedule mutated(Bytes& b) {
  const auto& ms = dualpipe::methods();
  const dualpipe::Method& m = ms[b.u8() % ms.size()];
  dualpipe::Shape shape{1 + b.u8() % 6, 1 + b.u8() % 12, 1 + b.u8() % 3};
  dualpipe::Schedule s;
  try {
    s = m.generate(shape);
  } catch (const dualpipe::Error&) {
    s = dualpipe::one_f_one_b(dualpipe::Shape{2, 2, 1});
  }
  if (b.u8() & 1) {
    try {
      s = dualpipe::lower(s);
    } catch (const dualpipe::Error&) {
      __builtin_trap();  // generators produce valid schedules, which lower
    }
  }
  while (!b.empty() && !s.actions.empty()) {
    const std::uint8_t what = b.u8();
    auto& list = s.actions[b.u8() % s.actions.size()];
    if (list.empty()) {
      list.push_back(random_action(b, s.stages, s.micro_batches));
      continue;
    }
    const std::size_t i = b.u8() % list.size(), j = b.u8() % list.size();
    switch (what % 6) {
      case 0: std::swap(list[i], list[j]); break;
      case 1: list.erase(list.begin() + static_cast<std::ptrdiff_t>(i)); break;
      case 2: list.insert(list.begin() + static_cast<std::ptrdiff_t>(i), list[j]); break;
      case 3: list[i] = random_action(b, s.stages, s.micro_batches); break;
      case 4: {
        auto& other = s.actions[b.u8() % s.actions.size()];
        const dualpipe::Action a = list[i];
        list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
        other.push_back(a);
        break;
      }
      default: s.stages += (what & 8) ? 1 : -1; break;  // declared count off by one
    }
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes b{data, size};
  dualpipe::Schedule s = b.u8() & 1 ? mutated(b) : raw(b);
  const dualpipe::CheckReport rep = dualpipe::check(s);
  if (!rep.ok()) {
    for (const std::string& e : rep.errors)
      if (e.empty() || e.find('\n') != std::string::npos) __builtin_trap();
    // check_or_throw must agree with check().
    try {
      dualpipe::check_or_throw(s);
      __builtin_trap();
    } catch (const dualpipe::Error&) {
    }
    return 0;
  }
  require_valid_schedule_invariants(s);
  return 0;
}
