#pragma once
// Helpers shared by the tests: reference files and schedule comparison.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "dualpipe/schedule/action.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/schedule.h"

namespace dualpipe::test {

// tests/data (the reference orders the generators are checked against), or
// $DUALPIPE_TEST_DATA.
inline std::string data_dir() {
  if (const char* env = std::getenv("DUALPIPE_TEST_DATA")) return env;
  return DUALPIPE_TEST_DATA_DIR;
}

// A schedule of `stages` stages and `micro_batches` micro-batches from action
// strings, one list per rank in issue order (method "test"; not checked).
inline Schedule schedule_of(int stages, int micro_batches, const std::vector<std::vector<std::string>>& rows) {
  Schedule s;
  s.method = "test";
  s.ranks = static_cast<int>(rows.size());
  s.stages = stages;
  s.micro_batches = micro_batches;
  for (const auto& row : rows) {
    s.actions.emplace_back();
    for (const std::string& t : row) s.actions.back().push_back(parse_action(t));
  }
  return s;
}

// Action-for-action equality with a message naming the first difference.
inline ::testing::AssertionResult same_actions(const Schedule& got, const Schedule& want) {
  if (got.actions.size() != want.actions.size())
    return ::testing::AssertionFailure() << "rank count " << got.actions.size() << " != " << want.actions.size();
  for (std::size_t r = 0; r < got.actions.size(); ++r) {
    const auto &g = got.actions[r], &w = want.actions[r];
    for (std::size_t p = 0; p < std::max(g.size(), w.size()); ++p) {
      std::string gs = p < g.size() ? to_string(g[p]) : "<end>";
      std::string ws = p < w.size() ? to_string(w[p]) : "<end>";
      if (gs != ws)
        return ::testing::AssertionFailure() << "rank " << r << ", position " << p << ": got " << gs << ", want "
                                             << ws;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace dualpipe::test
