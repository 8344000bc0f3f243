#include "dualpipe/schedule/csv.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "dualpipe/schedule/error.h"

namespace dualpipe {

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

bool blank(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

std::string size_text(std::uint64_t bytes) {
  if (bytes >= (std::uint64_t{1} << 20) && bytes % (std::uint64_t{1} << 20) == 0)
    return fmt::format("{} MiB", bytes >> 20);
  return fmt::format("{} bytes", bytes);
}

// Reads a schedule cell by cell from blocks of the stream (see CsvLimits).
class CsvReader {
 public:
  CsvReader(const std::string& origin, const CsvLimits& limits) : origin_(origin), limits_(limits) {
    // Its name, so that reports and pictures say which file they show.
    const std::string name = std::filesystem::path(origin).filename().string();
    s_.method = name.empty() ? std::string("file") : name;
  }

  Schedule read(std::istream& in) {
    std::vector<char> block(1 << 16);
    while (in) {
      in.read(block.data(), static_cast<std::streamsize>(block.size()));
      const auto got = static_cast<std::size_t>(in.gcount());
      if (got == 0) break;
      const bool first = bytes_ == 0;
      bytes_ += got;
      if (bytes_ > limits_.max_bytes)
        throw Error(fmt::format("{}: more than {}, the limit for a schedule file; stopped reading there", origin_,
                                size_text(limits_.max_bytes)));
      // A UTF-8 byte-order mark (editors such as Notepad and Excel start a
      // file with one) is no part of the first cell, and no content.
      std::size_t i = 0;
      if (first && got >= 3 && std::string_view(block.data(), 3) == "\xEF\xBB\xBF") {
        i = 3;
        bytes_ -= 3;
      }
      for (; i < got; ++i) take(block[i]);
    }
    if (!cell_.empty() || cells_ > 0) end_row();  // a last row without its newline
    return finish();
  }

 private:
  void take(char c) {
    if (c == '\n') {
      end_row();
    } else if (c == ',') {
      end_cell();
    } else {
      if (cell_.size() >= limits_.max_cell)
        throw Error(fmt::format("{}:{}, cell {}: longer than {} bytes ('{}'): not an action string", origin_, row_ + 1,
                                cells_ + 1, limits_.max_cell, printable(cell_)));
      cell_ += c;
    }
  }

  void end_cell() {
    ++cells_;
    // A row is blank when it is one cell of blanks; ",," is a rank with no actions.
    if (cells_ > 1 || !blank(cell_)) row_blank_ = false;
    if (!blank(cell_)) {
      Action a;
      try {
        a = parse_action(cell_);
      } catch (const Error& e) {
        throw Error(fmt::format("{}:{}, cell {}: {}", origin_, row_ + 1, cells_, e.what()));
      }
      // Stage-only actions (UNSHARD, ...) do not declare stages: a wrong
      // index there is the checker's range error, with rank and position.
      const int hi_stage = is_stage_only(a.op) ? -1 : std::max(a.stage, a.stage2), hi_mb = std::max(a.mb, a.mb2);
      if (hi_stage > kMaxIndex || hi_mb > kMaxIndex)
        throw Error(fmt::format("{}:{}, cell {}: index in '{}' exceeds the limit of {}", origin_, row_ + 1, cells_,
                                printable(cell_), kMaxIndex));
      max_stage_ = std::max(max_stage_, hi_stage);
      max_mb_ = std::max(max_mb_, hi_mb);
      rank_.push_back(a);
    }
    cell_.clear();
  }

  void end_row() {
    if (!cell_.empty() && cell_.back() == '\r') cell_.pop_back();  // Windows line ends
    end_cell();
    ++row_;
    // Blank rows cost nothing until a row with actions follows them (then
    // they are ranks without actions); trailing ones are dropped.
    if (row_blank_) {
      ++pending_blank_;
    } else {
      if (s_.actions.size() + pending_blank_ + 1 > limits_.max_rows)
        throw Error(fmt::format("{}:{}: more than {} rows; a schedule has one row per rank", origin_, row_,
                                limits_.max_rows));
      s_.actions.resize(s_.actions.size() + pending_blank_);
      pending_blank_ = 0;
      s_.actions.push_back(std::move(rank_));
      rank_ = {};
    }
    cells_ = 0;
    row_blank_ = true;
    cell_.clear();
  }

  Schedule finish() {
    if (bytes_ == 0)
      throw Error(fmt::format("{}: empty schedule file: expected one row of actions per rank", origin_));
    if (s_.actions.empty())
      throw Error(fmt::format("{}: no actions in {} blank row{} ({} bytes): expected one row of actions per rank",
                              origin_, row_, row_ == 1 ? "" : "s", bytes_));
    if (max_stage_ < 0) throw Error(fmt::format("{}: no actions in the file", origin_));
    s_.ranks = static_cast<int>(s_.actions.size());
    s_.stages = max_stage_ + 1;
    s_.micro_batches = max_mb_ + 1;
    return std::move(s_);
  }

  // Index limits keep a typo such as "0F99999999" from asking for gigabytes.
  static constexpr int kMaxIndex = 10'000'000;
  const std::string& origin_;
  const CsvLimits& limits_;
  Schedule s_;
  std::vector<Action> rank_;  // the row being read
  std::string cell_;          // the cell being read
  std::size_t cells_ = 0;     // cells ended in this row
  bool row_blank_ = true;     // no cell of this row has had anything but blanks
  std::size_t row_ = 0;       // rows ended
  std::size_t pending_blank_ = 0;
  std::uint64_t bytes_ = 0;
  int max_stage_ = -1, max_mb_ = -1;
};

}  // namespace

Schedule read_csv(std::istream& in, const std::string& origin, const CsvLimits& limits) {
  return CsvReader(origin, limits).read(in);
}

Schedule read_csv_file(const std::string& path, const CsvLimits& limits) {
  // A directory opens as a stream that reads nothing, which would be
  // reported as an empty file; say what it is instead.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(fmt::format("cannot read schedule file '{}': it is a directory", path));
  // A regular file too large is refused before reading; anything else (a
  // pipe, /dev/zero) is read up to the limit.
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && std::filesystem::is_regular_file(path, ec) && size > limits.max_bytes)
    throw Error(fmt::format("schedule file '{}' has {} bytes, more than the limit of {}", path, size,
                            size_text(limits.max_bytes)));
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(fmt::format("cannot open schedule file '{}': {}", path,
                            errno ? std::strerror(errno) : "unknown error"));
  Schedule s = read_csv(in, path, limits);
  if (in.bad()) throw Error(fmt::format("cannot read schedule file '{}': read error", path));
  return s;
}

}  // namespace dualpipe
