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

namespace {

// One supervision of rank processes: which still run, the first failure, and
// how far the stopping of the others has gone. Once a rank fails, the others
// cannot finish: a peer of a dead rank fails fast (connection closed) or
// within its --timeout, but a rank that stalls never exits by itself. So
// after the first failure the others get kGrace to exit on their own (and
// print their own line, which names what they waited for), then SIGTERM, and
// kKillAfter later SIGKILL.
class Supervision {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kGrace = std::chrono::milliseconds(1000);
  static constexpr auto kKillAfter = std::chrono::milliseconds(3000);

  explicit Supervision(const std::vector<pid_t>& pids) : pids_(pids), running_(pids.size(), true), left_(pids.size()) {}

  bool any_left() const { return left_ > 0; }
  // waitpid's flags for the next wait: blocking until a rank fails.
  int wait_flags() const { return phase_ == 0 ? 0 : WNOHANG; }

  // A SIGINT that reached this process: passed on to the running ranks once.
  void pass_on_interrupt() {
    if (passed_on_ || !interrupt_requested()) return;
    passed_on_ = true;
    for (std::size_t r = 0; r < pids_.size(); ++r)
      if (running_[r]) kill(pids_[r], SIGINT);
  }

  // After a failure, nothing exited since the last look: SIGTERM after the
  // grace, SIGKILL kKillAfter later.
  void escalate() {
    const auto since = Clock::now() - failed_at_;
    if (phase_ == 1 && since >= kGrace) {
      signal_running(SIGTERM);
      phase_ = 2;
    } else if (phase_ == 2 && since >= kGrace + kKillAfter) {
      signal_running(SIGKILL);
      phase_ = 3;
    }
  }

  // Child `pid` ended with `status`: its rank's exit is recorded (a child
  // that is no rank is ignored).
  void record_exit(pid_t pid, int status) {
    std::size_t r = 0;
    while (r < pids_.size() && pids_[r] != pid) ++r;
    if (r == pids_.size()) return;
    running_[r] = false;
    --left_;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (WIFEXITED(status) && (code == kAgreedStopExitCode || code == kInterruptedExitCode)) ++agreed_;
    if (code != 0 && result_ == 0) {
      result_ = code;
      failure_ = WIFEXITED(status)
                     ? fmt::format("rank {} (pid {}) failed with exit code {}", r, pid, code)
                     : fmt::format("rank {} (pid {}) died: signal {} ({})", r, pid, WTERMSIG(status),
                                   strsignal(WTERMSIG(status)));
      failed_with_error_line_ = WIFEXITED(status) && code == 2;
      failed_at_ = Clock::now();
      phase_ = 1;
    }
  }

  // The result, after the one line on stderr that a failure gets.
  int report(const std::string& program) const {
    if (result_ != 0 && agreed_ == pids_.size()) return result_;
    const double grace_s = std::chrono::duration<double>(kGrace).count();
    // A rank that gave up with its own error line (its peers' waits are
    // bounded, and a closed connection is seen at once) while another had to
    // be stopped: the one stopped is the rank that hung, and the headline
    // names it; the error line above says what the other waited for.
    if (result_ != 0 && failed_with_error_line_ && !stopped_.empty())
      fmt::print(stderr, "{}: error: rank(s) {} stopped responding (still running {} s after {}); stopped\n", program,
                 stopped_, grace_s, failure_);
    else if (result_ != 0)
      fmt::print(stderr, "{}: error: {}{}\n", program, failure_,
                 stopped_.empty() ? std::string("; the other ranks exited by themselves")
                                  : fmt::format("; stopped rank(s) {} (still running {} s later)", stopped_, grace_s));
    return result_;
  }

 private:
  void signal_running(int sig) {
    for (std::size_t r = 0; r < pids_.size(); ++r)
      if (running_[r]) {
        kill(pids_[r], sig);
        // A stopped process (SIGSTOP) acts on SIGTERM only once continued.
        if (sig == SIGTERM) kill(pids_[r], SIGCONT);
        if (sig == SIGTERM) stopped_ += fmt::format("{}{}", stopped_.empty() ? "" : ", ", r);
      }
  }

  const std::vector<pid_t>& pids_;
  std::vector<bool> running_;
  std::size_t left_;
  int result_ = 0;
  std::size_t agreed_ = 0;  // ranks that exited with kAgreedStopExitCode or kInterruptedExitCode
  bool passed_on_ = false;  // a SIGINT of ours, passed on to the ranks
  std::string failure_, stopped_;
  bool failed_with_error_line_ = false;  // the first failure exited with code 2: a rank's one-line error
  Clock::time_point failed_at_;
  int phase_ = 0;  // 0: all well; 1: a rank failed; 2: SIGTERM sent; 3: SIGKILL sent
};

}  // namespace

int supervise_ranks(const std::vector<pid_t>& pids, const std::string& program) {
  Supervision sup(pids);
  while (sup.any_left()) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, sup.wait_flags());
    sup.pass_on_interrupt();
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;  // no children left to wait for
    }
    if (pid == 0) {  // after a failure: nothing exited since the last look
      sup.escalate();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    sup.record_exit(pid, status);
  }
  return sup.report(program);
}

}  // namespace dualpipe
