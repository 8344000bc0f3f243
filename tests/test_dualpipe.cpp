// DualPipe and DualPipeV against the reference orders, action for action.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "test_util.h"

namespace dualpipe {
namespace {

TEST(DualPipe, MatchesEveryReferenceFile) {
  namespace fs = std::filesystem;
  const fs::path dir = test::data_dir();
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  const std::regex name(R"((dualpipev?)_P(\d+)_N(\d+)\.csv)");
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::smatch m;
    std::string fname = entry.path().filename().string();
    if (!std::regex_match(fname, m, name)) continue;
    ++files;
    Schedule want = read_csv_file(entry.path().string());
    Schedule got = generate(m[1], Shape{std::stoi(m[2]), std::stoi(m[3])});
    EXPECT_TRUE(test::same_actions(got, want)) << fname;
    EXPECT_TRUE(check(got).ok()) << fname;
  }
  EXPECT_GE(files, 3);
}

// DualPipeV(P, N) is ranks 0..P-1 of DualPipe(2P, 2N), with DualPipe's
// second-direction micro-batches N..2N-1 renamed 0..N-1.
TEST(DualPipeV, IsTheFirstHalfOfDualPipe) {
  for (int P = 1; P <= 12; ++P) {
    for (int N = 1; N <= 4 * P + 3; ++N) {
      Schedule v = dualpipev(Shape{P, N});
      Schedule d = dualpipe(Shape{2 * P, 2 * N});
      Schedule half = v;
      for (int r = 0; r < P; ++r) {
        half.actions[r] = d.actions[r];
        for (Action& a : half.actions[r]) {
          if (a.mb >= N) a.mb -= N;
          if (a.mb2 >= N) a.mb2 -= N;
        }
      }
      ASSERT_TRUE(test::same_actions(v, half)) << "P=" << P << " N=" << N;
    }
  }
}

TEST(DualPipe, EveryShapeIsValidIncludingShortRuns) {
  for (int P = 2; P <= 16; P += 2)
    for (int N = 2; N <= 3 * P + 4; N += 2) {
      CheckReport rep = check(dualpipe(Shape{P, N}));
      ASSERT_TRUE(rep.ok()) << "P=" << P << " N=" << N << ": " << rep.errors.front();
    }
  for (int P = 1; P <= 10; ++P)
    for (int N = 1; N <= 3 * P + 3; ++N) {
      CheckReport rep = check(dualpipev(Shape{P, N}));
      ASSERT_TRUE(rep.ok()) << "P=" << P << " N=" << N << ": " << rep.errors.front();
    }
}

TEST(DualPipe, RejectsUnsupportedShapesWithTheRange) {
  auto message = [](const Shape& s) {
    try {
      dualpipe(s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({3, 8}).find("even number of ranks"), std::string::npos);
  EXPECT_NE(message({0, 8}).find("at least 2"), std::string::npos);
  EXPECT_NE(message({4, 7}).find("even number of micro-batches"), std::string::npos);
  EXPECT_NE(message({4, 0}).find("at least 2"), std::string::npos);
  EXPECT_THROW(dualpipev(Shape{0, 4}), Error);
  EXPECT_THROW(dualpipev(Shape{4, 0}), Error);
}

}  // namespace
}  // namespace dualpipe
