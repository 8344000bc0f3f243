#pragma once
// Small statistics over measurements: the overlap engine's calibration and
// the commands that report timings (bench, train, profile). Internal to the
// runtime and the programs built on it.
#include <algorithm>
#include <vector>

namespace dualpipe {

// The median (the mean of the two middle values for an even count); 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace dualpipe
