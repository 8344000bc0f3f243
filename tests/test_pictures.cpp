// The three pictures of a simulated schedule: SVG timeline, Chrome trace and
// terminal grid.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <utility>

#include "dualpipe/pictures/grid.h"
#include "pictures/palette.h"
#include "dualpipe/pictures/svg.h"
#include "dualpipe/pictures/trace.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe {
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
}  // namespace dualpipe

// pictures that stay truthful and readable at any shape.
namespace dualpipe {
namespace {

// The cell texts of one grid row, left to right.
std::vector<std::string> cell_tokens(const std::string& row) {
  std::vector<std::string> out;
  const std::string body = row.substr(row.find('|') + 1);
  std::size_t i = 0;
  while (i < body.size()) {
    const char c = body[i];
    if (c == '.' || c == ' ' || c == '|') {
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    if (c == '(') {
      j = body.find(')', i) + 1;
    } else {
      // A token: optional chunk digits, a letter, digits; or a pair "a|b"; or '&'.
      while (j < body.size() && std::isdigit(static_cast<unsigned char>(body[j]))) ++j;
      if (std::isdigit(static_cast<unsigned char>(c)) && j < body.size() && body[j] == '|') {
        ++j;
        while (j < body.size() && std::isdigit(static_cast<unsigned char>(body[j]))) ++j;
      } else if (j < body.size() && body[j] == ':') {  // "F2:13": chunk 2, micro-batch 13
        ++j;
        while (j < body.size() && std::isdigit(static_cast<unsigned char>(body[j]))) ++j;
      }
    }
    out.push_back(body.substr(i, j - i));
    i = j;
  }
  return out;
}

// Every numbered cell shows its action's whole number: the k-th token of a
// row is the k-th compute action of that rank (the grid is not squeezed here).
void expect_whole_numbers(const Schedule& s, const std::string& grid) {
  auto lines = lines_of(grid);
  for (std::size_t r = 0; r < s.actions.size(); ++r) {
    const auto tokens = cell_tokens(lines[1 + r]);
    std::vector<Action> compute;
    for (const Action& a : s.actions[r])
      if (is_compute(a.op)) compute.push_back(a);
    ASSERT_EQ(tokens.size(), compute.size()) << lines[1 + r];
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      const Action& a = compute[k];
      const std::string& t = tokens[k];
      if (a.op == Op::FB) {
        EXPECT_TRUE(t == "&" || t == fmt::format("({}|{})", a.mb, a.mb2) || t == fmt::format("{}|{}", a.mb, a.mb2))
            << "rank " << r << " token " << t << " for " << to_string(a);
        continue;
      }
      const std::string digits = t.substr(t.find(':') == std::string::npos ? 1 : t.find(':') + 1);
      EXPECT_TRUE(digits.empty() || digits == std::to_string(a.mb))
          << "rank " << r << " token " << t << " for " << to_string(a) << "\n" << lines[1 + r];
    }
  }
}

TEST(PictureGrid, NumbersAreNeverCut) {
  // ZB-V at N=16 used to show micro-batches 10..15 as "F0".."F5".
  for (const auto& [m, N] : std::vector<std::pair<const char*, int>>{{"zbv", 16}, {"1f1b", 12}, {"dualpipe", 24}}) {
    Schedule s = generate(m, Shape{4, N});
    expect_whole_numbers(s, terminal_grid(s, simulate(s, Costs{}), GridOptions{false, 0}));
  }
}

TEST(PictureGrid, FitsTheGivenWidth) {
  Schedule s = dualpipe(Shape{8, 20});
  SimResult sim = simulate(s, Costs{});
  // Squeezed, with more than two chunks: the longest legend items.
  Schedule il = interleaved_1f1b(Shape{3, 12, 3});
  const std::string narrow = terminal_grid(il, simulate(il, Costs{}), GridOptions{false, 40});
  for (const std::string& line : lines_of(narrow)) EXPECT_LE(line.size(), 40u) << line;
  for (int columns : {40, 60, 100, 150}) {
    const std::string plain = terminal_grid(s, sim, GridOptions{false, columns});
    for (const std::string& line : lines_of(plain)) EXPECT_LE(line.size(), static_cast<std::size_t>(columns)) << line;
    const std::string colour = terminal_grid(s, sim, GridOptions{true, columns});
    for (const std::string& line : lines_of(strip_ansi(colour)))
      EXPECT_LE(line.size(), static_cast<std::size_t>(columns)) << line;
  }
}

// Every symbol in the rows is one the legend explains.
TEST(PictureGrid, EverySymbolIsExplained) {
  for (int columns : {60, 0}) {
    Schedule s = dualpipe(Shape{8, 20});
    const std::string grid = terminal_grid(s, simulate(s, Costs{}), GridOptions{false, columns});
    auto lines = lines_of(grid);
    std::string legend;
    for (std::size_t i = 9; i < lines.size(); ++i) legend += lines[i] + "\n";
    for (std::size_t r = 1; r <= 8; ++r)
      for (char c : lines[r].substr(lines[r].find('|'))) {
        if (c == '&') {
          EXPECT_NE(legend.find("& pair too short"), std::string::npos) << legend;
        }
        if (c == '(') {
          EXPECT_NE(legend.find("(a|b) F&B pair"), std::string::npos) << legend;
        }
        if (std::islower(static_cast<unsigned char>(c))) {
          EXPECT_NE(legend.find("lower case"), std::string::npos);
        }
        if (std::isupper(static_cast<unsigned char>(c))) {
          EXPECT_NE(legend.find(std::string(1, c) + " "), std::string::npos) << c << "\n" << legend;
        }
      }
  }
}

TEST(PictureGrid, MoreThanTwoChunksAreNumbered) {
  Schedule s = interleaved_1f1b(Shape{2, 4, 4});
  const std::string grid = terminal_grid(s, simulate(s, Costs{}), GridOptions{false, 400});
  auto lines = lines_of(grid);
  EXPECT_NE(grid.find("F2:13: forward of chunk 2"), std::string::npos) << grid;
  for (std::size_t r = 0; r < 2; ++r) {
    const auto tokens = cell_tokens(lines[1 + r]);
    std::vector<Action> compute;
    for (const Action& a : s.actions[r])
      if (is_compute(a.op)) compute.push_back(a);
    ASSERT_EQ(tokens.size(), compute.size()) << lines[1 + r];
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      const int chunk = compute[k].stage / 2;  // stage = chunk * P + rank
      // The whole label, or (too short for the number) the letter and chunk.
      const std::string whole = fmt::format("{}{}:{}", op_name(compute[k].op), chunk, compute[k].mb);
      EXPECT_TRUE(tokens[k] == whole || tokens[k] == whole.substr(0, whole.find(':'))) << tokens[k] << " " << whole;
    }
  }
}

TEST(PictureGrid, LegendShowsOnlyWhatIsThere) {
  Schedule zbv = generate("zbv", Shape{4, 8});
  const std::string g = terminal_grid(zbv, simulate(zbv, Costs{}), GridOptions{false, 0});
  const std::string legend = lines_of(g).back();
  EXPECT_EQ(legend.find("B backward"), std::string::npos) << legend;
  EXPECT_EQ(legend.find("F&B"), std::string::npos) << legend;
  Schedule one = one_f_one_b(Shape{4, 8});
  const std::string g1 = terminal_grid(one, simulate(one, Costs{}), GridOptions{false, 0});
  EXPECT_EQ(g1.find("lower case"), std::string::npos) << g1;
  EXPECT_EQ(g1.find("I input"), std::string::npos) << g1;
}

TEST(PictureSvg, LegendShowsOnlyWhatIsThereInTheMethodsWords) {
  auto legend_of = [](const Schedule& s) {
    const std::string svg = timeline_svg(s, simulate(s, Costs{}));
    return svg.substr(svg.find("<g id=\"legend\">"));
  };
  // ZB-V has no B: no B swatch, light or dark, and no B entry.
  const std::string zbv = legend_of(generate("zbv", Shape{4, 8}));
  EXPECT_EQ(zbv.find("B backward"), std::string::npos);
  EXPECT_EQ(zbv.find(kKindColours[1].light), std::string::npos) << zbv;
  EXPECT_EQ(zbv.find(kKindColours[1].dark), std::string::npos) << zbv;
  // DualPipe's words only for DualPipe.
  for (const char* m : {"chimera", "interleaved-1f1b", "zbv"}) {
    const std::string l = legend_of(generate(m, Shape{4, 8}));
    EXPECT_EQ(l.find("DualPipe"), std::string::npos) << m << l;
    EXPECT_EQ(l.find("direction"), std::string::npos) << m << l;
    EXPECT_NE(l.find("stage = rank"), std::string::npos) << m << l;
  }
  EXPECT_NE(legend_of(dualpipe(Shape{4, 8})).find("direction 1"), std::string::npos);
}

TEST(PictureSvg, MoreThanTwoChunksGetTheirOwnShades) {
  Schedule s = interleaved_1f1b(Shape{2, 4, 4});
  const std::string svg = timeline_svg(s, simulate(s, Costs{}));
  for (int c = 0; c < 4; ++c) EXPECT_EQ(count(svg, fmt::format("<rect class=\"F{}\"", c)), 8u) << c;
  for (int c = 0; c < 4; ++c) EXPECT_NE(svg.find(fmt::format("chunk {}", c)), std::string::npos) << c;
}

// Colour blindness: Machado, Oliveira and Fernandes (2009), severity 1, on
// linear sRGB; distances in CIELAB (delta E 1976).
struct Lab {
  double L, a, b;
};
double srgb_to_linear(int v) {
  const double c = v / 255.0;
  return c <= 0.04045 ? c / 12.92 : std::pow((c + 0.055) / 1.055, 2.4);
}
Lab simulated_lab(const char* hex, const double m[3][3]) {
  const long v = std::strtol(hex + 1, nullptr, 16);
  const double rgb[3] = {srgb_to_linear(static_cast<int>((v >> 16) & 255)),
                         srgb_to_linear(static_cast<int>((v >> 8) & 255)), srgb_to_linear(static_cast<int>(v & 255))};
  double l[3];
  for (int i = 0; i < 3; ++i) l[i] = std::clamp(m[i][0] * rgb[0] + m[i][1] * rgb[1] + m[i][2] * rgb[2], 0.0, 1.0);
  const double X = 0.4124 * l[0] + 0.3576 * l[1] + 0.1805 * l[2];
  const double Y = 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
  const double Z = 0.0193 * l[0] + 0.1192 * l[1] + 0.9505 * l[2];
  auto f = [](double t) { return t > 216.0 / 24389 ? std::cbrt(t) : (24389.0 / 27 * t + 16) / 116; };
  const double fx = f(X / 0.95047), fy = f(Y), fz = f(Z / 1.08883);
  return {116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)};
}
double delta_e(const Lab& x, const Lab& y) { return std::hypot(x.L - y.L, x.a - y.a, x.b - y.b); }

TEST(PictureSvg, KindsStayApartForColourBlindReaders) {
  const double identity[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  const double deuteranopia[3][3] = {
      {0.367322, 0.860646, -0.227968}, {0.280085, 0.672501, 0.047413}, {-0.011820, 0.042940, 0.968881}};
  const double protanopia[3][3] = {
      {0.152286, 1.052583, -0.204868}, {0.114503, 0.786281, 0.099216}, {-0.003882, -0.048116, 1.051998}};
  for (const auto* m : {identity, deuteranopia, protanopia}) {
    for (int i = 0; i < 4; ++i) {
      // Light and dark of one kind (a rank's two stages) stay apart.
      EXPECT_GE(delta_e(simulated_lab(kKindColours[i].light, m), simulated_lab(kKindColours[i].dark, m)), 15) << i;
      for (int j = i + 1; j < 4; ++j) {
        EXPECT_GE(delta_e(simulated_lab(kKindColours[i].light, m), simulated_lab(kKindColours[j].light, m)), 12)
            << kKindColours[i].name << " / " << kKindColours[j].name;
        EXPECT_GE(delta_e(simulated_lab(kKindColours[i].dark, m), simulated_lab(kKindColours[j].dark, m)), 12)
            << kKindColours[i].name << " / " << kKindColours[j].name;
      }
    }
  }
}

// The x of every axis label below the chart, left to right.
std::vector<double> axis_label_xs(const std::string& svg, double* bottom_y = nullptr) {
  std::vector<std::pair<double, double>> all;  // (y, x)
  for (std::size_t at = svg.find("<text class=\"ax\" x=\""); at != std::string::npos;
       at = svg.find("<text class=\"ax\" x=\"", at + 1)) {
    const double x = std::stod(svg.substr(at + 20));
    const std::size_t y_at = svg.find("y=\"", at) + 3;
    all.push_back({std::stod(svg.substr(y_at)), x});
  }
  double y = 0;
  for (const auto& p : all) y = std::max(y, p.first);
  std::vector<double> xs;
  for (const auto& p : all)
    if (p.first == y - 16 || (p.first < y && p.first > y - 20)) xs.push_back(p.second);  // ticks sit above the title
  if (bottom_y) *bottom_y = y;
  return xs;
}

TEST(PictureSvg, LargeShapesStayReadable) {
  Schedule s = dualpipe(Shape{32, 64});
  SimResult sim = simulate(s, Costs{});
  SvgOptions o;
  o.width = 1600;
  const std::string svg = timeline_svg(s, sim, o);
  EXPECT_EQ(check_balanced(svg), "");
  EXPECT_NE(svg.find("width=\"1600\""), std::string::npos);
  for (int r = 0; r < 32; ++r) EXPECT_NE(svg.find(">rank " + std::to_string(r) + "</text>"), std::string::npos) << r;
  // Axis labels at least 60 px apart, below and (32 rows) above the chart.
  const auto xs = axis_label_xs(svg);
  ASSERT_GE(xs.size(), 3u);
  for (std::size_t i = 1; i < xs.size(); ++i) EXPECT_GE(xs[i] - xs[i - 1], 59.9);
  EXPECT_EQ(count(svg, "<text class=\"ax\""), 2 * xs.size() + 1);
  // Numbers are thinned rather than overprinted: each one drawn fits its cell.
  std::size_t numbers = 0;
  for (std::size_t at = svg.find("<rect class=\""); at != std::string::npos; at = svg.find("<rect class=\"", at + 1)) {
    const std::size_t w_at = svg.find("width=\"", at) + 7;
    const double w = std::stod(svg.substr(w_at));
    const std::size_t next = svg.find('\n', svg.find("</rect>", at));
    if (svg.compare(next + 1, 14, "<text class=\"t") != 0) continue;
    ++numbers;
    const std::size_t gt = svg.find('>', next + 1) + 1;
    const std::string num = svg.substr(gt, svg.find('<', gt) - gt);
    EXPECT_GE(w, 0.6 * 11 * static_cast<double>(num.size())) << num;
  }
  EXPECT_GT(numbers, 0u);
}

TEST(PictureSvg, TimeAndRankRangesDrawPartOfTheStep) {
  Schedule s = dualpipe(Shape{8, 20});
  SimResult sim = simulate(s, Costs{});
  SvgOptions o;
  parse_range("--svg-time", "10:30", o.time_from, o.time_to);
  o.rank_from = 2;
  o.rank_to = 5;
  const std::string svg = timeline_svg(s, sim, o);
  EXPECT_EQ(check_balanced(svg), "");
  for (int r = 0; r < 8; ++r)
    EXPECT_EQ(svg.find(">rank " + std::to_string(r) + "</text>") != std::string::npos, r >= 2 && r <= 5) << r;
  // Cells lie inside the chart: from the left margin to the range's end.
  double right = 0;
  for (std::size_t at = svg.find("<rect class=\""); at != std::string::npos; at = svg.find("<rect class=\"", at + 1)) {
    if (svg.compare(at, 17, "<rect class=\"row\"") == 0) continue;
    const double x = std::stod(svg.substr(svg.find("x=\"", at) + 3));
    const double w = std::stod(svg.substr(svg.find("width=\"", at) + 7));
    EXPECT_GE(x, 84 - 1e-9);
    right = std::max(right, x + w);
  }
  const std::size_t row_w = svg.find("width=\"", svg.find("<rect class=\"row\"")) + 7;
  EXPECT_LE(right, 84 + std::stod(svg.substr(row_w)) + 1e-6);
  EXPECT_NE(svg.find(">10</text>"), std::string::npos);  // the axis starts at the range
  EXPECT_NE(svg.find("showing 10 to 30"), std::string::npos);
  std::optional<double> a, b;
  EXPECT_THROW(parse_range("--svg-time", "abc", a, b), Error);
  o.rank_to = 9;
  EXPECT_THROW(timeline_svg(s, sim, o), Error);
}

}  // namespace
}  // namespace dualpipe

namespace dualpipe {
namespace {

// A crop says which ranks of how many it draws, in the title; the whole
// picture's title is left as given.
TEST(PictureSvg, RankCropSaysWhichRanksOfHowMany) {
  Schedule s = dualpipe(Shape{8, 20});
  SimResult sim = simulate(s, Costs{});
  SvgOptions o("dualpipe P=8");
  EXPECT_NE(timeline_svg(s, sim, o).find(">dualpipe P=8</text>"), std::string::npos);
  o.rank_from = 2;
  o.rank_to = 5;
  EXPECT_NE(timeline_svg(s, sim, o).find(">dualpipe P=8  (ranks 2-5 of 8)</text>"), std::string::npos);
  o.title.clear();
  o.rank_from = 0;
  o.rank_to = 0;
  EXPECT_NE(timeline_svg(s, sim, o).find(">rank 0 of 8</text>"), std::string::npos);
}

}  // namespace
}  // namespace dualpipe
