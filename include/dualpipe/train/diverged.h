#pragma once
// A training run that diverged: the loss or the gradient norm of a step is
// not finite (NaN or infinite), e.g. with a far too high learning rate.
// train_rank (trainer.h) throws it on every rank at once (the values are
// all-reduced, so every rank sees the same), before the step's update: the
// parameters and every checkpoint stay those of the step before, all finite.
#include <string>

#include "dualpipe/cluster/supervise.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {

// The exit code of a run stopped by its divergence (usage errors are 2):
// every rank stops with it, and the launchers add no line of their own.
constexpr int kDivergedExitCode = kAgreedStopExitCode;

struct DivergedError : Error {
  DivergedError(int step_, double loss, double grad_norm);
  int step;  // 1-based
};

}  // namespace dualpipe
