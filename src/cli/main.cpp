// dualpipe: pipeline schedules as data; generate, simulate, compare and draw
// them, and (through dualpipe-torch) run them on LibTorch.
//
// This program does not link LibTorch, so the schedule commands start in
// milliseconds. The commands that need LibTorch (torch_commands.h) are listed
// here and run by dualpipe-torch, which replaces this process (exec) with the
// same arguments: one `dualpipe` command, one set of options and exit codes.
#include "cli/app.h"
#include "cli/torch_program.h"

int main(int argc, char** argv) {
#ifdef DUALPIPE_TORCH
  if (argc > 1 && dualpipe::cli::is_torch_command(argv[1])) return dualpipe::cli::exec_torch_program(argc, argv);
#endif
  CLI::App app;
  dualpipe::cli::CommandRun run;
  dualpipe::cli::setup_app(app);
  dualpipe::cli::add_schedule_commands(&app, run);
#ifdef DUALPIPE_TORCH
  dualpipe::cli::add_torch_command_entries(&app);
#endif
  dualpipe::cli::add_version_command(&app, run);
  return dualpipe::cli::run_app(app, run, argc, argv);
}
