#include "dualpipe/cluster/supervise.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>

#include <time.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <chrono>
#include <cstring>
#include <thread>

namespace dualpipe {
namespace {

std::atomic<int> interrupts{0};
std::atomic<std::int64_t> first_interrupt_ms{0};

std::int64_t monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void on_interrupt(int) {
  const std::int64_t now = monotonic_ms();
  if (interrupts.fetch_add(1) == 0) {
    first_interrupt_ms = now;
    return;
  }
  if (now - first_interrupt_ms.load() < 1000) return;  // the same Ctrl-C, passed on by a launcher
  signal(SIGINT, SIG_DFL);
  raise(SIGINT);
}

}  // namespace

void catch_interrupts() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a waitpid returns EINTR, so the launcher sees the request at once
  sigaction(SIGINT, &sa, nullptr);
}

bool interrupt_requested() { return interrupts.load() > 0; }

int supervise_ranks(const std::vector<pid_t>& pids, const std::string& program) {
  // Once a rank fails, the others cannot finish: a peer of a dead rank fails
  // fast (connection closed) or within its --timeout, but a rank that stalls
  // never exits by itself. So after the first failure the others get
  // kGrace to exit on their own (and print their own line, which names what
  // they waited for), then SIGTERM, and kKillAfter later SIGKILL.
  using Clock = std::chrono::steady_clock;
  constexpr auto kGrace = std::chrono::milliseconds(1000);
  constexpr auto kKillAfter = std::chrono::milliseconds(3000);
  std::vector<bool> running(pids.size(), true);
  std::size_t left = pids.size();
  int result = 0;
  std::size_t agreed = 0;  // ranks that exited with kAgreedStopExitCode or kInterruptedExitCode
  bool passed_on = false;  // a SIGINT of ours, passed on to the ranks
  std::string failure, stopped;
  bool failed_with_error_line = false;  // the first failure exited with code 2: a rank's one-line error
  Clock::time_point failed_at;
  int phase = 0;  // 0: all well; 1: a rank failed; 2: SIGTERM sent; 3: SIGKILL sent
  auto signal_running = [&](int sig) {
    for (std::size_t r = 0; r < pids.size(); ++r)
      if (running[r]) {
        kill(pids[r], sig);
        // A stopped process (SIGSTOP) acts on SIGTERM only once continued.
        if (sig == SIGTERM) kill(pids[r], SIGCONT);
        if (sig == SIGTERM) stopped += fmt::format("{}{}", stopped.empty() ? "" : ", ", r);
      }
  };
  while (left > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, phase == 0 ? 0 : WNOHANG);
    if (!passed_on && interrupt_requested()) {
      passed_on = true;
      for (std::size_t r = 0; r < pids.size(); ++r)
        if (running[r]) kill(pids[r], SIGINT);
    }
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;  // no children left to wait for
    }
    if (pid == 0) {  // after a failure: nothing exited since the last look
      const auto since = Clock::now() - failed_at;
      if (phase == 1 && since >= kGrace) {
        signal_running(SIGTERM);
        phase = 2;
      } else if (phase == 2 && since >= kGrace + kKillAfter) {
        signal_running(SIGKILL);
        phase = 3;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    std::size_t r = 0;
    while (r < pids.size() && pids[r] != pid) ++r;
    if (r == pids.size()) continue;
    running[r] = false;
    --left;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (WIFEXITED(status) && (code == kAgreedStopExitCode || code == kInterruptedExitCode)) ++agreed;
    if (code != 0 && result == 0) {
      result = code;
      failure = WIFEXITED(status)
                    ? fmt::format("rank {} (pid {}) failed with exit code {}", r, pid, code)
                    : fmt::format("rank {} (pid {}) died: signal {} ({})", r, pid, WTERMSIG(status),
                                  strsignal(WTERMSIG(status)));
      failed_with_error_line = WIFEXITED(status) && code == 2;
      failed_at = Clock::now();
      phase = 1;
    }
  }
  if (result != 0 && agreed == pids.size()) return result;
  const double grace_s = std::chrono::duration<double>(kGrace).count();
  // A rank that gave up with its own error line (its peers' waits are
  // bounded, and a closed connection is seen at once) while another had to
  // be stopped: the one stopped is the rank that hung, and the headline
  // names it; the error line above says what the other waited for.
  if (result != 0 && failed_with_error_line && !stopped.empty())
    fmt::print(stderr, "{}: error: rank(s) {} stopped responding (still running {} s after {}); stopped\n", program,
               stopped, grace_s, failure);
  else if (result != 0)
    fmt::print(stderr, "{}: error: {}{}\n", program, failure,
               stopped.empty() ? std::string("; the other ranks exited by themselves")
                               : fmt::format("; stopped rank(s) {} (still running {} s later)", stopped, grace_s));
  return result;
}

}  // namespace dualpipe
