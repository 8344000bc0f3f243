// dualpipe-torch: every dualpipe command, including those that need LibTorch
// (verify, train, bench, profile). `dualpipe` execs it for those, with the
// same arguments; it is not meant to be started by hand, but works the same.
#include "cli/app.h"
#include "cli/common.h"

int main(int argc, char** argv) {
  CLI::App app;
  dualpipe::cli::setup_app(app);
  dualpipe::cli::add_schedule_commands(&app);
  // In the order of torch_commands.h, which the dualpipe program lists.
  dualpipe::cli::run_verify(&app);
  dualpipe::cli::run_train(&app);
  dualpipe::cli::run_bench(&app);
  dualpipe::cli::run_profile(&app);
  dualpipe::cli::add_version_command(&app);
  return dualpipe::cli::run_app(app, argc, argv);
}
