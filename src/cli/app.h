#pragma once
// The command-line program, shared by its two executables: dualpipe (the
// commands without LibTorch; it starts in milliseconds) and dualpipe-torch
// (every command, for train, verify, bench and profile, which dualpipe runs
// through exec). Both build the same CLI11 app, so options, help texts,
// errors and exit codes are one code.
#include <CLI/CLI.hpp>

namespace dualpipe::cli {

// The top-level app: name, description, --version.
void setup_app(CLI::App& app);
// schedule, simulate, compare, plan, search: the commands without LibTorch.
void add_schedule_commands(CLI::App* app);
// version (listed last).
void add_version_command(CLI::App* app);
// Parses argv and runs the chosen command; returns the exit code: 0, or 2
// after one "dualpipe: error: ..." line for a user error.
int run_app(CLI::App& app, int argc, char** argv);

}  // namespace dualpipe::cli
