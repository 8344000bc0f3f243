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

}  // namespace dualpipe
