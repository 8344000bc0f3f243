// Terminal grid. Rules:
// - Scale: one column is the shortest positive action duration divided by k,
//   where k (1 up to the length of the longest label, "F19" = 3) is as large
//   as lets the whole step fit in kMaxColumns. When even k = 1 is too wide,
//   the step is squeezed into kMaxColumns and every action still takes at
//   least one column (a later action overwrites an earlier one's columns).
//   Zero-duration actions take no time and are not drawn.
// - A cell shows the op letter and micro-batch, "F12"; an F&B pair shows
//   "(12|7)" (forward's micro-batch | backward's). Where that does not fit:
//   "12|7", or the letter and the last digits ("F2"), or the last digits of
//   each half ("2|7"), or just the letter ("X" for a pair). Idle time is '.'.
// - Lowercase letters mark the rank's second stage, as the dark shade of the
//   SVG does: a rank's stages ordered by (stage - rank) mod S, the first
//   (stage = rank: DualPipe direction 0) upper case, the next lower case,
//   further ones alternating.
// - With colour, each cell also gets a background per kind (F orange, B
//   green, I blue, W purple; darker for the second stage) and a pair is split
//   into its forward and backward colours.
#include "pictures/grid.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <iterator>

#include "schedule/error.h"

namespace dp {
namespace {

constexpr int kMaxColumns = 200;
constexpr int kIdle = -1;

// ANSI SGR codes, indexed [kind * 2 + shade], kind F, B, I, W.
const char* const kStyle[8] = {
    "\x1b[30;48;5;216m", "\x1b[30;48;5;208m",  // F light orange, dark orange
    "\x1b[30;48;5;151m", "\x1b[30;48;5;71m",   // B light green, dark green
    "\x1b[30;48;5;153m", "\x1b[97;48;5;68m",   // I light blue, dark blue
    "\x1b[30;48;5;183m", "\x1b[97;48;5;98m",   // W light purple, dark purple
};
const char* const kIdleStyle = "\x1b[90m";
const char* const kReset = "\x1b[0m";
const char kLetter[4] = {'F', 'B', 'I', 'W'};

int kind(Op op) {
  switch (op) {
    case Op::F: return 0;
    case Op::B: return 1;
    case Op::I: return 2;
    default: return 3;  // W
  }
}

// Per rank, its stages in shade order (see the file comment).
std::vector<std::vector<int>> rank_stages(const Schedule& s, int S) {
  std::vector<std::vector<int>> held(s.actions.size());
  for (std::size_t r = 0; r < s.actions.size(); ++r) {
    auto& h = held[r];
    auto add = [&h](int st) {
      if (st >= 0 && std::find(h.begin(), h.end(), st) == h.end()) h.push_back(st);
    };
    for (const Action& a : s.actions[r]) {
      if (is_comm(a.op)) continue;
      add(a.stage);
      if (a.op == Op::FB) add(a.stage2);
    }
    const int rank = static_cast<int>(r);
    std::sort(h.begin(), h.end(), [&](int x, int y) {
      return ((x - rank) % S + S) % S < ((y - rank) % S + S) % S;
    });
  }
  return held;
}

int shade(const std::vector<int>& held, int stage) {
  auto it = std::find(held.begin(), held.end(), stage);
  return static_cast<int>(it - held.begin()) % 2;
}

// The last n digits of v (all of them if it has fewer).
std::string last_digits(int v, std::size_t n) {
  std::string d = std::to_string(v);
  return d.size() <= n ? d : d.substr(d.size() - n);
}

// The text of one cell `width` columns wide; see the file comment.
std::string cell_text(const Action& a, int sh, std::size_t width) {
  if (a.op == Op::FB) {
    // Parentheses keep a pair apart from a neighbour's digits: "f13(7|13)".
    std::string full = fmt::format("({}|{})", a.mb, a.mb2);
    if (full.size() <= width) return full;
    full = fmt::format("{}|{}", a.mb, a.mb2);
    if (full.size() <= width) return full;
    std::string brief = fmt::format("{}|{}", a.mb % 10, a.mb2 % 10);
    if (brief.size() <= width) return brief;
    return "X";
  }
  char letter = kLetter[kind(a.op)];
  if (sh) letter = static_cast<char>(std::tolower(static_cast<unsigned char>(letter)));
  if (width <= 1) return std::string(1, letter);
  return letter + last_digits(a.mb, width - 1);
}

// 1, 2, 5 times a power of ten, at least v.
double nice_step(double v) {
  double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= v) return m * p;
  return 10 * p;
}

}  // namespace

std::string terminal_grid(const Schedule& s, const SimResult& sim, bool color) {
  if (sim.timeline.size() != s.actions.size())
    throw Error("terminal_grid: the simulation has no timeline for this schedule");
  const int P = static_cast<int>(s.actions.size());

  int S = s.stages;
  double min_dur = 0;
  std::size_t label_len = 1;
  bool present[5] = {false, false, false, false, false};  // F, B, I, W, F&B
  for (int r = 0; r < P; ++r) {
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (is_comm(a.op)) continue;
      S = std::max({S, a.stage + 1, a.stage2 + 1});
      present[a.op == Op::FB ? 4 : kind(a.op)] = true;
      const double d = sim.timeline[r][i].end - sim.timeline[r][i].start;
      if (d > 0 && (min_dur == 0 || d < min_dur)) min_dur = d;
      if (a.op != Op::FB) label_len = std::max(label_len, 1 + std::to_string(a.mb).size());
    }
  }
  const auto held = rank_stages(s, std::max(S, 1));
  bool two_stages = false;
  for (const auto& h : held) two_stages = two_stages || h.size() > 1;

  // Columns per time unit (file comment).
  const double makespan = sim.makespan;
  double scale = 1;
  if (min_dur > 0) {
    const double slots = makespan / min_dur;  // shortest actions across the step
    const double k = std::min(static_cast<double>(label_len), std::floor(kMaxColumns / slots));
    scale = k >= 1 ? k / min_dur : kMaxColumns / makespan;
  }
  const int width = static_cast<int>(std::ceil(makespan * scale - 1e-9));

  // Lay every rank out as columns of (character, style).
  std::vector<std::string> chars(P, std::string(static_cast<std::size_t>(width), '.'));
  std::vector<std::vector<signed char>> styles(P, std::vector<signed char>(static_cast<std::size_t>(width), kIdle));
  for (int r = 0; r < P; ++r) {
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      const Span& sp = sim.timeline[r][i];
      if (is_comm(a.op) || sp.end <= sp.start) continue;
      int c0 = static_cast<int>(std::lround(sp.start * scale));
      int c1 = static_cast<int>(std::lround(sp.end * scale));
      c0 = std::min(c0, width - 1);
      c1 = std::min(std::max(c1, c0 + 1), width);
      const int sh = shade(held[r], a.stage);
      const std::string text = cell_text(a, sh, static_cast<std::size_t>(c1 - c0));
      // A pair's forward half takes the first half of its columns.
      const int mid = a.op == Op::FB ? c0 + (c1 - c0 + 1) / 2 : c1;
      const int second = a.op == Op::FB ? kind(Op::B) * 2 + shade(held[r], a.stage2) : 0;  // the backward half's style
      for (int c = c0; c < c1; ++c) {
        const std::size_t at = static_cast<std::size_t>(c - c0);
        chars[r][static_cast<std::size_t>(c)] = at < text.size() ? text[at] : ' ';
        styles[r][static_cast<std::size_t>(c)] =
            static_cast<signed char>(c < mid ? kind(a.op == Op::FB ? Op::F : a.op) * 2 + sh : second);
      }
    }
  }

  std::string out;
  auto o = std::back_inserter(out);
  const std::string label_fmt = fmt::format("r{{:<{}}}|", fmt::formatted_size("{}", std::max(P - 1, 0)) + 1);
  const std::size_t prefix = fmt::formatted_size(label_fmt, 0);

  // Time ruler: round times, at least 8 columns apart.
  if (width > 0) {
    std::string ruler(prefix, ' ');
    const double step = nice_step(8 / scale);
    for (long k = 0;; ++k) {
      const double t = static_cast<double>(k) * step;
      if (t > makespan + 1e-9) break;
      const std::size_t at = prefix + static_cast<std::size_t>(std::lround(t * scale));
      if (at < ruler.size()) continue;  // would run into the previous label
      ruler.resize(at, ' ');
      ruler += fmt::format("{:g}", t);
    }
    out += ruler;
    out += '\n';
  }

  for (int r = 0; r < P; ++r) {
    fmt::format_to(o, label_fmt, r);
    int current = kIdle - 1;  // no style yet
    for (int c = 0; c < width; ++c) {
      const int st = styles[r][static_cast<std::size_t>(c)];
      if (color && st != current) {
        out += kReset;
        out += st == kIdle ? kIdleStyle : kStyle[st];
        current = st;
      }
      out += chars[r][static_cast<std::size_t>(c)];
    }
    if (color) out += kReset;
    out += "|\n";
  }

  // Legend: the kinds present, the case rule where it applies, the scale.
  static const char* const kNames[4] = {"forward", "backward", "input grad", "weight grad"};
  auto swatch = [&](int style, const std::string& text) {
    if (color) out += kStyle[style];
    out += text;
    if (color) out += kReset;
  };
  for (int k = 0; k < 4; ++k) {
    if (!present[k]) continue;
    swatch(k * 2, std::string(1, kLetter[k]));
    fmt::format_to(o, " {}  ", kNames[k]);
  }
  if (present[4]) {
    swatch(0, "(a");
    out += "|";
    swatch(2, "b)");
    out += " F&B pair (F of a, B of b)  ";
  }
  if (two_stages) out += "lower case: the rank's second stage  ";
  fmt::format_to(o, ". idle  1 column = {:.3g} time units\n", 1 / scale);
  return out;
}

}  // namespace dp
