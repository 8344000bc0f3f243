// dualpipe-torch: every dualpipe command, including those that need LibTorch
// (verify, train, bench, profile). `dualpipe` execs it for those, with the
// same arguments; it is not meant to be started by hand, but works the same.
#include "cli/app.h"
#include "cli/common.h"

int main(int argc, char** argv) {
  CLI::App app;
  dp::cli::setup_app(app);
  dp::cli::add_schedule_commands(&app);
  // In the order of torch_commands.h, which the dualpipe program lists.
  dp::cli::run_verify(&app);
  dp::cli::run_train(&app);
  dp::cli::run_bench(&app);
  dp::cli::run_profile(&app);
  dp::cli::add_version_command(&app);
  return dp::cli::run_app(app, argc, argv);
}
