#pragma once
// A rank's outgoing link in the simulator (Costs::Link): the transfers it
// carries, posted in time order, and when each is done.
// Ownership: plain value. Thread-safety: none (one simulation).
#include <vector>

#include "dualpipe/sim/cost.h"

namespace dualpipe {

class RankLink {
 public:
  // Apart behaves as fifo for the all-to-alls (the only transfers it carries then).
  explicit RankLink(Costs::Link model = Costs::Link::Fifo) : shared_(model == Costs::Link::Shared) {}
  // A transfer of `work` time units of the link posted at `t` (not before an
  // earlier post); returns when it is done.
  double send(double t, double work);

 private:
  bool shared_;
  double free_ = 0;          // fifo: when the last transfer is done
  double now_ = 0;           // shared: time of `left_`
  std::vector<double> left_; // shared: work left of the transfers in flight
};

}  // namespace dualpipe
