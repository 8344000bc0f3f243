#pragma once
// The simulator: PIPELINES.md, "Simulation semantics". Each rank issues its
// actions in order; an action starts when its rank is free and its inputs
// have arrived (transfers between different ranks take Costs::transfer()).
#include <vector>

#include "schedule/schedule.h"
#include "sim/cost.h"

namespace dp {

struct Span {
  double start = 0, end = 0;
};

struct RankStats {
  double busy = 0;           // sum of action durations
  double idle = 0;           // makespan - busy
  int peak_activations = 0;  // stage activations alive at once (F start .. B/I end)
  // The same, counting an activation until its W where the backward is split:
  // what a runtime holds, since W still needs the layer inputs and output
  // gradients that I leaves behind (PIPELINES.md's figures count to I).
  int peak_held = 0;
  int stages_held = 0;       // distinct stages this rank runs (parameter replicas)
  double param_copies = 0;   // parameters held, relative to an even split of the model over the ranks
};

struct SimResult {
  double makespan = 0;
  double bubble = 0;        // idle time of the most idle rank
  double bubble_ratio = 0;  // bubble / makespan
  std::vector<RankStats> per_rank;
  // [rank][position]: when each action ran, same indexing as Schedule::actions.
  // Communication actions get an empty span where the rank issued them.
  std::vector<std::vector<Span>> timeline;
};

struct SimOptions {
  bool timeline = true;  // record spans (off saves memory on huge schedules)
};

// Checks the schedule and the costs first; throws dp::Error if either is bad.
SimResult simulate(const Schedule& s, const Costs& c, const SimOptions& opt = {});

}  // namespace dp
