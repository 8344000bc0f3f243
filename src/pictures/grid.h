#pragma once
// Compact terminal grid of a schedule: one row per rank, time running left
// to right, one short cell per action placed at its simulated time.
#include <string>

#include "schedule/schedule.h"
#include "sim/simulate.h"

namespace dp {

// `color` adds ANSI colours (for terminals); without it the grid is plain text.
std::string terminal_grid(const Schedule& s, const SimResult& sim, bool color);

}  // namespace dp
