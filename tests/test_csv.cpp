// The PyTorch-compatible CSV form: round trips and every kind of bad file.
#include <gtest/gtest.h>

#include <sstream>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "test_util.h"

namespace dualpipe {
namespace {

Schedule parse(const std::string& text) {
  std::istringstream in(text);
  return read_csv(in, "x.csv");
}

std::string error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Csv, RoundTripsGeneratedSchedules) {
  for (const char* m : {"dualpipe", "dualpipev", "1f1b", "gpipe"}) {
    Schedule s = generate(m, Shape{4, 12});
    for (const Schedule& form : {s, lower(s)}) {
      Schedule back = parse(to_csv(form));
      EXPECT_TRUE(test::same_actions(back, form)) << m;
      EXPECT_EQ(back.ranks, form.ranks);
      EXPECT_EQ(back.stages, form.stages);
      EXPECT_EQ(back.micro_batches, form.micro_batches);
    }
  }
}

// A schedule read from a file is named after it (it was "file", whichever
// file it was), in reports, JSON and pictures.
TEST(Csv, AScheduleReadFromAFileIsNamedAfterIt) {
  const Schedule s = read_csv_file(test::data_dir() + "/dualpipe_P4_N8.csv");
  EXPECT_EQ(s.method, "dualpipe_P4_N8.csv");
}

TEST(Csv, WritesOneRowPerRankInIssueOrder) {
  EXPECT_EQ(to_csv(one_f_one_b(Shape{2, 2})), "0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n");
}

TEST(Csv, ReadsPyTorchStyleDumps) {
  // Idle slots as empty cells, Windows line ends, trailing blank lines.
  Schedule s = parse("0F0,,0B0\r\n,1F0,1B0\r\n\n\n");
  ASSERT_EQ(s.ranks, 2);
  EXPECT_EQ(s.stages, 2);
  EXPECT_EQ(s.micro_batches, 1);
  EXPECT_EQ(to_string(s.actions[0][1]), "0B0");
  EXPECT_EQ(to_string(s.actions[1][0]), "1F0");
}

// A file saved by an editor that starts it with a UTF-8 byte-order mark
// (Excel, Notepad) reads as the same file without one, as a JSON file does.
TEST(Csv, AByteOrderMarkAtTheStartIsSkipped) {
  const Schedule s = parse("\xEF\xBB\xBF" "0F0,0B0\n1F0,1B0\n");
  ASSERT_EQ(s.ranks, 2);
  EXPECT_EQ(to_string(s.actions[0][0]), "0F0");
  // Only at the start: elsewhere the same bytes are a malformed action.
  EXPECT_NE(error_of("0F0,\xEF\xBB\xBF" "0B0\n").find("malformed action"), std::string::npos);
  // A mark alone is an empty file.
  EXPECT_EQ(error_of("\xEF\xBB\xBF"), "x.csv: empty schedule file: expected one row of actions per rank");
}

TEST(Csv, ErrorsNameFileLineAndCell) {
  EXPECT_EQ(error_of(""), "x.csv: empty schedule file: expected one row of actions per rank");
  // Blank rows are not an empty file: the message says what the file holds.
  EXPECT_EQ(error_of("\n\n"), "x.csv: no actions in 2 blank rows (2 bytes): expected one row of actions per rank");
  EXPECT_EQ(error_of(",,\n"), "x.csv: no actions in the file");
  std::string e = error_of("0F0,0B0\n1F0,1Q0\n");
  EXPECT_NE(e.find("x.csv:2, cell 2: malformed action '1Q0'"), std::string::npos) << e;
  e = error_of("(0F1;1B0\n");
  EXPECT_NE(e.find("x.csv:1, cell 1: malformed overlapped pair"), std::string::npos) << e;
  e = error_of("0F99999999\n");
  EXPECT_NE(e.find("exceeds the limit"), std::string::npos) << e;
}

TEST(Csv, MissingFileIsAnError) {
  EXPECT_THROW(read_csv_file("/nonexistent/dir/schedule.csv"), Error);
}

TEST(Csv, FileErrorsSayWhatIsWrong) {
  try {
    read_csv_file("/nonexistent/dir/schedule.csv");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
  // A directory opens as an empty stream; it used to be reported as an empty file.
  try {
    read_csv_file(::testing::TempDir());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("it is a directory"), std::string::npos) << e.what();
  }
}

TEST(Csv, BinaryCellsAreEscapedAndCutInErrors) {
  // Garbage bytes must not reach the terminal raw (escape sequences, NUL),
  // nor make the one-line error kilobytes long.
  std::string cell = "\x1b]0;pwned\x07";
  cell.push_back('\0');
  cell += std::string(500, 'z');
  std::string e = error_of(cell + "\n");
  EXPECT_NE(e.find("malformed action '\\x1b]0;pwned\\x07\\x00zzz"), std::string::npos) << e;
  EXPECT_NE(e.find("... (511 bytes)"), std::string::npos) << e;
  EXPECT_LT(e.size(), 300u) << e;
  for (char c : e) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << static_cast<int>(c);
  EXPECT_EQ(printable("0F1"), "0F1");
  EXPECT_EQ(printable(std::string("a\tb\xff", 4)), "a\\x09b\\xff");
}

TEST(Csv, AHugeIndexIsRefusedWithoutAllocatingForIt) {
  // A 21-byte file naming micro-batch
  // 9999999 declares 10^7 (stage, micro-batch) pairs; the checker refuses
  // it from the forward count before it builds any per-pair table.
  Schedule s = parse("0F9999999,0B9999999\n");
  EXPECT_EQ(s.micro_batches, 10'000'000);
  CheckReport rep = check(s);
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.errors.front().find("need 10000000 forwards but the schedule holds 1"), std::string::npos)
      << rep.errors.front();
}

}  // namespace
}  // namespace dualpipe
