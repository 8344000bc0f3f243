#pragma once
// What one action costs, for the simulator. Times are in any unit the user
// likes (the default F=1, B=2, W=1 reads as "units of one forward").
#include <optional>
#include <string>
#include <vector>

namespace dp {

struct Costs {
  // One value for every stage, or one per stage.
  std::vector<double> F{1.0}, B{2.0}, W{1.0};
  // Time of one overlapped F&B pair; unset means no overlap: F + B.
  std::optional<double> FB;
  // Point-to-point transfer between different ranks: latency + bytes / bandwidth.
  double latency = 0.0;
  double bandwidth = 0.0;  // bytes per time unit; 0 means unlimited
  double act_bytes = 0.0;  // bytes of one activation (or its gradient) crossing a stage boundary

  double f(int stage) const { return pick(F, stage); }
  double b(int stage) const { return pick(B, stage); }
  double w(int stage) const { return pick(W, stage); }
  double i(int stage) const { return b(stage) - w(stage); }  // input-gradient half of B
  double fb(int f_stage, int b_stage) const { return FB ? *FB : f(f_stage) + b(b_stage); }
  double transfer() const { return latency + (bandwidth > 0 ? act_bytes / bandwidth : 0.0); }

  // Throws dp::Error unless every list has 1 or `stages` entries and all
  // values make sense (non-negative, W <= B).
  void validate(int stages) const;

 private:
  static double pick(const std::vector<double>& v, int stage) { return v.size() == 1 ? v[0] : v[stage]; }
};

// Parses "F=1,B=2,W=1,FB=3"; a per-stage list is written with colons:
// "F=1:1:1.5:1". Keys not given keep their defaults. Throws dp::Error.
Costs parse_costs(const std::string& spec);

// "F=1 B=2 W=1 FB=3" for headings.
std::string describe(const Costs& c);

}  // namespace dp
