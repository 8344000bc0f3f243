#pragma once
// The checker: is a schedule (generated, or read from a file) a complete,
// consistent and deadlock-free training step?
#include <string>
#include <vector>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe {

struct CheckReport {
  std::vector<std::string> errors;  // each names rank, position and action where it can
  bool ok() const { return errors.empty(); }
};

// Checks, in order:
//  - shape and index ranges;
//  - every (stage, micro-batch) has exactly one forward and one backward (B
//    or I) on the same rank, the backward after the forward; every I has
//    exactly one W after it on that rank, and a B has none;
//  - stage-only actions (UNSHARD, RESHARD, REDUCE_GRAD) name a stage their
//    rank runs; REDUCE_GRAD at most once per stage and rank, after the
//    stage's last backward and W there;
//  - if the schedule has communication actions: every cross-rank transfer has
//    exactly one send after its producer and one receive before its consumer,
//    and there are no transfers between stages on one rank;
//  - the dependency walk finishes: no rank waits forever.
// Stops collecting after `max_errors`.
CheckReport check(const Schedule& s, std::size_t max_errors = 20);

// Throws dualpipe::Error with the first problem (and how many more there are).
void check_or_throw(const Schedule& s);

}  // namespace dualpipe
