// SVG timeline, drawn after Figure 5 of the DeepSeek-V3 report.
//
// Layout rules (all in px):
// - Time runs left to right. The chart is kTargetWidth wide unless the
//   shortest cell (an action, or half of an F&B pair) would then be too narrow
//   for its micro-batch number; then it widens until that number fits, up to
//   kMaxChartWidth, where it stops and numbers that no longer fit are dropped.
// - A colour per kind: F orange, B green, I blue, W purple; an F&B pair is one
//   cell split into a forward half and a backward half, framed thickly.
// - Shade: the stages a rank holds are ordered by (stage - rank) mod S, so the
//   first is the stage equal to the rank (DualPipe direction 0, the way down
//   of a V). That first stage is drawn light, the second dark, further ones
//   alternate. In DualPipe this makes the two directions read apart on every
//   rank, which "higher stage index is darker" would not (it flips sides).
// - Schedules with more than kMaxLabelledActions compute actions are drawn
//   without text (numbers, tooltips) to keep the file small.
#include "pictures/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string_view>

#include "schedule/error.h"

namespace dp {
namespace {

constexpr double kTargetWidth = 1400;   // chart width for ordinary schedules
constexpr double kMaxChartWidth = 16000;
constexpr std::size_t kMaxLabelledActions = 20000;
constexpr double kMinUnlabelledWidth = 2;  // px of the shortest cell when there are no numbers to fit
constexpr double kMinFramedWidth = 8;      // px: narrower F&B pairs go unframed
constexpr double kLeft = 84, kRight = 24;  // margins around the chart
constexpr double kRowH = 26, kRowGap = 6;
constexpr double kCellFont = 11;
constexpr double kDigitW = 0.6 * kCellFont;  // a digit's width, a little generous

struct Fill {
  const char* light;
  const char* dark;
  const char* name;   // legend text
};
// Indexed by kind(): F, B, I, W. The dark shades stay light enough for
// black text on dark orange; dark B, I and W take white text (class "tw").
constexpr Fill kFills[4] = {
    {"#f8c49a", "#e0823d", "forward"},
    {"#b5dc9a", "#5f9f3e", "backward"},
    {"#a9cbee", "#4f86c6", "backward for input"},
    {"#d2bfee", "#8a66c4", "backward for weights"},
};

int kind(Op op) {
  switch (op) {
    case Op::F: return 0;
    case Op::B: return 1;
    case Op::I: return 2;
    default: return 3;  // W
  }
}
const char kKindLetter[4] = {'F', 'B', 'I', 'W'};

using Out = std::back_insert_iterator<std::string>;

// Coordinates rounded to 0.01 px and printed shortest: small files, no noise.
double px(double v) { return std::round(v * 100) / 100; }

void xml_escape(std::string& out, std::string_view text) {
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
}

int digits(int v) { return static_cast<int>(fmt::formatted_size("{}", v)); }

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

// 0 for the light shade, 1 for the dark one.
int shade(const std::vector<int>& held, int stage) {
  auto it = std::find(held.begin(), held.end(), stage);
  return static_cast<int>(it - held.begin()) % 2;
}

// 1, 2, 5 times a power of ten, at least `v`.
double nice_step(double v) {
  double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= v) return m * p;
  return 10 * p;
}

}  // namespace

std::string timeline_svg(const Schedule& s, const SimResult& sim, const SvgOptions& opt) {
  if (sim.timeline.size() != s.actions.size())
    throw Error("timeline_svg: the simulation has no timeline for this schedule");
  const int P = static_cast<int>(s.actions.size());

  // What there is to draw.
  int S = s.stages;
  int max_mb = 0;
  std::size_t compute = 0;
  double min_cell = 0;  // shortest positive cell duration (half a pair counts as a cell)
  bool present[5] = {false, false, false, false, false};  // F, B, I, W, FB
  for (int r = 0; r < P; ++r) {
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (is_comm(a.op)) continue;
      ++compute;
      S = std::max({S, a.stage + 1, a.stage2 + 1});
      max_mb = std::max({max_mb, a.mb, a.mb2});
      present[a.op == Op::FB ? 4 : kind(a.op)] = true;
      const Span& sp = sim.timeline[r][i];
      double d = (sp.end - sp.start) / (a.op == Op::FB ? 2 : 1);
      if (d > 0 && (min_cell == 0 || d < min_cell)) min_cell = d;
    }
  }
  const auto held = rank_stages(s, std::max(S, 1));
  bool two_shades = false;
  for (const auto& h : held) two_shades = two_shades || h.size() > 1;
  const bool labels = compute <= kMaxLabelledActions;

  // Horizontal scale (file comment).
  const double makespan = sim.makespan > 0 ? sim.makespan : 1;
  const double label_px = digits(max_mb) * kDigitW + 6;
  double scale = kTargetWidth / makespan;
  if (min_cell > 0) scale = std::max(scale, (labels ? label_px : kMinUnlabelledWidth) / min_cell);
  scale = std::min(scale, kMaxChartWidth / makespan);
  const double chart_w = makespan * scale;
  // Thin cell outlines only while cells are wide enough for them to help.
  const bool outlines = min_cell * scale >= 4;

  // Vertical layout.
  double y = 14;
  const double title_y = opt.title.empty() ? 0 : (y += 18);
  const double subtitle_y = opt.subtitle.empty() ? 0 : (y += 20);
  const double chart_top = y + 16;
  const double chart_h = std::max(0.0, P * (kRowH + kRowGap) - kRowGap);
  const double axis_y = chart_top + chart_h + 4;
  const double legend_y = axis_y + 44;
  const double height = legend_y + (two_shades ? 52 : 26) + 8;
  auto row_y = [&](int r) { return chart_top + r * (kRowH + kRowGap); };

  // Legend: the kinds present, then the shade rule where it applies. Swatch
  // fills are inline so that the cell classes count only cells.
  std::string legend = "<g id=\"legend\">\n";
  Out lo(legend);
  double lx = kLeft, legend_right = 0;
  const double sw = 30, swh = 16;  // swatch size
  auto swatch = [&](const char* fill, double x, double yy) {
    fmt::format_to(lo, "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#555\"/>\n", px(x), yy,
                   sw, swh, fill);
  };
  auto text = [&](double x, double yy, std::string_view t) {
    fmt::format_to(lo, "<text class=\"leg\" x=\"{}\" y=\"{}\">", px(x), yy + 12.5);
    xml_escape(legend, t);
    legend += "</text>\n";
    // Estimated text width: the picture's width must take in the legend.
    legend_right = std::max(legend_right, x + static_cast<double>(t.size()) * 6.6);
    return x + static_cast<double>(t.size()) * 6.6 + 26;
  };
  for (int k = 0; k < 4; ++k) {
    if (!present[k]) continue;
    swatch(kFills[k].light, lx, legend_y);
    lx = text(lx + sw + 6, legend_y, fmt::format("{} {}", kKindLetter[k], kFills[k].name));
  }
  if (present[4]) {
    swatch(kFills[0].light, lx, legend_y);
    swatch(kFills[1].light, lx + sw, legend_y);
    fmt::format_to(lo, "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#111\" "
                   "stroke-width=\"2.2\"/>\n",
                   px(lx), legend_y, 2 * sw, swh);
    text(lx + 2 * sw + 6, legend_y, "F&B overlapped forward & backward (pair)");
  }
  if (two_shades) {
    const double y2 = legend_y + 26;
    swatch(kFills[0].light, kLeft, y2);
    swatch(kFills[1].light, kLeft + sw, y2);
    double x2 = text(kLeft + 2 * sw + 6, y2, "light: stage = rank (DualPipe direction 0, V-shape going down)");
    swatch(kFills[0].dark, x2, y2);
    swatch(kFills[1].dark, x2 + sw, y2);
    text(x2 + 2 * sw + 6, y2, "dark: the rank's other stage (direction 1, the way back)");
  }
  legend += "</g>\n";

  const double width = std::max(kLeft + chart_w, legend_right) + kRight;

  std::string out;
  out.reserve(2000 + compute * (labels ? 190 : 40));
  Out o(out);
  fmt::format_to(o,
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
                 "font-family=\"Helvetica, Arial, sans-serif\">\n",
                 px(width), px(height));
  out += "<style>\n";
  for (int k = 0; k < 4; ++k)
    fmt::format_to(o, ".{0}0{{fill:{1}}} .{0}1{{fill:{2}}}\n", kKindLetter[k], kFills[k].light, kFills[k].dark);
  // Cells only (the legend's swatches carry their own stroke attributes).
  fmt::format_to(o, ".F0,.F1,.B0,.B1,.I0,.I1,.W0,.W1{{stroke:{}}}\n", outlines ? "#555;stroke-width:0.6" : "none");
  fmt::format_to(o,
                 ".row{{fill:#f2f2f2}} .pair{{fill:none;stroke:#111;stroke-width:2.2}} "
                 ".grid{{stroke:#dcdcdc;stroke-width:1}}\n"
                 ".t{{font-size:{}px;text-anchor:middle;fill:#111}} .tw{{fill:#fff}}\n"
                 ".lab{{font-size:13px;text-anchor:end;fill:#222}} .ax{{font-size:11px;text-anchor:middle;fill:#444}} "
                 ".leg{{font-size:12px;fill:#222}}\n",
                 kCellFont);
  out += "</style>\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\" stroke=\"none\"/>\n";

  if (!opt.title.empty()) {
    fmt::format_to(o, "<text x=\"{}\" y=\"{}\" font-size=\"16\" font-weight=\"bold\" fill=\"#111\">", kLeft - 60,
                   title_y);
    xml_escape(out, opt.title);
    out += "</text>\n";
  }
  if (!opt.subtitle.empty()) {
    fmt::format_to(o, "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#555\">", kLeft - 60, subtitle_y);
    xml_escape(out, opt.subtitle);
    out += "</text>\n";
  }

  // Time axis: a tick at least every 60 px, on a round number of units.
  const double step = nice_step(60 / scale);
  out += "<g id=\"axis\">\n";
  for (long k = 0;; ++k) {
    const double t = static_cast<double>(k) * step;
    if (t > makespan + 1e-9) break;
    const double x = px(kLeft + t * scale);
    fmt::format_to(o, "<line class=\"grid\" x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>\n", x, chart_top - 4,
                   axis_y + 5);
    fmt::format_to(o, "<text class=\"ax\" x=\"{}\" y=\"{}\">{:g}</text>\n", x, axis_y + 18, t);
  }
  fmt::format_to(o, "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#444\" stroke-width=\"1\"/>\n", kLeft,
                 axis_y, px(kLeft + chart_w));
  fmt::format_to(o, "<text class=\"ax\" x=\"{}\" y=\"{}\">time (step {:.4g})</text>\n", px(kLeft + chart_w / 2),
                 axis_y + 34, sim.makespan);
  out += "</g>\n";

  // One group per rank: a grey band (idle shows through), then the cells.
  for (int r = 0; r < P; ++r) {
    const double ry = row_y(r);
    fmt::format_to(o, "<g id=\"rank{}\">\n", r);
    fmt::format_to(o, "<text class=\"lab\" x=\"{}\" y=\"{}\">rank {}</text>\n", kLeft - 10, px(ry + kRowH / 2 + 4.5),
                   r);
    fmt::format_to(o, "<rect class=\"row\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", kLeft, px(ry),
                   px(chart_w), kRowH);
    const double text_y = px(ry + kRowH / 2 + kCellFont * 0.36);
    // Small schedules: a <rect> per cell, with a tooltip and its number.
    // Large ones: one <path> per fill class and rank, a third of the bytes.
    std::string paths[8];  // [kind * 2 + shade]
    std::string frames;
    std::string tip;
    auto cell = [&](int k, int sh, double x, double w, int mb) {
      if (!labels) {
        fmt::format_to(std::back_inserter(paths[k * 2 + sh]), "M{} {}h{}v{}h{}z", px(x), px(ry), px(w), kRowH,
                       -px(w));
        return;
      }
      fmt::format_to(o, "<rect class=\"{}{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>", kKindLetter[k],
                     sh, px(x), px(ry), px(w), kRowH);
      xml_escape(out, tip);
      out += "</title></rect>\n";
      if (w >= digits(mb) * kDigitW + 4)
        fmt::format_to(o, "<text class=\"t{}\" x=\"{}\" y=\"{}\">{}</text>\n", sh && k != 0 ? " tw" : "",
                       px(x + w / 2), text_y, mb);
    };
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (is_comm(a.op)) continue;
      const Span& sp = sim.timeline[r][i];
      const double x = kLeft + sp.start * scale, w = (sp.end - sp.start) * scale;
      if (labels) tip = fmt::format("{} [{:g}, {:g}]", to_string(a), sp.start, sp.end);
      if (a.op != Op::FB) {
        cell(kind(a.op), shade(held[r], a.stage), x, w, a.mb);
        continue;
      }
      // Halves of equal width: the pair's inner split is not simulated.
      cell(0, shade(held[r], a.stage), x, w / 2, a.mb);
      cell(1, shade(held[r], a.stage2), x + w / 2, w / 2, a.mb2);
      // The thick frame would blot out pairs only a few pixels wide.
      if (w < kMinFramedWidth) continue;
      if (labels)
        fmt::format_to(o, "<rect class=\"pair\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", px(x), px(ry),
                       px(w), kRowH);
      else
        fmt::format_to(std::back_inserter(frames), "M{} {}h{}v{}h{}z", px(x), px(ry), px(w), kRowH, -px(w));
    }
    for (int c = 0; c < 8; ++c)
      if (!paths[c].empty())
        fmt::format_to(o, "<path class=\"{}{}\" d=\"{}\"/>\n", kKindLetter[c / 2], c % 2, paths[c]);
    if (!frames.empty()) fmt::format_to(o, "<path class=\"pair\" d=\"{}\"/>\n", frames);
    out += "</g>\n";
  }

  out += legend;
  out += "</svg>\n";
  return out;
}

}  // namespace dp
