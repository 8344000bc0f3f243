#pragma once
// Where a schedule puts its work: the rank of every (stage, micro-batch) and
// the ranks that hold each stage. A schedule does not store it; it is where
// each forward is issued (the backward and W run on the same rank). This is
// the one place that derives it: lowering, the simulator, data parallelism,
// the pictures and the planner all take it from here.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe {

// Plain data; copyable. Thread-safety: const methods safe from several threads.
struct Placement {
  int stages = 0, micro_batches = 0;
  // [stage * micro_batches + mb]: the rank that runs it; -1 where the
  // schedule has no forward for it (only in a schedule that is not valid).
  std::vector<int> rank_of_cell;
  // [stage]: the ranks that hold the stage, ascending. One for most methods;
  // two for DualPipe and Chimera, which keep a replica of a stage on each of
  // two ranks.
  std::vector<std::vector<int>> replicas;
  // [rank]: the stages it holds, ascending.
  std::vector<std::vector<int>> stages_of;

  int rank(int stage, int mb) const {
    return rank_of_cell[static_cast<std::size_t>(stage) * static_cast<std::size_t>(micro_batches) +
                        static_cast<std::size_t>(mb)];
  }
  // Ranks of one pipeline that hold `stage`: with D data-parallel copies of
  // the pipeline, the stage's weights have D x holders(stage) copies.
  int holders(int stage) const { return static_cast<int>(replicas[static_cast<std::size_t>(stage)].size()); }
  // Micro-batches of `stage` that `rank` runs.
  int micro_batches_on(int stage, int r) const;
};

inline int Placement::micro_batches_on(int stage, int r) const {
  int n = 0;
  for (int mb = 0; mb < micro_batches; ++mb) n += rank(stage, mb) == r;
  return n;
}

// The placement of `s`, from its forwards (F, and the forward halves of
// pairs). Meant for checked schedules; indices out of range are skipped.
// Header-only: O(actions + stages x micro-batches), one pass.
inline Placement placement_of(const Schedule& s) {
  Placement p;
  p.stages = std::max(s.stages, 0);
  p.micro_batches = std::max(s.micro_batches, 0);
  const int ranks = static_cast<int>(s.actions.size());
  p.rank_of_cell.assign(static_cast<std::size_t>(p.stages) * static_cast<std::size_t>(p.micro_batches), -1);
  p.replicas.assign(static_cast<std::size_t>(p.stages), {});
  p.stages_of.assign(static_cast<std::size_t>(ranks), {});
  for (int r = 0; r < ranks; ++r)
    for (const Action& a : s.actions[static_cast<std::size_t>(r)]) {
      for (const Action& f : halves(a)) {
        if (f.op != Op::F || f.stage < 0 || f.stage >= p.stages || f.mb < 0 || f.mb >= p.micro_batches) continue;
        p.rank_of_cell[static_cast<std::size_t>(f.stage) * static_cast<std::size_t>(p.micro_batches) +
                       static_cast<std::size_t>(f.mb)] = r;
        auto& reps = p.replicas[static_cast<std::size_t>(f.stage)];
        if (reps.empty() || reps.back() != r) reps.push_back(r);  // ranks ascend: a repeat is the last entry
      }
    }
  // Stages ascend here, so each rank's list comes out sorted.
  for (int st = 0; st < p.stages; ++st)
    for (int r : p.replicas[static_cast<std::size_t>(st)]) p.stages_of[static_cast<std::size_t>(r)].push_back(st);
  return p;
}

}  // namespace dualpipe
