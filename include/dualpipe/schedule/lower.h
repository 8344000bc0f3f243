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
// hides the other's all-to-alls. Only where the second forward's input is
// on the rank from the start (the model's input at stage 0, or the output
// of a stage the rank ran before), so that the pair starts when its first
// forward would have and cannot stall the schedule; never two forwards of
// one micro-batch. Runs of forwards pair from their end (at DualPipe P=2 a
// rank's first forward stays alone). What the pair still costs: its first
// forward ends later, interleaved with the second, and so does its output.
// Expects a valid compute-only schedule; returns a valid one.
Schedule pair_forwards(const Schedule& s);

}  // namespace dualpipe
