#include "dualpipe/cluster/netns_process.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "dualpipe/schedule/error.h"

namespace dualpipe::netns {
namespace {

std::vector<char*> c_array(const std::vector<std::string>& v) {
  std::vector<char*> out;
  for (const auto& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// Closes every descriptor from 3 up except `keep_a` and `keep_b`.
void close_all_but(int keep_a, int keep_b) {
  const unsigned a = static_cast<unsigned>(std::min(keep_a, keep_b));
  const unsigned b = static_cast<unsigned>(std::max(keep_a, keep_b));
  if (a > 3) close_range(3, a - 1, 0);
  if (b > a + 1) close_range(a + 1, b - 1, 0);
  close_range(b + 1, ~0U, 0);
}

// Reads everything until EOF (retrying on EINTR).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) out.append(buf, static_cast<std::size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  return out;
}

int wait_status(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return status;
}

}  // namespace

Holder start_holder(int life_read_fd, const std::string& name) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) throw Error(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
  const pid_t pid = fork();
  if (pid < 0) {
    close(ready[0]);
    close(ready[1]);
    throw Error(fmt::format("cannot start a namespace holder process: {}", std::strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_NAME, name.c_str());
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    for (int sig : {SIGINT, SIGQUIT, SIGHUP, SIGTSTP, SIGPIPE}) sigaction(sig, &ignore, nullptr);
    // Only the life pipe may keep this process alive: drop every other
    // descriptor (other holders' life pipes, the launcher's files).
    close_all_but(life_read_fd, ready[1]);
    // Nor may it hold the launcher's terminal or output pipes open.
    const int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      for (int fd = 0; fd < 3; ++fd) dup2(null, fd);
      if (null > 2 && null != life_read_fd && null != ready[1]) close(null);
    }
    int err = unshare(CLONE_NEWNET) == 0 ? 0 : errno;
    (void)!write(ready[1], &err, sizeof err);
    if (err != 0) _exit(1);
    close(ready[1]);
    if (chdir("/") != 0) {}  // pin no directory
    char c;
    while (true) {
      const ssize_t n = read(life_read_fd, &c, 1);
      if (n == 0 || (n < 0 && errno != EINTR)) _exit(0);
    }
  }
  close(ready[1]);
  int err = 0;
  ssize_t n;
  do n = read(ready[0], &err, sizeof err);
  while (n < 0 && errno == EINTR);
  close(ready[0]);
  Holder h;
  h.process = track(pid);
  if (n != static_cast<ssize_t>(sizeof err) || err != 0) {
    kill_and_reap(h.process);
    h.error = n == static_cast<ssize_t>(sizeof err) ? err : ECHILD;
    return h;
  }
  h.ns_fd = open(fmt::format("/proc/{}/ns/net", pid).c_str(), O_RDONLY | O_CLOEXEC);
  if (h.ns_fd < 0) {
    const int e = errno;
    kill_and_reap(h.process);
    throw Error(fmt::format("cannot open the network namespace of process {}: {}", pid, std::strerror(e)));
  }
  return h;
}

RunResult run_in(int ns_fd, const std::string& program, const std::vector<std::string>& args) {
  std::vector<std::string> argv{program};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string command;
  for (const auto& a : argv) command += (command.empty() ? "" : " ") + a;
  auto c_argv = c_array(argv);
  RunResult result;
  // stdout and stderr are read after the exit: ip and tc write little, far
  // less than a pipe holds, for the commands used here.
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    result.error = fmt::format("'{}' failed: cannot create a pipe", command);
    return result;
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    result.error = fmt::format("'{}' failed: cannot create a pipe", command);
    return result;
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {out[0], out[1], err[0], err[1]}) close(fd);
    result.error = fmt::format("'{}' failed: cannot fork: {}", command, std::strerror(errno));
    return result;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    const int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (setns(ns_fd, CLONE_NEWNET) != 0) {
      static const char msg[] = "setns failed\n";
      (void)!write(2, msg, sizeof msg - 1);
      _exit(126);
    }
    execv(c_argv[0], c_argv.data());
    static const char msg[] = "cannot execute\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  result.output = read_all(out[0]);
  const std::string text = read_all(err[0]);
  close(out[0]);
  close(err[0]);
  const int status = wait_status(pid);
  if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) return result;
  std::string line = text.substr(0, text.find('\n'));
  if (line.empty())
    line = status >= 0 && WIFEXITED(status) ? fmt::format("exit code {}", WEXITSTATUS(status))
                                            : fmt::format("killed by signal {}", WTERMSIG(status));
  result.error = fmt::format("'{}' failed: {}", command, line);
  return result;
}

Child spawn_in(int ns_fd, const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  if (argv.empty()) throw Error("cannot start a program without a name");
  auto c_argv = c_array(argv);
  auto c_env = c_array(env);
  // Exec failure travels back through a close-on-exec pipe: EOF means exec worked.
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) throw Error(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(report[0]);
    close(report[1]);
    throw Error(fmt::format("cannot start '{}': fork failed: {}", argv[0], std::strerror(errno)));
  }
  if (pid == 0) {
    // The child must not outlive its launcher: it keeps the namespace alive.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int err = 0;
    if (setns(ns_fd, CLONE_NEWNET) != 0) {
      err = errno;
    } else {
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execve(c_argv[0], c_argv.data(), c_env.data());
      err = errno;
    }
    (void)!write(report[1], &err, sizeof err);
    _exit(127);
  }
  close(report[1]);
  int err = 0;
  ssize_t n;
  do n = read(report[0], &err, sizeof err);
  while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == static_cast<ssize_t>(sizeof err)) {
    wait_status(pid);
    throw Error(fmt::format("cannot start '{}' in its emulated host: {}", argv[0], std::strerror(err)));
  }
  return track(pid);
}

std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::string dirs = std::string(path ? path : "") + ":/usr/sbin:/sbin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string dir = dirs.substr(start, end - start);
    if (!dir.empty()) {
      const std::string candidate = dir + "/" + name;
      struct stat st {};
      if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(candidate.c_str(), X_OK) == 0)
        return candidate;
    }
    start = end + 1;
  }
  return "";
}

Child track(pid_t pid) {
  const long fd = syscall(SYS_pidfd_open, pid, 0);
  return Child{pid, fd >= 0 ? static_cast<int>(fd) : -1};
}

void kill_and_reap(Child& c) {
  if (c.pid <= 0) return;
  int status = 0;
  if (c.pidfd >= 0) {
    // Through the pidfd: ESRCH or ECHILD when it is gone or reaped elsewhere.
    syscall(SYS_pidfd_send_signal, c.pidfd, SIGKILL, nullptr, 0);
    constexpr auto kPidfd = static_cast<idtype_t>(3);  // P_PIDFD (Linux 5.4)
    siginfo_t info{};
    while (waitid(kPidfd, static_cast<id_t>(c.pidfd), &info, WEXITED) < 0 && errno == EINTR) {
    }
    close(c.pidfd);
  } else {
    pid_t r;
    do r = waitpid(c.pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) {  // still running, and still ours
      kill(c.pid, SIGKILL);
      wait_status(c.pid);
    }
  }
  c = Child{};
}

}  // namespace dualpipe::netns
