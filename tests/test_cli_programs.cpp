// The command line as two programs: dualpipe (no LibTorch) and, in LibTorch
// builds, dualpipe-torch, which dualpipe execs for train, verify, bench and
// profile. DUALPIPE_TORCH_PROGRAM is set by tests/CMakeLists.txt (empty
// without LibTorch).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <string>

#include <dualpipe/version.h>

#include "cli_run.h"

namespace dualpipe {
namespace {

using test_support::CliRun;
using test_support::run_cli;
using test_support::run_command;

const std::string torch_program = DUALPIPE_TORCH_PROGRAM;

TEST(CliPrograms, VersionPrintsTheProjectVersion) {
  const std::string want = std::string("dualpipe ") + DUALPIPE_VERSION + "\n";
  CliRun v = run_cli("version");
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out, want);
  CliRun flag = run_cli("--version");
  EXPECT_EQ(flag.code, 0);
  EXPECT_EQ(flag.out, want);
  // The header is generated from project(dualpipe VERSION x.y.z).
  EXPECT_EQ(std::string(DUALPIPE_VERSION),
            std::to_string(DUALPIPE_VERSION_MAJOR) + "." + std::to_string(DUALPIPE_VERSION_MINOR) + "." +
                std::to_string(DUALPIPE_VERSION_PATCH));
}

// The point of the split: the schedule commands never load LibTorch.
TEST(CliPrograms, DualpipeDoesNotLinkLibTorch) {
  CliRun deps = run_command(std::string("ldd ") + DUALPIPE_BINARY);
  ASSERT_EQ(deps.code, 0) << deps.out;
  EXPECT_NE(deps.out.find("libc.so"), std::string::npos) << deps.out;
  // By library name: a load address may hold "c10" in its hex digits.
  EXPECT_EQ(deps.out.find("libtorch"), std::string::npos) << deps.out;
  EXPECT_EQ(deps.out.find("libc10"), std::string::npos) << deps.out;
}

TEST(CliPrograms, HelpListsEveryCommand) {
  CliRun h = run_cli("--help");
  ASSERT_EQ(h.code, 0) << h.out;
  for (const char* cmd : {"schedule", "simulate", "compare", "plan", "search", "version"})
    EXPECT_NE(h.out.find(std::string("\n  ") + cmd + " "), std::string::npos) << cmd << "\n" << h.out;
  if (torch_program.empty()) return;
  for (const char* cmd : {"verify", "train", "bench", "profile"})
    EXPECT_NE(h.out.find(std::string("\n  ") + cmd + " "), std::string::npos) << cmd << "\n" << h.out;
  // dualpipe lists the LibTorch commands from its table; dualpipe-torch
  // registers the commands themselves: the two listings must be the same.
  CliRun full = run_command(torch_program + " --help");
  ASSERT_EQ(full.code, 0) << full.out;
  EXPECT_EQ(h.out, full.out);
}

TEST(CliPrograms, LibTorchCommandsRunThroughDualpipe) {
  if (torch_program.empty()) GTEST_SKIP() << "built without LibTorch";
  CliRun h = run_cli("train --help");
  EXPECT_EQ(h.code, 0) << h.out;
  EXPECT_NE(h.out.find("Usage: dualpipe train"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("--steps"), std::string::npos) << h.out;
  // A user error of the LibTorch program: its one line and exit code 2.
  CliRun bad = run_cli("verify --bogus");
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_EQ(bad.out.rfind("dualpipe: error: ", 0), 0u) << bad.out;
  EXPECT_NE(bad.out.find("(see dualpipe verify --help)"), std::string::npos) << bad.out;
}

// dualpipe alone (dualpipe-torch not next to it nor in ../libexec/dualpipe):
// the schedule commands work, a LibTorch command says what is missing.
TEST(CliPrograms, MissingTorchProgramIsOneLine) {
  if (torch_program.empty()) GTEST_SKIP() << "built without LibTorch";
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("dualpipe_alone_" + std::to_string(getpid()));
  fs::create_directories(dir / "bin");
  fs::copy_file(DUALPIPE_BINARY, dir / "bin" / "dualpipe", fs::copy_options::overwrite_existing);
  const std::string alone = (dir / "bin" / "dualpipe").string();
  CliRun ok = run_command(alone + " schedule -m 1f1b -p 2 -n 2 --format csv");
  EXPECT_EQ(ok.code, 0) << ok.out;
  CliRun r = run_command(alone + " train --help");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out.rfind("dualpipe: error: 'train' runs the LibTorch program dualpipe-torch", 0), 0u) << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << r.out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dualpipe
