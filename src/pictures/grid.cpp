// Terminal grid. Rules:
// - Width: the picture fits GridOptions::columns (the CLI passes the
//   terminal's width); the chart is what is left after the "r12|" labels and
//   the closing '|'.
// - Scale: one column is the shortest positive action duration divided by k,
//   where k (1 up to the length of the longest label, "F19" = 3) is as large
//   as lets the whole step fit. When even k = 1 is too wide, the step is
//   squeezed into the chart and every action still takes at least one column
//   (a later action overwrites an earlier one's columns; the legend says so).
//   Zero-duration actions (and UNSHARD, RESHARD, REDUCE_GRAD, which take no
//   simulated time) are not drawn.
// - A cell shows the op letter and micro-batch, "F12"; an F&B pair shows
//   "(12|7)" (forward's micro-batch | backward's) or "12|7", an F&F pair
//   its two forwards' micro-batches the same way. A number is
//   never cut: where it does not fit, the cell shows the letter alone, and a
//   pair '&'. Idle time is '.'.
// - Chunks: a rank's stages ordered by (stage - rank) mod S; the first
//   (stage = rank: DualPipe's direction 0) is chunk 0. With at most two
//   chunks per rank the second is written in lower case, as the dark shade
//   of the SVG; with more, the letter carries the chunk number, then ':'
//   and the micro-batch ("F2:12"), so that cells never run together into
//   one number.
// - With colour, each cell also gets a background per kind (F orange, B
//   blue, I green, W purple; darker for later chunks) and a pair is split
//   into its forward and backward colours.
// - The legend names only what the grid shows.
#include "dualpipe/pictures/grid.h"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <iterator>

#include "pictures/layout.h"
#include "pictures/palette.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

constexpr int kIdle = -1;
constexpr int kShades = kAnsiShades;
const char* const kIdleStyle = "\x1b[90m";
const char* const kReset = "\x1b[0m";
std::string style_code(int style) {
  const int k = style / kShades, sh = style % kShades;
  return fmt::format("\x1b[{};48;5;{}m", sh >= 2 ? 97 : 30, kAnsiBackground[k][sh]);
}

// Colour shade of a chunk among `chunks`: light first, dark last.
int shade_of(int chunk, int chunks) {
  if (chunks <= 1) return 0;
  if (chunks == 2) return chunk ? 2 : 0;
  return std::min(kShades - 1, static_cast<int>(std::lround(chunk * (kShades - 1.0) / (chunks - 1))));
}

// What the grid ends up showing, for the legend.
struct Shown {
  bool kind[4] = {false, false, false, false};
  bool fb_numbers = false, ff_numbers = false, pair_mark = false, letter_only = false, lower = false, chunk_digits = false;
  bool stage_only = false, squeezed = false;
};

struct Labeler {
  int chunks;  // most chunks on one rank
  Shown& shown;

  std::string chunk_mark(int chunk) const { return chunks > 2 ? std::to_string(chunk) : std::string(); }
  char letter(Op op, int chunk) const {
    const char l = kKindLetter[kind_of(op)];
    return chunks == 2 && chunk == 1 ? static_cast<char>(std::tolower(static_cast<unsigned char>(l))) : l;
  }
  std::string full(const Action& a, int chunk) const {
    if (is_pair(a.op)) return fmt::format("({}|{})", a.mb, a.mb2);
    return letter(a.op, chunk) + chunk_mark(chunk) + (chunks > 2 ? ":" : "") + std::to_string(a.mb);
  }
  // The text of one cell `width` columns wide; see the file comment.
  std::string text(const Action& a, int chunk, std::size_t width) {
    if (is_pair(a.op)) {
      shown.kind[0] = shown.kind[kind_of(a.second_half().op)] = true;
      for (std::string t : {fmt::format("({}|{})", a.mb, a.mb2), fmt::format("{}|{}", a.mb, a.mb2)})
        if (t.size() <= width) {
          (a.op == Op::FB ? shown.fb_numbers : shown.ff_numbers) = true;
          return t;
        }
      shown.pair_mark = true;
      return "&";
    }
    shown.kind[kind_of(a.op)] = true;
    const char l = letter(a.op, chunk);
    shown.lower = shown.lower || l != kKindLetter[kind_of(a.op)];
    std::string t = full(a, chunk);
    if (t.size() <= width) {
      shown.chunk_digits = shown.chunk_digits || chunks > 2;
      return t;
    }
    shown.letter_only = true;
    t = l + chunk_mark(chunk);
    if (t.size() <= width) {
      shown.chunk_digits = shown.chunk_digits || chunks > 2;
      return t;
    }
    return std::string(1, l);
  }
};

// Shortest positive duration of a compute action, 0 if none.
double min_duration(const Schedule& s, const SimResult& sim) {
  double min_dur = 0;
  for (std::size_t r = 0; r < s.actions.size(); ++r) {
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (!is_compute(a.op)) continue;
      const double d = sim.timeline[r][i].end - sim.timeline[r][i].start;
      if (d > 0 && (min_dur == 0 || d < min_dur)) min_dur = d;
    }
  }
  return min_dur;
}

// Length of the longest full label of a single action ("F19" = 3), at least 1.
std::size_t longest_label(const Schedule& s, const std::vector<std::vector<int>>& held, const Labeler& label) {
  std::size_t label_len = 1;
  for (std::size_t r = 0; r < s.actions.size(); ++r)
    for (const Action& a : s.actions[r])
      if (is_compute(a.op) && !is_pair(a.op)) label_len = std::max(label_len, label.full(a, chunk_of(held[r], a.stage)).size());
  return label_len;
}

// Every rank laid out as columns of (character, style).
struct Cells {
  std::vector<std::string> chars;
  std::vector<std::vector<signed char>> styles;
};

Cells lay_out_cells(const Schedule& s, const SimResult& sim, const std::vector<std::vector<int>>& held, Labeler& label,
                    double scale, int width) {
  const std::size_t P = s.actions.size();
  Cells cells{std::vector<std::string>(P, std::string(static_cast<std::size_t>(width), '.')),
              std::vector<std::vector<signed char>>(P, std::vector<signed char>(static_cast<std::size_t>(width), kIdle))};
  for (std::size_t r = 0; r < P; ++r) {
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      const Span& sp = sim.timeline[r][i];
      if (!is_compute(a.op) || sp.end <= sp.start) continue;
      int c0 = static_cast<int>(std::lround(sp.start * scale));
      int c1 = static_cast<int>(std::lround(sp.end * scale));
      c0 = std::min(c0, width - 1);
      c1 = std::min(std::max(c1, c0 + 1), width);
      const int chunk = chunk_of(held[r], a.stage);
      const std::string text = label.text(a, chunk, static_cast<std::size_t>(c1 - c0));
      // A pair's forward half takes the first half of its columns.
      const int mid = is_pair(a.op) ? c0 + (c1 - c0 + 1) / 2 : c1;
      const int first = kind_of(is_pair(a.op) ? Op::F : a.op) * kShades + shade_of(chunk, label.chunks);
      const Action second_half = a.second_half();
      const int second = is_pair(a.op) ? kind_of(second_half.op) * kShades +
                                             shade_of(chunk_of(held[r], second_half.stage), label.chunks)
                                       : 0;
      for (int c = c0; c < c1; ++c) {
        const std::size_t at = static_cast<std::size_t>(c - c0);
        cells.chars[r][static_cast<std::size_t>(c)] = at < text.size() ? text[at] : ' ';
        cells.styles[r][static_cast<std::size_t>(c)] = static_cast<signed char>(c < mid ? first : second);
      }
    }
  }
  return cells;
}

// Time ruler: round times, at least 8 columns apart, after `prefix` blanks.
std::string time_ruler(std::size_t prefix, double scale, double makespan, std::size_t line_width) {
  std::string ruler(prefix, ' ');
  const double step = nice_step(8 / scale);
  for (long k = 0;; ++k) {
    const double t = static_cast<double>(k) * step;
    if (t > makespan + 1e-9) break;
    const std::size_t at = prefix + static_cast<std::size_t>(std::lround(t * scale));
    if (at < ruler.size()) continue;  // would run into the previous label
    const std::string num = fmt::format("{:g}", t);
    if (at + num.size() > line_width) break;
    ruler.resize(at, ' ');
    ruler += num;
  }
  return ruler;
}

// One line per rank: its label, its columns (coloured when asked), '|'.
void write_rows(std::string& out, const Cells& cells, const std::string& label_fmt, int width, bool color) {
  for (std::size_t r = 0; r < cells.chars.size(); ++r) {
    fmt::format_to(std::back_inserter(out), label_fmt, static_cast<int>(r));
    int current = kIdle - 1;  // no style yet
    for (int c = 0; c < width; ++c) {
      const int st = cells.styles[r][static_cast<std::size_t>(c)];
      if (color && st != current) {
        out += kReset;
        out += st == kIdle ? kIdleStyle : style_code(st);
        current = st;
      }
      out += cells.chars[r][static_cast<std::size_t>(c)];
    }
    if (color) out += kReset;
    out += "|\n";
  }
}

// A legend item: `plain` is its visible text, `styled` the same with colour.
struct Item {
  std::string plain, styled;
};

// What the grid shows, as legend items.
std::vector<Item> legend_items(const Shown& shown, int chunks, bool color, double scale) {
  std::vector<Item> items;
  auto swatch = [&](int style, const std::string& text) {
    return color ? style_code(style) + text + kReset : text;
  };
  static const char* const kNames[4] = {"forward", "backward", "input grad", "weight grad"};
  for (int k = 0; k < 4; ++k) {
    if (!shown.kind[k]) continue;
    const std::string name = fmt::format(" {}", kNames[k]);
    items.push_back({kKindLetter[k] + name, swatch(k * kShades, std::string(1, kKindLetter[k])) + name});
  }
  if (shown.fb_numbers)
    items.push_back({"(a|b) F&B pair (F of a, B of b)",
                     swatch(0, "(a") + "|" + swatch(kind_of(Op::B) * kShades, "b)") + " F&B pair (F of a, B of b)"});
  if (shown.ff_numbers)
    items.push_back({"(a|b) F&F pair (F of a, F of b)", swatch(0, "(a") + "|" + swatch(0, "b)") + " F&F pair (F of a, F of b)"});
  if (shown.pair_mark) items.push_back({"& pair too short for its numbers", "& pair too short for its numbers"});
  if (shown.letter_only) {
    const std::string t = chunks > 2 ? "F2 or F alone: too short for its number (and chunk)"
                                     : "a letter alone: too short for its number";
    items.push_back({t, t});
  }
  if (shown.lower) items.push_back({"lower case: the rank's second stage", "lower case: the rank's second stage"});
  if (shown.chunk_digits) {
    const std::string t = "F2:13: forward of chunk 2 of the rank (0: stage = rank), micro-batch 13";
    items.push_back({t, t});
  }
  items.push_back({". idle", ". idle"});
  if (shown.stage_only) {
    const std::string t = "UNSHARD, RESHARD, REDUCE_GRAD: not drawn (no simulated time)";
    items.push_back({t, t});
  }
  if (shown.squeezed) {
    const std::string t = "squeezed: an action shorter than a column may hide another";
    items.push_back({t, t});
  }
  const std::string scale_text = fmt::format("1 column = {:.3g} time unit{}", 1 / scale, 1 / scale == 1 ? "" : "s");
  items.push_back({scale_text, scale_text});
  return items;
}

// Items without colour that are wider than a line are split at spaces.
std::vector<Item> fit_items(const std::vector<Item>& items, std::size_t line_width) {
  std::vector<Item> fitted;
  for (const Item& it : items) {
    if (it.plain.size() <= line_width || it.plain != it.styled) {
      fitted.push_back(it);
      continue;
    }
    std::string rest = it.plain;
    while (rest.size() > line_width) {
      std::size_t cut = rest.rfind(' ', line_width);
      if (cut == std::string::npos || cut == 0) cut = line_width;
      fitted.push_back({rest.substr(0, cut), rest.substr(0, cut)});
      rest = rest.substr(cut + (rest[cut] == ' ' ? 1 : 0));
    }
    if (!rest.empty()) fitted.push_back({rest, rest});
  }
  return fitted;
}

// The items two spaces apart, wrapped to the line width.
void write_legend(std::string& out, const std::vector<Item>& items, std::size_t line_width) {
  std::size_t used = 0;
  for (const Item& it : items) {
    if (used > 0 && used + 2 + it.plain.size() > line_width) {
      out += '\n';
      used = 0;
    }
    if (used > 0) {
      out += "  ";
      used += 2;
    }
    out += it.styled;
    used += it.plain.size();
  }
  out += '\n';
}

}  // namespace

int terminal_columns() {
  if (const char* env = std::getenv("COLUMNS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v < 100000) return static_cast<int>(v);
  }
  winsize ws{};
  if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}

std::string terminal_grid(const Schedule& s, const SimResult& sim, const GridOptions& opt) {
  if (sim.timeline.size() != s.actions.size())
    throw Error("terminal_grid: the simulation has no timeline for this schedule");
  const int P = static_cast<int>(s.actions.size());

  const double min_dur = min_duration(s, sim);
  const auto held = chunk_order(s);
  int chunks = 1;
  for (const auto& h : held) chunks = std::max(chunks, static_cast<int>(h.size()));
  Shown shown;
  shown.stage_only = any_stage_only(s);
  Labeler label{chunks, shown};
  const std::size_t label_len = longest_label(s, held, label);

  // Left labels "r12|" and the closing '|' take what the chart may not.
  const std::string label_fmt = fmt::format("r{{:<{}}}|", fmt::formatted_size("{}", std::max(P - 1, 0)) + 1);
  const std::size_t prefix = fmt::formatted_size(label_fmt, 0);
  const int max_chart = opt.columns > 0 ? std::max(8, opt.columns - static_cast<int>(prefix) - 1) : kDefaultGridColumns;
  const std::size_t line_width = opt.columns > 0 ? static_cast<std::size_t>(opt.columns) : prefix + max_chart + 1;

  // Columns per time unit (file comment).
  const double makespan = sim.makespan;
  double scale = 1;
  if (min_dur > 0) {
    const double slots = makespan / min_dur;  // shortest actions across the step
    const double k = std::min(static_cast<double>(label_len), std::floor(max_chart / slots));
    shown.squeezed = k < 1;
    scale = k >= 1 ? k / min_dur : max_chart / makespan;
  }
  const int width = static_cast<int>(std::ceil(makespan * scale - 1e-9));

  const Cells cells = lay_out_cells(s, sim, held, label, scale, width);
  std::string out;
  if (width > 0) {
    out += time_ruler(prefix, scale, makespan, line_width);
    out += '\n';
  }
  write_rows(out, cells, label_fmt, width, opt.color);
  write_legend(out, fit_items(legend_items(shown, chunks, opt.color, scale), line_width), line_width);
  return out;
}

}  // namespace dualpipe
