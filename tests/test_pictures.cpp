// The three pictures of a simulated schedule: SVG timeline, Chrome trace and
// terminal grid.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "pictures/grid.h"
#include "pictures/svg.h"
#include "pictures/trace.h"
#include "schedule/generators.h"
#include "schedule/lower.h"
#include "sim/simulate.h"

namespace dp {
namespace {

Costs overlapped() {
  Costs c;
  c.FB = 2.5;
  return c;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

std::size_t count_ops(const Schedule& s, Op op) {
  std::size_t n = 0;
  for (const auto& rank : s.actions)
    for (const Action& a : rank) n += a.op == op;
  return n;
}

std::size_t count_compute(const Schedule& s) {
  std::size_t n = 0;
  for (const auto& rank : s.actions)
    for (const Action& a : rank) n += !is_comm(a.op);
  return n;
}

// Every tag closed, in order; "<?..", "<!--.." and "/>" handled. Returns the
// first problem, or "" when the document is balanced.
std::string check_balanced(const std::string& xml) {
  std::vector<std::string> open;
  std::size_t at = 0;
  while ((at = xml.find('<', at)) != std::string::npos) {
    const std::size_t end = xml.find('>', at);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(at);
    const std::string tag = xml.substr(at + 1, end - at - 1);
    at = end + 1;
    if (tag.empty() || tag[0] == '?' || tag[0] == '!') continue;
    if (tag.back() == '/') continue;
    const std::string name = tag.substr(tag[0] == '/' ? 1 : 0, tag.find_first_of(" \n/", 1) - (tag[0] == '/'));
    if (tag[0] != '/') {
      open.push_back(name);
    } else {
      if (open.empty() || open.back() != name) return "unexpected </" + name + ">";
      open.pop_back();
    }
  }
  return open.empty() ? "" : "unclosed <" + open.back() + ">";
}

// Every '&' starts one of the entities we write.
bool ampersands_escaped(const std::string& xml) {
  for (std::size_t at = xml.find('&'); at != std::string::npos; at = xml.find('&', at + 1)) {
    const std::string rest = xml.substr(at, 6);
    if (rest.rfind("&amp;", 0) && rest.rfind("&lt;", 0) && rest.rfind("&gt;", 0) && rest.rfind("&quot;", 0))
      return false;
  }
  return true;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string strip_ansi(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\x1b') {
      i = text.find('m', i);
      continue;
    }
    out += text[i];
  }
  return out;
}

TEST(PictureSvg, IsBalancedStandaloneSvg) {
  Schedule s = dualpipe(Shape{4, 8});
  std::string svg = timeline_svg(s, simulate(s, overlapped()), {"dualpipe P=4", "F=1 B=2 W=1 FB=2.5"});
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("viewBox=\"0 0 "), std::string::npos);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  EXPECT_EQ(check_balanced(svg), "");
  EXPECT_TRUE(ampersands_escaped(svg));
  EXPECT_NE(svg.find("dualpipe P=4"), std::string::npos);
  EXPECT_NE(svg.find("F=1 B=2 W=1 FB=2.5"), std::string::npos);
}

TEST(PictureSvg, OneCellPerActionAndOneFramePerPair) {
  Schedule s = dualpipe(Shape{4, 8});
  std::string svg = timeline_svg(s, simulate(s, overlapped()));
  std::size_t cells = 0;
  for (const char* cls : {"F0", "F1", "B0", "B1", "I0", "I1", "W0", "W1"})
    cells += count(svg, std::string("<rect class=\"") + cls + "\"");
  const std::size_t pairs = count_ops(s, Op::FB);
  ASSERT_GT(pairs, 0u);
  // A pair is drawn as two half cells inside one frame.
  EXPECT_EQ(cells, count_compute(s) + pairs);
  EXPECT_EQ(count(svg, "class=\"pair\""), pairs);
  EXPECT_EQ(count(svg, "<title>"), cells);
}

TEST(PictureSvg, LabelsEveryRankAndMicroBatch) {
  Schedule s = dualpipe(Shape{4, 8});
  std::string svg = timeline_svg(s, simulate(s, overlapped()));
  for (int r = 0; r < 4; ++r) EXPECT_NE(svg.find(">rank " + std::to_string(r) + "</text>"), std::string::npos) << r;
  for (int mb = 0; mb < 8; ++mb) EXPECT_NE(svg.find(">" + std::to_string(mb) + "</text>"), std::string::npos) << mb;
  // The legend names every kind the schedule uses.
  for (const char* name : {"F forward", "B backward", "I backward for input", "W backward for weights", "F&amp;B"})
    EXPECT_NE(svg.find(name), std::string::npos) << name;
}

TEST(PictureSvg, DarkShadeMarksTheSecondDirection) {
  // DualPipe: stage = rank is direction 0 (micro-batches < N/2), drawn
  // light; the other replica on a rank carries direction 1, drawn dark.
  Schedule s = dualpipe(Shape{4, 8});
  std::string svg = timeline_svg(s, simulate(s, overlapped()));
  std::size_t dark_f = 0, dark_b = 0;
  for (const auto& rank : s.actions)
    for (const Action& a : rank) {
      dark_f += (a.op == Op::F || a.op == Op::FB) && a.mb >= 4;
      dark_b += (a.op == Op::B && a.mb >= 4) || (a.op == Op::FB && a.mb2 >= 4);
    }
  EXPECT_EQ(count(svg, "<rect class=\"F1\""), dark_f);
  EXPECT_EQ(count(svg, "<rect class=\"B1\""), dark_b);
  // One-stage-per-rank schedules use the light shade only and say nothing of shades.
  Schedule one = one_f_one_b(Shape{4, 8});
  std::string plain = timeline_svg(one, simulate(one, Costs{}));
  EXPECT_EQ(count(plain, "<rect class=\"F1\""), 0u);
  EXPECT_EQ(count(plain, "<rect class=\"F0\""), 32u);
  EXPECT_EQ(plain.find("stage = rank"), std::string::npos);
  EXPECT_EQ(plain.find("I backward"), std::string::npos);
}

TEST(PictureSvg, EscapesTextAndSkipsCommActions) {
  Schedule s = one_f_one_b(Shape{3, 4});
  Schedule lowered = lower(s);
  ASSERT_TRUE(lowered.has_comm());
  std::string svg = timeline_svg(lowered, simulate(lowered, Costs{}), {"a<b & \"c\"", "x>y"});
  EXPECT_NE(svg.find("a&lt;b &amp; &quot;c&quot;"), std::string::npos);
  EXPECT_NE(svg.find("x&gt;y"), std::string::npos);
  EXPECT_EQ(check_balanced(svg), "");
  EXPECT_EQ(count(svg, "<rect class=\"F0\"") + count(svg, "<rect class=\"B0\""), count_compute(s));
}

TEST(PictureSvg, HugeScheduleDrawsWithoutText) {
  Schedule s = dualpipe(Shape{8, 3000});
  ASSERT_GT(count_compute(s), 20000u);
  std::string svg = timeline_svg(s, simulate(s, Costs{}));
  EXPECT_EQ(check_balanced(svg), "");
  EXPECT_EQ(svg.find("<text class=\"t"), std::string::npos);
  EXPECT_EQ(svg.find("<title>"), std::string::npos);
  EXPECT_NE(svg.find("<path class=\"F0\""), std::string::npos);
  EXPECT_LT(svg.size(), 64 * count_compute(s));  // a labelled cell alone takes ~190
  // The width is capped.
  const std::size_t w = svg.find("width=\"");
  EXPECT_LE(std::stod(svg.substr(w + 7)), 17000);
}

TEST(PictureTrace, OneCompleteEventPerComputeAction) {
  Schedule s = dualpipe(Shape{4, 8});
  SimResult sim = simulate(s, overlapped());
  const double us = 250;
  nlohmann::json j = nlohmann::json::parse(chrome_trace(s, sim, us));
  EXPECT_EQ(j["displayTimeUnit"], "ms");
  std::vector<nlohmann::json> xs;
  std::size_t threads = 0;
  for (const auto& e : j["traceEvents"]) {
    EXPECT_EQ(e["pid"], 0);
    if (e["ph"] == "X") xs.push_back(e);
    if (e["ph"] == "M" && e["name"] == "process_name") {
      EXPECT_EQ(e["args"]["name"], "dualpipe dualpipe");
    }
    if (e["ph"] == "M" && e["name"] == "thread_name") {
      EXPECT_EQ(e["args"]["name"], "rank " + std::to_string(e["tid"].get<int>()));
      ++threads;
    }
  }
  EXPECT_EQ(threads, 4u);
  ASSERT_EQ(xs.size(), count_compute(s));
  // Events come rank by rank, in issue order.
  std::size_t k = 0;
  for (std::size_t r = 0; r < s.actions.size(); ++r)
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      const Span& sp = sim.timeline[r][i];
      const auto& e = xs[k++];
      EXPECT_EQ(e["name"], to_string(a));
      EXPECT_EQ(e["cat"], op_name(a.op));
      EXPECT_EQ(e["tid"], r);
      EXPECT_DOUBLE_EQ(e["ts"].get<double>(), sp.start * us);
      EXPECT_DOUBLE_EQ(e["dur"].get<double>(), (sp.end - sp.start) * us);
    }
}

TEST(PictureTrace, EscapesTheMethodAndSkipsCommActions) {
  Schedule s = lower(one_f_one_b(Shape{3, 4}));
  s.method = "odd \"name\"\\\n";
  nlohmann::json j = nlohmann::json::parse(chrome_trace(s, simulate(s, Costs{})));
  std::size_t xs = 0;
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] == "X") ++xs;
    if (e["name"] == "process_name") {
      EXPECT_EQ(e["args"]["name"], "dualpipe " + s.method);
    }
  }
  EXPECT_EQ(xs, count_compute(s));
}

TEST(PictureGrid, OneRowPerRankOfEqualWidth) {
  Schedule s = dualpipe(Shape{8, 20});
  std::string grid = terminal_grid(s, simulate(s, Costs{}), false);
  EXPECT_EQ(grid.find('\x1b'), std::string::npos);
  for (char ch : grid) {
    EXPECT_TRUE(ch == '\n' || (ch >= 32 && ch < 127)) << int(ch);
  }
  auto lines = lines_of(grid);
  ASSERT_EQ(lines.size(), 8u + 2);  // ruler, ranks, legend
  EXPECT_EQ(lines[1].rfind("r0 |", 0), 0u);
  for (int r = 0; r < 8; ++r) {
    const std::string& row = lines[1 + static_cast<std::size_t>(r)];
    EXPECT_EQ(row.rfind("r" + std::to_string(r) + " |", 0), 0u) << row;
    EXPECT_EQ(row.size(), lines[1].size()) << row;
    EXPECT_EQ(row.back(), '|');
  }
  EXPECT_LE(lines[1].size(), 4u + 200 + 1);
  EXPECT_EQ(lines[0].substr(0, 5), "    0");
  EXPECT_NE(lines.back().find("F forward"), std::string::npos);
  // At default costs every label fits whole.
  EXPECT_NE(lines[1].find("F0 F1 F2"), std::string::npos);
  EXPECT_NE(grid.find("(14|0)"), std::string::npos);
}

TEST(PictureGrid, ColourAddsOnlyEscapes) {
  Schedule s = dualpipe(Shape{8, 20});
  SimResult sim = simulate(s, Costs{});
  std::string plain = terminal_grid(s, sim, false);
  std::string colour = terminal_grid(s, sim, true);
  EXPECT_NE(colour.find("\x1b["), std::string::npos);
  EXPECT_NE(colour.find("\x1b[0m"), std::string::npos);
  EXPECT_EQ(strip_ansi(colour), plain);
}

TEST(PictureGrid, CellsSitAtTheirTimes) {
  // 1F1B on 2 ranks, one micro-batch: F [0,1] B [4,6] on rank 0, F [1,2]
  // B [2,4] on rank 1. Shortest action 1 unit, labels 2 wide: 2 columns a unit.
  Schedule s = one_f_one_b(Shape{2, 1});
  auto lines = lines_of(terminal_grid(s, simulate(s, Costs{}), false));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[1], "r0 |F0......B0  |");
  EXPECT_EQ(lines[2], "r1 |..F0B0  ....|");
  EXPECT_NE(lines[3].find("1 column = 0.5 time units"), std::string::npos);
}

TEST(PictureGrid, SecondStageInLowerCase) {
  Schedule s = dualpipe(Shape{4, 8});
  auto lines = lines_of(terminal_grid(s, simulate(s, Costs{}), false));
  // Rank 0 runs direction 1 (micro-batches 4..7) on its second stage.
  EXPECT_NE(lines[1].find("f4"), std::string::npos) << lines[1];
  EXPECT_EQ(lines[1].find("F4"), std::string::npos) << lines[1];
  EXPECT_NE(lines.back().find("lower case"), std::string::npos);
}

TEST(PictureGrid, LongSchedulesAreSqueezed) {
  Schedule s = dualpipe(Shape{8, 200});
  const std::string grid = terminal_grid(s, simulate(s, Costs{}), false);
  auto lines = lines_of(grid);
  ASSERT_GE(lines.size(), 10u);  // ruler, 8 ranks, a legend of one line or more
  for (std::size_t r = 1; r <= 8; ++r) {
    EXPECT_EQ(lines[r].rfind("r" + std::to_string(r - 1) + " |", 0), 0u) << lines[r];
    EXPECT_EQ(lines[r].size(), lines[1].size());
    EXPECT_LE(lines[r].size(), 4u + 200 + 1);
  }
  EXPECT_NE(lines.back().find("1 column = "), std::string::npos);
  // Squeezing hides actions: the legend says so.
  EXPECT_NE(grid.find("squeezed"), std::string::npos);
}

}  // namespace
}  // namespace dp
