#include "train/fault.h"

#include <fmt/format.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fire(const Fault& f, int rank, int step) {
  // steady_clock is CLOCK_MONOTONIC on Linux: one clock for every process.
  const double now = std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  const char* what = f.kind == Fault::Stall ? "stalls" : "kills itself";
  std::fprintf(stderr, "dualpipe: test fault: rank %d %s in step %d at monotonic %.6f s (pid %d)\n", rank, what, step,
               now, static_cast<int>(getpid()));
  std::fflush(stdout);
  std::fflush(stderr);
  // A stall stops the whole process, as SIGSTOP from outside would: no thread
  // of it answers or times out, so only its peers' timeouts can notice.
  if (f.kind == Fault::Stall) {
    raise(SIGSTOP);
    for (;;) pause();  // continued without a signal that ends it: stay stalled
  }
  raise(SIGKILL);
  std::abort();  // not reached
}

// Makes the rank fail halfway through its forwards of the fault's step, so
// that some of its transfers have happened and its peers are mid-step.
void arm_fault(PipelineModel& model, const Schedule& lowered, const Fault& f, int rank, int pipeline_rank) {
  if ((f.kind != Fault::Kill && f.kind != Fault::Stall) || f.rank != rank) return;
  int forwards = 0;
  for (const Action& a : lowered.actions[pipeline_rank])
    for (const Action& h : halves(a)) forwards += h.op == Op::F;
  const int fire_at = std::max(1, (forwards + 1) / 2);
  auto step = std::make_shared<int>(-1), count = std::make_shared<int>(0);
  auto begin = model.begin_step;
  model.begin_step = [=](int k) {
    *step = k;
    *count = 0;
    if (begin) begin(k);
  };
  auto build = model.build;
  model.build = [=](int s) {
    Stage st = build(s);
    auto fwd = st.forward;
    st.forward = [=](const torch::Tensor& x) {
      if (*step + 1 == f.step && ++*count == fire_at) fire(f, rank, f.step);
      return fwd(x);
    };
    return st;
  };
}

}  // namespace

Fault fault_from_env() {
  Fault f;
  const char* v = std::getenv("DUALPIPE_TEST_FAULT");
  if (!v || !*v) return f;
  const std::string s = v;
  const auto c1 = s.find(':'), c2 = c1 == std::string::npos ? c1 : s.find(':', c1 + 1);
  const std::string kind = s.substr(0, c1);
  f.kind = kind == "kill" ? Fault::Kill : kind == "stall" ? Fault::Stall
         : kind == "kill-before-manifest" ? Fault::KillBeforeManifest : Fault::None;
  try {
    if (f.kind == Fault::None || c2 == std::string::npos) throw std::invalid_argument(s);
    std::size_t used = 0;
    const std::string rank = s.substr(c1 + 1, c2 - c1 - 1), step = s.substr(c2 + 1);
    f.rank = std::stoi(rank, &used);
    if (used != rank.size()) throw std::invalid_argument(s);
    f.step = std::stoi(step, &used);
    if (used != step.size() || f.rank < 0 || f.step < 1) throw std::invalid_argument(s);
  } catch (const std::exception&) {
    throw Error(fmt::format("DUALPIPE_TEST_FAULT='{}' is not KIND:RANK:STEP with KIND kill, stall or "
                            "kill-before-manifest and STEP >= 1",
                            s));
  }
  // Once per run: a restarted run goes through.
  if (restart_count() > 0) return Fault{};
  return f;
}


TrainInstrument fault_hook(const Fault& f) {
  if (f.kind == Fault::None) return nullptr;
  return [f](PipelineModel& model, CheckpointOptions& save, const Schedule& lowered, const Mesh& mesh) {
    arm_fault(model, lowered, f, mesh.rank, mesh.coord.pp);
    if (f.kind == Fault::KillBeforeManifest && f.rank == mesh.rank)
      save.before_manifest = [f, r = mesh.rank](int step) {
        if (step == f.step) fire(f, r, step);
      };
  };
}

}  // namespace dualpipe
