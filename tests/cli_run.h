#pragma once
// Runs the `dualpipe` program from a test, the way a user would: one shell
// command, standard output and error together, the exit code. Under
// `timeout`, so that a hang fails the test (exit 124) instead of stalling the
// suite. DUALPIPE_BINARY is set by tests/CMakeLists.txt.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace dualpipe::test_support {

// The whole of a file the program wrote ("" if it cannot be read).
inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A path in the tests' temporary folder, unique to this test process:
// CTest runs the cases of one test program at the same time, each in a
// process of its own, and two cases may use one file name.
inline std::string temp_file(const std::string& prefix, const std::string& name) {
  return ::testing::TempDir() + prefix + std::to_string(::getpid()) + "_" + name;
}

struct CliRun {
  int code = -1;
  std::string out;  // stdout and stderr together
};

// `env`: "NAME=value ..." placed before the command.
inline CliRun run_command(const std::string& shell_command) {
  CliRun r;
  FILE* p = popen((shell_command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline CliRun run_cli(const std::string& args, const std::string& env = "", int limit_s = 300) {
  return run_command(env + " timeout -k 5 " + std::to_string(limit_s) + " " + DUALPIPE_BINARY + " " + args);
}

// The same with standard output alone (standard error dropped): for
// machine-readable output that a warning on standard error must not break.
inline CliRun run_cli_stdout(const std::string& args, int limit_s = 300) {
  return run_command("{ timeout -k 5 " + std::to_string(limit_s) + " " + DUALPIPE_BINARY + " " + args +
                     " 2>/dev/null; }");
}

// The output is exactly one line (an error, as the project prints them).
inline bool one_line(const std::string& s) { return !s.empty() && s.find('\n') == s.size() - 1; }

// `dualpipe ARGS` fails with exit code 2 and one line containing `fragment`.
inline void expect_cli_error(const std::string& args, const std::string& fragment) {
  CliRun r = run_cli(args, "", 60);
  EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
  EXPECT_NE(r.out.find(fragment), std::string::npos) << args << "\n" << r.out;
  EXPECT_TRUE(one_line(r.out)) << args << "\n" << r.out;
}

}  // namespace dualpipe::test_support
