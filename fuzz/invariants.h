#pragma once
// What must hold for every schedule the checker accepts, shared by both
// fuzz targets: it simulates, and its lowering passes the checker and
// simulates to the same step time. A violation traps (libFuzzer: a crash).
#include <cmath>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/sim/simulate.h"

inline void require_valid_schedule_invariants(const dualpipe::Schedule& s) {
  const dualpipe::SimResult r = dualpipe::simulate(s, dualpipe::Costs{});
  if (s.has_comm()) return;
  const dualpipe::Schedule low = dualpipe::lower(s);
  if (!dualpipe::check(low).ok()) __builtin_trap();
  const dualpipe::SimResult rl = dualpipe::simulate(low, dualpipe::Costs{});
  if (std::fabs(rl.makespan - r.makespan) > 1e-9 * (1 + r.makespan)) __builtin_trap();
}
