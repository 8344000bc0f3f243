#pragma once
// Waiting for rank processes, shared by every launcher (local ranks, ranks in
// emulated hosts). Plain POSIX, no LibTorch.
#include <sys/types.h>

#include <string>
#include <vector>

namespace dualpipe {

// The exit code of a rank that stopped together with all the others, for a
// reason they all saw at once and that rank 0 has reported.
constexpr int kAgreedStopExitCode = 3;
// The exit code of a run stopped by Ctrl-C (SIGINT) after its ranks agreed
// on the step to stop after (128 + SIGINT, as a shell reports it).
constexpr int kInterruptedExitCode = 130;

// Ctrl-C as a request, not an end: from the first SIGINT on,
// interrupt_requested() is true, and the process goes on (a training run
// finishes its step, keeps a checkpoint and its outputs, and stops). A second
// SIGINT more than a second after the first ends the process as SIGINT
// always does (the first Ctrl-C reaches a launcher and its ranks at once, and
// a launcher passes it on: repeats within the second are the same request).
// Process-wide; idempotent; installs a SIGINT handler.
void catch_interrupts();
bool interrupt_requested();

// Waits for rank processes, children of this process (pids[r] is rank r).
// Returns 0 if all succeed, else the first failing rank's exit code (128 +
// signal if it was killed), after one line on stderr, "PROGRAM: error: rank
// R (pid N) ...", naming that rank and how it failed. The others get a
// second to exit by themselves, then SIGTERM (and SIGCONT, for a stopped
// one), then SIGKILL 3 s later, so that this returns even if a rank hangs.
// Thread-safety: reaps any child of the process (waitpid(-1)); call it from
// one thread, with no other children that someone else waits for.
// Exit code kAgreedStopExitCode (or kInterruptedExitCode) from every rank is
// a stop the ranks agreed on and reported themselves (a diverged training
// run, a Ctrl-C: rank 0's line): it is returned without a line of ours.
// With catch_interrupts(), a SIGINT that reaches this process alone (kill
// -INT) is passed on to the ranks once.
int supervise_ranks(const std::vector<pid_t>& pids, const std::string& program = "dualpipe");

}  // namespace dualpipe
