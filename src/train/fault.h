#pragma once
// Failures on purpose, for the tests of failure handling: set by
// DUALPIPE_TEST_FAULT=KIND:RANK:STEP in rank processes (fault_from_env) and
// installed as TrainOptions::instrument (fault_hook): in step STEP (1-based),
// rank RANK
//   kill:  raises SIGKILL halfway through its forwards of the step;
//   stall: stops its process (SIGSTOP) at the same place (its peers must time out);
//   kill-before-manifest: (rank 0 only) raises SIGKILL while writing the
//          checkpoint of step STEP, after every rank file and before the manifest.
// Each prints one line with the CLOCK_MONOTONIC time first, so that tests can
// measure how long the others take to exit. A fault fires in the first start
// of a run only: after a restart (restart_count() > 0) the run goes through. Internal: not installed, not
// part of the library's API; the programs install it for their tests.
#include "dualpipe/train/trainer.h"

namespace dualpipe {

struct Fault {
  enum Kind { None, Kill, Stall, KillBeforeManifest } kind = None;
  int rank = -1, step = 0;
};
// Throws dualpipe::Error if the variable is set but malformed.
Fault fault_from_env();
// The hook that arms `f` (null for Fault::None).
TrainInstrument fault_hook(const Fault& f);

}  // namespace dualpipe
