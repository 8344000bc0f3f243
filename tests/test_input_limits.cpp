// Input files have a size limit: a schedule or a corpus that never ends
// (/dev/zero), or a huge file, is refused with one line, never read into
// memory without end, and never called "empty".
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "cli_run.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/error.h"
#include "schedule/text_file.h"

namespace dualpipe {
namespace {

std::string csv_error(const std::string& text, const CsvLimits& limits) {
  std::istringstream in(text);
  try {
    read_csv(in, "x.csv", limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string temp_path(const std::string& name) { return test_support::temp_file("dualpipe_limits_", name); }

TEST(InputLimits, CsvStopsAtTheByteLimit) {
  std::string text;
  for (int i = 0; i < 500; ++i) text += "0F0,";
  CsvLimits small;
  small.max_bytes = 1000;
  const std::string e = csv_error(text, small);
  EXPECT_NE(e.find("x.csv: more than 1000 bytes, the limit for a schedule file"), std::string::npos) << e;
}

TEST(InputLimits, CsvCellsAndRowsHaveLimits) {
  CsvLimits limits;
  limits.max_cell = 16;
  std::string e = csv_error("0F0," + std::string(40, 'x') + "\n", limits);
  EXPECT_NE(e.find("x.csv:1, cell 2: longer than 16 bytes"), std::string::npos) << e;
  limits = CsvLimits{};
  limits.max_rows = 3;
  e = csv_error("0F0\n1F0\n2F0\n3F0\n", limits);
  EXPECT_NE(e.find("x.csv:4: more than 3 rows"), std::string::npos) << e;
  // Blank rows inside still make ranks without actions; trailing ones do not count.
  std::istringstream in("\n0F0,0B0\n\n\n\n\n");
  Schedule s = read_csv(in, "x.csv", limits);
  EXPECT_EQ(s.ranks, 2);
  EXPECT_TRUE(s.actions[0].empty());
}

TEST(InputLimits, BlankRowsAreNotAnEmptyFile) {
  std::istringstream in(std::string(100000, '\n'));
  try {
    read_csv(in, "x.csv");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no actions in 100000 blank rows (100000 bytes)"), std::string::npos)
        << e.what();
  }
}

TEST(InputLimits, LargeRegularFileIsRefusedBeforeReading) {
  const std::string path = temp_path("big.csv");
  std::ofstream(path) << std::string(5000, ',') << "\n";
  CsvLimits limits;
  limits.max_bytes = 4096;
  try {
    read_csv_file(path, limits);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has 5001 bytes, more than the limit of 4096 bytes"), std::string::npos)
        << e.what();
  }
}

TEST(InputLimits, TextFileReaderHasALimit) {
  const std::string path = temp_path("corpus.txt");
  std::ofstream(path) << "hello world";
  EXPECT_EQ(read_text_file(path, 100, "corpus file"), "hello world");
  try {
    read_text_file(path, 5, "corpus file");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corpus file '" + path + "' has 11 bytes, more than the limit of 5 bytes"),
              std::string::npos)
        << e.what();
  }
  // A device that never ends stops at the limit.
  try {
    read_text_file("/dev/zero", 1 << 20, "corpus file");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is larger than the limit of 1 MiB"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_text_file(temp_path("missing.txt"), 100, "corpus file"), Error);
}

// The program itself, under a memory limit: before the limits, /dev/zero
// grew without end and 40 MB of blank rows took gigabytes, then were
// reported as an empty file.
TEST(InputLimits, CommandLineRefusesEndlessAndHugeInput) {
  const std::string blank = temp_path("blank.csv");
  {
    std::ofstream out(blank, std::ios::binary);
    const std::string block(1 << 20, '\n');
    for (int i = 0; i < 40; ++i) out << block;
  }
  const std::string limit = "ulimit -v 3000000; ";
  test_support::CliRun zero =
      test_support::run_command(limit + "timeout -k 5 60 " DUALPIPE_BINARY " schedule --from /dev/zero");
  EXPECT_EQ(zero.code, 2) << zero.out;
  EXPECT_NE(zero.out.find("/dev/zero:1, cell 1: longer than 1024 bytes"), std::string::npos) << zero.out;
  test_support::CliRun rows =
      test_support::run_command(limit + "timeout -k 5 60 " DUALPIPE_BINARY " simulate --from " + blank);
  EXPECT_EQ(rows.code, 2) << rows.out;
  EXPECT_NE(rows.out.find("no actions in 41943040 blank rows"), std::string::npos) << rows.out;
  EXPECT_EQ(rows.out.find("empty"), std::string::npos) << rows.out;
}

}  // namespace
}  // namespace dualpipe
