#pragma once
// Lowering: make every cross-rank transfer explicit, as PyTorch does before
// executing a schedule. Each receive is placed right before the first action
// that uses it and each send right after the action that produced it; none
// between two stages that live on the same rank. (The runtime posts its
// receives ahead of their position so that transfers overlap compute; the
// order here is the order in which data is needed.)
#include "dualpipe/schedule/schedule.h"

namespace dualpipe {

// Expects a valid compute-only schedule (throws dualpipe::Error otherwise).
Schedule lower(const Schedule& s);

// Forward pairs: on each rank, two forwards outside pairs that follow each
// other (no other compute action between them) become one F&F pair (Op::FF),
// whose two forwards take turns as an F&B pair's halves do, so that each
// hides the other's all-to-alls. In a run of such forwards the last two pair
// up, then the two before them, and so on (a run's first forward, which may
// be waiting for nothing but its own input, stays alone when the run is
// odd). Two forwards of one micro-batch never pair (the second needs the
// first's output), nor any two whose pairing would stall the schedule (the
// second's input depending on the first's output through other ranks).
// Expects a valid compute-only schedule; returns a valid one.
Schedule pair_forwards(const Schedule& s);

}  // namespace dualpipe
