#pragma once
// A pipeline schedule as plain data: for every rank, the ordered list of
// actions it issues. Where a stage lives is not stored separately: it is
// wherever the forward of a (stage, micro-batch) is issued, which lets one
// stage live on two ranks (DualPipe's replicas, Chimera's two pipelines).
#include <cstddef>
#include <string>
#include <vector>

#include "dualpipe/schedule/action.h"

namespace dualpipe {

// Plain data; copyable and movable. Thread-safety: const use from several
// threads at once is safe (the runtime's ranks share one schedule).
struct Schedule {
  std::string method;  // generator name, or "file" for schedules read from CSV
  int ranks = 0;
  int stages = 0;         // S: global stage count
  int micro_batches = 0;  // N
  std::vector<std::vector<Action>> actions;  // [rank] -> issue order

  std::size_t action_count() const {
    std::size_t n = 0;
    for (const auto& r : actions) n += r.size();
    return n;
  }
  bool has_comm() const {
    for (const auto& r : actions)
      for (const Action& a : r)
        if (is_comm(a.op)) return true;
    return false;
  }
};

// The same schedule with communication actions removed.
Schedule compute_only(const Schedule& s);

// Whether list[pos] (one rank's actions) is an I whose W is the list's next
// compute action: nothing in between writes that stage's weights, so the I
// may run its W's work early (the runtime's and the simulator's
// weight gradients in all-to-all waits).
bool w_comes_next(const std::vector<Action>& list, std::size_t pos);

}  // namespace dualpipe
