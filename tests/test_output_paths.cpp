// The check that an output file can be written, made before a long run
// starts. Several runs started in one folder probe the same default names
// (train_loss.csv) at once; one run's probe must not be taken for a file
// that is in the way of another.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include "cli/output_paths.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

TEST(OutputPaths, ProbesOfOneNameAtOnceAllPassAndLeaveNothing) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / "dualpipe_output_probe";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "train_loss.csv").string();
  auto probe = [&] {
    int failures = 0;
    for (int i = 0; i < 2000; ++i) {
      try {
        cli::require_output_file("--loss-csv", path);
      } catch (const Error&) {
        ++failures;
      }
    }
    return failures;
  };
  std::vector<std::future<int>> probes;
  for (int t = 0; t < 4; ++t) probes.push_back(std::async(std::launch::async, probe));
  for (auto& p : probes) EXPECT_EQ(p.get(), 0);
  EXPECT_TRUE(fs::is_empty(dir));  // every probe took its file away again
  fs::remove_all(dir);
}

TEST(OutputPaths, AFileInTheWayIsStillNamed) {
  EXPECT_THROW(cli::require_output_file("--loss-csv", "/proc/version/x.csv"), Error);
  EXPECT_THROW(cli::require_output_file("--loss-csv", ""), Error);
}

}  // namespace
}  // namespace dualpipe
