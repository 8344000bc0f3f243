#pragma once
// The simulator: docs/design.md, "Simulation semantics". Each rank issues its
// actions in order; an action starts when its rank is free and its inputs
// have arrived (transfers between different ranks take Costs::transfer()).
#include <vector>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost.h"

namespace dualpipe {

struct Span {
  double start = 0, end = 0;
};

struct RankStats {
  double busy = 0;           // sum of action durations
  double idle = 0;           // makespan - busy
  int peak_activations = 0;  // stage activations alive at once (F start .. B/I end)
  // The same, counting an activation until its W where the backward is split:
  // what a runtime holds, since W still needs the layer inputs and output
  // gradients that I leaves behind (the published figures count to I).
  int peak_held = 0;
  int stages_held = 0;       // distinct stages this rank runs (parameter replicas)
  double param_copies = 0;   // parameters held, relative to an even split of the model over the ranks
  // Expert-parallel all-to-all (Costs::a2a_*): the time this rank's
  // all-to-alls took on its link, and the part of it the rank spent waiting
  // for them with nothing to compute (inside its actions, so part of busy).
  double a2a_total = 0;
  double exposed_a2a = 0;
};

struct SimResult {
  double makespan = 0;
  double bubble = 0;        // idle time of the most idle rank
  double bubble_ratio = 0;  // bubble / makespan
  std::vector<RankStats> per_rank;
  // [rank][position]: when each action ran, same indexing as Schedule::actions.
  // Communication actions get an empty span where the rank issued them.
  std::vector<std::vector<Span>> timeline;
  // Over all ranks: all-to-all time, the exposed part of it, and the share
  // hidden behind compute (1 - exposed / total; 0 when there is none).
  double a2a_total = 0, exposed_a2a = 0, a2a_hidden = 0;
  // [rank]: the intervals the rank waited for an all-to-all, in time order
  // (with the timeline, and only when there are all-to-all costs).
  std::vector<std::vector<Span>> a2a_waits;
};

struct SimOptions {
  bool timeline = true;  // record spans (off saves memory on huge schedules)
};

// Checks the schedule and the costs first; throws dualpipe::Error if either is bad.
// Actions other than F, B, I, W and F&B take no time on their rank.
SimResult simulate(const Schedule& s, const Costs& c, const SimOptions& opt = {});

// One chunk's work: `compute` time cut into phases+1 equal pieces with an
// all-to-all of `a2a` time between each two.
struct ChunkWork {
  double compute = 0;
  int phases = 0;
  double a2a = 0;
};
struct PairTime {
  double duration = 0;    // from the pair's start to the end of its last piece
  double exposed = 0;     // duration - compute of both halves: waiting for all-to-alls
  std::vector<Span> waits;  // those waits, relative to the pair's start
};
// An F&B pair run as two tasks sharing one compute baton (the runtime's
// rule before the overlap engine; Costs::PairTurns::FirstReady): a task computes until its next all-to-all, starts it and
// hands the baton over; it computes again once its all-to-all is done and
// the baton is free. Whichever task is ready first takes the baton, the
// other one on a tie; the forward starts. The rank's link carries one
// all-to-all at a time, in the order they are started.
PairTime overlapped_pair(const ChunkWork& f, const ChunkWork& b);
// The pair as the runtime's overlap engine runs it: the halves swap at every
// all-to-all post (B first), a half that comes back waits for its transfer,
// a half that has ended leaves the other to run alone; the link carries one
// all-to-all at a time in posting order. `f_pieces`/`b_pieces`: each
// chunk's compute pieces (phases + 1 values summing to its compute); empty:
// equal pieces.
PairTime alternating_pair(const ChunkWork& f, const ChunkWork& b, const std::vector<double>& f_pieces = {},
                          const std::vector<double>& b_pieces = {});
// The same two chunks one after the other, every all-to-all exposed.
PairTime serial_pair(const ChunkWork& f, const ChunkWork& b);

}  // namespace dualpipe
