#include "sim/link.h"

#include <algorithm>

namespace dualpipe {
namespace {

// Processor sharing from `now` to `until` (or until all is done): the
// transfers in flight each get 1/n of the link. Returns the time reached.
double share(std::vector<double>& left, double now, double until) {
  while (!left.empty()) {
    const double n = static_cast<double>(left.size());
    const double least = *std::min_element(left.begin(), left.end());
    const double next = now + least * n;  // the smallest one is done
    if (next > until) {
      for (double& w : left) w -= (until - now) / n;
      return until;
    }
    for (double& w : left) w -= least;
    left.erase(std::remove_if(left.begin(), left.end(), [](double w) { return w <= 1e-15; }), left.end());
    now = next;
  }
  return std::max(now, until);
}

}  // namespace

double RankLink::send(double t, double work) {
  if (work <= 0) {  // nothing to carry: it waits for nothing either
    if (shared_) now_ = share(left_, now_, t);
    return t;
  }
  if (!shared_) {
    free_ = std::max(free_, t) + work;
    return free_;
  }
  now_ = share(left_, now_, t);
  left_.push_back(work);
  // Its finish if nothing else comes: run a copy until it is done.
  std::vector<double> copy = left_;
  double now = now_;
  while (true) {
    const double n = static_cast<double>(copy.size());
    const double least = *std::min_element(copy.begin(), copy.end());
    now += least * n;
    const double mine = copy.back() - least;
    for (double& w : copy) w -= least;
    if (mine <= 1e-15) return now;
    copy.erase(std::remove_if(copy.begin(), copy.end(), [](double w) { return w <= 1e-15; }), copy.end());
  }
}

}  // namespace dualpipe
