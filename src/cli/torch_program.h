#pragma once
// How the dualpipe program runs the commands that need LibTorch: it replaces
// itself (exec, same arguments, same process id) with dualpipe-torch, which
// sits next to it in a build folder and in <prefix>/libexec/dualpipe when
// installed. Exit code, signals, stdin/stdout/stderr and the process stay
// those of the one `dualpipe` process the caller started.
#include <CLI/CLI.hpp>
#include <string>

namespace dualpipe::cli {

// True if `name` is a command of dualpipe-torch (torch_commands.h).
bool is_torch_command(const std::string& name);
// Lists the LibTorch commands in `app` (for --help and the unknown-command
// line); they never run there, since main() execs dualpipe-torch first.
void add_torch_command_entries(CLI::App* app);
// Where dualpipe-torch is for the program at `self` (a path): the first of
// its folder and `relpath` from its folder that exists; empty if none.
std::string find_torch_program(const std::string& self, const std::string& relpath);
// Execs dualpipe-torch with argv; returns only on failure, with exit code 2
// after one "dualpipe: error: ..." line.
int exec_torch_program(int argc, char** argv);

}  // namespace dualpipe::cli
