#include "schedule/csv.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "schedule/error.h"

namespace dp {

void write_csv(std::ostream& out, const Schedule& s) {
  for (const auto& rank : s.actions) {
    for (std::size_t i = 0; i < rank.size(); ++i) {
      if (i) out << ',';
      out << to_string(rank[i]);
    }
    out << '\n';
  }
}

std::string to_csv(const Schedule& s) {
  std::ostringstream os;
  write_csv(os, s);
  return os.str();
}

namespace {

bool blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

}  // namespace

Schedule read_csv(std::istream& in, const std::string& origin) {
  // Index limits keep a typo such as "0F99999999" from asking for gigabytes.
  constexpr int kMaxIndex = 10'000'000;
  Schedule s;
  s.method = "file";
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  while (!lines.empty() && blank(lines.back())) lines.pop_back();  // trailing newlines
  if (lines.empty()) throw Error(fmt::format("{}: empty schedule file: expected one row of actions per rank", origin));
  int max_stage = -1, max_mb = -1;
  for (std::size_t row = 0; row < lines.size(); ++row) {
    std::vector<Action> rank;
    std::string_view rest = lines[row];
    if (!rest.empty() && rest.back() == '\r') rest.remove_suffix(1);
    std::size_t cell = 0;
    while (true) {
      auto comma = rest.find(',');
      std::string_view text = rest.substr(0, comma);
      ++cell;
      if (!blank(std::string(text))) {
        Action a;
        try {
          a = parse_action(text);
        } catch (const Error& e) {
          throw Error(fmt::format("{}:{}, cell {}: {}", origin, row + 1, cell, e.what()));
        }
        int hi_stage = std::max(a.stage, a.stage2), hi_mb = std::max(a.mb, a.mb2);
        if (hi_stage > kMaxIndex || hi_mb > kMaxIndex)
          throw Error(fmt::format("{}:{}, cell {}: index in '{}' exceeds the limit of {}", origin, row + 1, cell,
                                  printable(text), kMaxIndex));
        max_stage = std::max(max_stage, hi_stage);
        max_mb = std::max(max_mb, hi_mb);
        rank.push_back(a);
      }
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    s.actions.push_back(std::move(rank));
  }
  if (max_stage < 0) throw Error(fmt::format("{}: no actions in the file", origin));
  s.ranks = static_cast<int>(s.actions.size());
  s.stages = max_stage + 1;
  s.micro_batches = max_mb + 1;
  return s;
}

Schedule read_csv_file(const std::string& path) {
  // A directory opens as a stream that reads nothing, which would be
  // reported as an empty file; say what it is instead.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(fmt::format("cannot read schedule file '{}': it is a directory", path));
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(fmt::format("cannot open schedule file '{}': {}", path,
                            errno ? std::strerror(errno) : "unknown error"));
  Schedule s = read_csv(in, path);
  if (in.bad()) throw Error(fmt::format("cannot read schedule file '{}': read error", path));
  return s;
}

}  // namespace dp
