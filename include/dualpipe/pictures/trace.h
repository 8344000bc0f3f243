#pragma once
// Chrome trace-event JSON (opens in Perfetto and chrome://tracing): one
// track per rank, one complete event per action.
#include <string>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe {

// `us_per_unit` converts simulator time units to trace microseconds.
std::string chrome_trace(const Schedule& s, const SimResult& sim, double us_per_unit = 1000.0);

}  // namespace dualpipe
