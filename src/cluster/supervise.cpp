#include "dualpipe/cluster/supervise.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace dualpipe {

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
  std::size_t agreed = 0;  // ranks that exited with kAgreedStopExitCode
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
    if (WIFEXITED(status) && code == kAgreedStopExitCode) ++agreed;
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
  if (result != 0 && agreed == pids.size()) return kAgreedStopExitCode;
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
