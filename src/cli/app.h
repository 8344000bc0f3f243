#pragma once
// The command-line program, shared by its two executables: dualpipe (the
// commands without LibTorch; it starts in milliseconds) and dualpipe-torch
// (every command, for train, verify, bench and profile, which dualpipe runs
// through exec). Both build the same CLI11 app, so options, help texts,
// errors and exit codes are one code.
#include <CLI/CLI.hpp>

#include "cli/common.h"

namespace dualpipe::cli {

// The top-level app: name, description, --version.
void setup_app(CLI::App& app);
// schedule, simulate, compare, plan, search: the commands without LibTorch.
void add_schedule_commands(CLI::App* app, CommandRun& run);
// version (listed last).
void add_version_command(CLI::App* app, CommandRun& run);
// Parses argv, then runs what the chosen command set in `run`; returns the
// exit code: the command's, or 2 after one "dualpipe: error: ..." line for
// a user error. The one place where a command's outcome becomes the exit
// code. With no arguments: the help, exit code 0.
int run_app(CLI::App& app, const CommandRun& run, int argc, char** argv);

}  // namespace dualpipe::cli
