#pragma once
// Learning-rate warm-up: a short training run at the full AdamW rate from
// step 1 spikes (the first updates move every weight by about lr, whatever
// its gradient), so the rate rises linearly over the first steps.

namespace dualpipe {

// The warm-up length `train` uses when --warmup-steps is not given: a tenth
// of the run, at most 50 steps (none for runs under 10 steps).
inline int default_lr_warmup_steps(int steps) { return steps / 10 < 50 ? steps / 10 : 50; }

// The rate of 0-based step k: lr * (k+1) / warmup during the warm-up, then lr.
inline double warmup_lr(double lr, int step, int warmup) {
  if (warmup <= 0 || step >= warmup) return lr;
  return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
}

}  // namespace dualpipe
