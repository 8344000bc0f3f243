// The PyTorch-compatible CSV form: round trips and every kind of bad file.
#include <gtest/gtest.h>

#include <sstream>

#include "schedule/error.h"
#include "schedule/generators.h"
#include "schedule/lower.h"
#include "test_util.h"

namespace dp {
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

TEST(Csv, ErrorsNameFileLineAndCell) {
  EXPECT_EQ(error_of(""), "x.csv: empty schedule file: expected one row of actions per rank");
  EXPECT_EQ(error_of("\n\n"), "x.csv: empty schedule file: expected one row of actions per rank");
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

}  // namespace
}  // namespace dp
