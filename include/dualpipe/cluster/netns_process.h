#pragma once
// Processes inside network namespaces that nobody named: a namespace lives
// as long as a process in it (or an open descriptor of it) does, so a
// namespace made by a child process vanishes with that child, with no name
// under /run/netns to clean up. The helpers here make such namespaces, run
// ip/tc inside them and start programs inside them. Everything between fork
// and exec is async-signal-safe (argument and environment arrays are built
// before fork), so they may be called from a program with many threads.
#include <sys/types.h>

#include <string>
#include <vector>

namespace dualpipe::netns {

// A child process and a pidfd of it: a signal or wait through the pidfd
// reaches exactly that process, never another that got its pid after it was
// reaped (by a launcher's waitpid(-1) loop, say).
// Plain handles, not owned: kill_and_reap() (or the caller) closes pidfd.
struct Child {
  pid_t pid = -1;
  int pidfd = -1;  // -1 where the kernel has no pidfd_open (before Linux 5.3)
};
Child track(pid_t pid);

// Kills `c` with SIGKILL unless it already ended, reaps it unless somebody
// else did, and closes the pidfd; then c is empty. Without a pidfd, a pid
// that is no longer our child is left alone.
void kill_and_reap(Child& c);

// A child process in a fresh network namespace of its own. It stays until
// every write end of `life` pipe is closed (by close, exit or SIGKILL of its
// holders) and then exits, which ends the namespace. It ignores the
// terminal's SIGINT, SIGQUIT, SIGHUP and SIGTSTP, so that Ctrl-C reaches the
// launcher, which decides when the network goes.
// Plain handles, not owned: the caller closes ns_fd and reaps `process`.
struct Holder {
  Child process;
  int ns_fd = -1;  // /proc/pid/ns/net, opened O_CLOEXEC
  int error = 0;   // errno of unshare(CLONE_NEWNET) when it failed (process and ns_fd then empty)
};
// `name` becomes the holder's process name (at most 15 characters).
Holder start_holder(int life_read_fd, const std::string& name);

// Runs program (a path) with args in the namespace `ns_fd` and waits for it.
struct RunResult {
  std::string output;  // its stdout
  std::string error;   // "" on success, else a line naming the command and its
                       // first line on stderr (or its exit status)
};
RunResult run_in(int ns_fd, const std::string& program, const std::vector<std::string>& args);

// Starts argv (argv[0] a path) in the namespace `ns_fd` with exactly the
// environment `env` ("NAME=value" entries); the child gets SIGKILL when the
// calling thread exits (PR_SET_PDEATHSIG). Throws dualpipe::Error if it cannot be
// started (fork, setns or exec failed).
Child spawn_in(int ns_fd, const std::vector<std::string>& argv, const std::vector<std::string>& env);

// `name` itself if it holds a '/', else the first executable `name` in PATH,
// /usr/sbin, /sbin, /usr/bin, /bin; "" if there is none.
std::string find_program(const std::string& name);

}  // namespace dualpipe::netns
