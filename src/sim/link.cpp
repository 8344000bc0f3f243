#include "sim/link.h"

#include <algorithm>
#include <iterator>

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

double Calendar::earliest(double t, double work) const {
  auto it = busy_.upper_bound(t);
  if (it != busy_.begin()) {
    auto before = std::prev(it);
    t = std::max(t, before->second);
  }
  for (; it != busy_.end() && it->first < t + work; ++it) t = std::max(t, it->second);
  return t;
}

void Calendar::book(double start, double work) {
  if (work > 0) busy_.emplace(start, start + work);
}

namespace {

// The earliest stretch from `t` free on both calendars, booked on both.
double book_both(Calendar& a, Calendar& b, double t, double work) {
  for (;;) {
    const double s = a.earliest(t, work);
    const double s2 = b.earliest(s, work);
    if (s2 <= s) {
      a.book(s, work);
      b.book(s, work);
      return s + work;
    }
    t = s2;
  }
}

}  // namespace

double RankLink::exchange(double t, double work) {
  if (!duplex_) return send(t, work);
  if (work <= 0) return t;
  return book_both(up_, down_, t, work);
}

double RankLink::send_to(double t, double work, RankLink* to) {
  if (!duplex_) return send(t, work);
  if (work <= 0) return t;
  if (!to || to == this) {
    const double s = up_.earliest(t, work);
    up_.book(s, work);
    return s + work;
  }
  return book_both(up_, to->down_, t, work);
}

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
