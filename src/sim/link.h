#pragma once
// A rank's link in the simulator (Costs::Link): the transfers it carries, and
// when each is done.
// Ownership: plain value. Thread-safety: none (one simulation).
#include <map>
#include <vector>

#include "dualpipe/sim/cost.h"

namespace dualpipe {

// Busy stretches of one direction of a link: a transfer takes the earliest
// free stretch at or after its post, so posts need not come in time order
// (the simulation visits ranks in dependency order, not time order).
class Calendar {
 public:
  // The earliest start >= t at which [start, start + work) is free.
  double earliest(double t, double work) const;
  void book(double start, double work);

 private:
  std::map<double, double> busy_;  // start -> end, apart from each other
};

class RankLink {
 public:
  // Apart behaves as fifo for the all-to-alls (the only transfers it carries then).
  explicit RankLink(Costs::Link model = Costs::Link::Fifo)
      : shared_(model == Costs::Link::Shared), duplex_(model == Costs::Link::Duplex) {}
  // A transfer of `work` time units of the link posted at `t` (not before an
  // earlier post); returns when it is done.
  double send(double t, double work);
  // An all-to-all phase posted at `t`: duplex, it needs this rank's upload
  // and download at once (its peers, running the same schedule, mirror it);
  // otherwise as send().
  double exchange(double t, double work);
  // A transfer to the rank whose link is `to` (null: none, or the same
  // rank): duplex, on this rank's upload and `to`'s download at once;
  // otherwise as send().
  double send_to(double t, double work, RankLink* to);

 private:
  bool shared_, duplex_;
  double free_ = 0;          // fifo: when the last transfer is done
  double now_ = 0;           // shared: time of `left_`
  std::vector<double> left_; // shared: work left of the transfers in flight
  Calendar up_, down_;       // duplex
};

}  // namespace dualpipe
