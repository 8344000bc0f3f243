#pragma once
// What must hold for every schedule the checker accepts, shared by both
// fuzz targets: it simulates, and its lowering passes the checker and
// simulates to the same step time. A violation traps (libFuzzer: a crash).
#include <cmath>

#include "schedule/check.h"
#include "schedule/lower.h"
#include "sim/simulate.h"

inline void require_valid_schedule_invariants(const dp::Schedule& s) {
  const dp::SimResult r = dp::simulate(s, dp::Costs{});
  if (s.has_comm()) return;
  const dp::Schedule low = dp::lower(s);
  if (!dp::check(low).ok()) __builtin_trap();
  const dp::SimResult rl = dp::simulate(low, dp::Costs{});
  if (std::fabs(rl.makespan - r.makespan) > 1e-9 * (1 + r.makespan)) __builtin_trap();
}
