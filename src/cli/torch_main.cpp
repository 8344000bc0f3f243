// dualpipe-torch: every dualpipe command, including those that need LibTorch
// (verify, train, bench, profile). `dualpipe` execs it for those, with the
// same arguments; it is not meant to be started by hand, but works the same.
#include "cli/app.h"
#include "cli/common.h"

int main(int argc, char** argv) {
  CLI::App app;
  dualpipe::cli::CommandRun run;
  dualpipe::cli::setup_app(app);
  dualpipe::cli::add_schedule_commands(&app, run);
  // In the order of torch_commands.h, which the dualpipe program lists.
  dualpipe::cli::add_verify_command(&app, run);
  dualpipe::cli::add_train_command(&app, run);
  dualpipe::cli::add_bench_command(&app, run);
  dualpipe::cli::add_profile_command(&app, run);
  dualpipe::cli::add_version_command(&app, run);
  return dualpipe::cli::run_app(app, run, argc, argv);
}
