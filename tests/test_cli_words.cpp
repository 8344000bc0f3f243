// The command line's words and outputs: one vocabulary across commands, one
// JSON shape, messages that say what is wrong, outputs that fail loudly when
// they cannot be written.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "cli_run.h"

namespace dualpipe {
namespace {

using test_support::CliRun;
using test_support::one_line;
CliRun run(const std::string& args) { return test_support::run_cli(args, "", 60); }
void expect_error(const std::string& args, const std::string& fragment) { test_support::expect_cli_error(args, fragment); }
std::string temp_path(const std::string& name) { return ::testing::TempDir() + "dualpipe_words_" + name; }

// An output that cannot be written (a full disk: /dev/full) is an error with
// the system's reason, for every file a command writes and for stdout; it
// used to exit 0 with the report lost.
TEST(CliWords, AnOutputThatCannotBeWrittenIsAnError) {
  const std::string sim = "simulate -m 1f1b -p 2 -n 2 ";
  const std::string plan = "plan --preset llama-70b --global-batch 512 ";
  for (const std::string& args : std::vector<std::string>{
           sim + "-o /dev/full", sim + "--svg /dev/full", sim + "--trace /dev/full",
           "schedule -m 1f1b -p 2 -n 2 -o /dev/full", "compare -p 2 -n 4 -o /dev/full", plan + "-o /dev/full",
           plan + "--csv /dev/full", "search -p 2 -n 4 --iterations 1 --svg /dev/full"})
    expect_error(args, "No space left on device");
  // Standard output on a full disk.
  const CliRun r = test_support::run_command(std::string("{ ") + DUALPIPE_BINARY +
                                             " schedule -m 1f1b -p 2 -n 2 > /dev/full; }");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("cannot write the output to standard output: No space left on device"), std::string::npos)
      << r.out;
  EXPECT_TRUE(one_line(r.out)) << r.out;
}

// A CSV schedule saved with a UTF-8 byte-order mark reads as without one.
TEST(CliWords, AScheduleFileWithAByteOrderMarkIsRead) {
  const std::string path = temp_path("bom.csv");
  std::ofstream(path) << "\xEF\xBB\xBF" << "0F0,0B0\n1F0,1B0\n";
  const CliRun r = run("schedule --from " + path + " --format csv");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "0F0,0B0\n1F0,1B0\n");
}

// Where an output cannot be written because a part of its path is a file,
// the message names that file; it used to say "folder '/etc/passwd/x' does
// not exist".
TEST(CliWords, AnOutputUnderAFileNamesTheFile) {
  const std::string file = temp_path("plain_file");
  std::ofstream(file) << "x";
  expect_error("plan --preset llama-70b --global-batch 512 --csv " + file + "/sub/best.csv",
               "--csv '" + file + "/sub/best.csv': '" + file + "' is not a folder");
  expect_error("plan --preset llama-70b --global-batch 512 --csv " + temp_path("no_such_folder") + "/best.csv",
               "folder '" + temp_path("no_such_folder") + "' does not exist");
}

}  // namespace
}  // namespace dualpipe
