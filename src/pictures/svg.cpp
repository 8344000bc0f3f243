// SVG timeline, drawn after Figure 5 of the DeepSeek-V3 report.
//
// Layout rules (all in px):
// - Time runs left to right. Without SvgOptions::width the chart is
//   kTargetWidth wide unless the shortest cell (an action, or half of an F&B
//   pair) would then be too narrow for its micro-batch number; then it
//   widens until that number fits, up to kMaxChartWidth. With a width, the
//   chart fills it. Either way a number that does not fit its cell is left
//   out (the cell's tooltip still names the action), so large shapes thin
//   their labels instead of overprinting them.
// - A time range and a rank range draw part of the step; cells are clipped
//   to the range and rows keep their real rank numbers.
// - A colour per kind (palette.h: F orange, B blue, I green, W purple,
//   chosen to stay apart under colour blindness); an F&B pair is one cell
//   split into a forward half and a backward half, framed thickly.
// - Shade: the stages a rank holds are its chunks, ordered by
//   (stage - rank) mod S, so chunk 0 is the stage equal to the rank
//   (DualPipe direction 0, the way down of a V). Chunk 0 is light, the last
//   chunk dark, chunks between them in between. In DualPipe this makes the
//   two directions read apart on every rank, which "higher stage index is
//   darker" would not (it flips sides).
// - The legend shows only what the picture holds: the kinds present, the
//   pair, the shades with the swatches of the kinds present, and words that
//   fit the method (DualPipe's directions only for DualPipe).
// - The time axis is drawn below the chart, and above it as well when there
//   are more than 16 rows; rank labels stay at 13 px whatever the size.
// - Schedules with more than kMaxLabelledActions drawn compute actions are
//   drawn without text (numbers, tooltips) to keep the file small.
#include "dualpipe/pictures/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <string_view>
#include <utility>
#include <vector>

#include "pictures/layout.h"
#include "pictures/palette.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

constexpr double kTargetWidth = 1400;  // chart width for ordinary schedules
constexpr double kMaxChartWidth = 16000;
constexpr double kMinChartWidth = 100;
constexpr std::size_t kMaxLabelledActions = 20000;
constexpr double kMinUnlabelledWidth = 2;  // px of the shortest cell when there are no numbers to fit
constexpr double kMinFramedWidth = 8;      // px: narrower F&B pairs go unframed
constexpr double kLeft = 84, kRight = 24;  // margins around the chart
constexpr double kRowH = 26, kRowGap = 6;
constexpr double kCellFont = 11;
constexpr double kDigitW = 0.6 * kCellFont;  // a digit's width, a little generous
constexpr double kLegendCharW = 6.6;         // estimated width of a legend character
constexpr double kMinLegendWidth = 900;      // the legend wraps at this width or the picture's

using Out = std::back_insert_iterator<std::string>;

// Coordinates rounded to 0.01 px and printed shortest: small files, no noise.
double px(double v) { return std::round(v * 100) / 100; }

int digits(int v) { return static_cast<int>(fmt::formatted_size("{}", v)); }

struct Rgb {
  double r, g, b;
};
Rgb parse_hex(const char* hex) {
  const long v = std::strtol(hex + 1, nullptr, 16);
  return {static_cast<double>((v >> 16) & 255), static_cast<double>((v >> 8) & 255), static_cast<double>(v & 255)};
}
std::string to_hex(const Rgb& c) {
  auto b = [](double v) { return static_cast<int>(std::lround(std::clamp(v, 0.0, 255.0))); };
  return fmt::format("#{:02x}{:02x}{:02x}", b(c.r), b(c.g), b(c.b));
}
// WCAG relative luminance: dark fills take white text.
double luminance(const Rgb& c) {
  auto lin = [](double v) {
    v /= 255;
    return v <= 0.04045 ? v / 12.92 : std::pow((v + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
}

// Fill of kind k in chunk c of `chunks`: light to dark (file comment).
Rgb fill_rgb(int k, int c, int chunks) {
  const Rgb a = parse_hex(kKindColours[k].light), b = parse_hex(kKindColours[k].dark);
  const double t = chunks <= 1 ? 0 : static_cast<double>(c) / (chunks - 1);
  return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}

// Words for the shade legend: a method's directions only where it has them
// (the registry's words), interleaved's chunks by their stages.
std::string chunk_words(const std::string& method, int c, int chunks) {
  if (chunks == 2) {
    const Method* m = method_named(method);
    if (m && m->placement == PlacementStyle::Interleaved)
      return c == 0 ? "light: chunk 0 (stage = rank)" : "dark: chunk 1 (stage = rank + ranks)";
    std::string first = "light: stage = rank", second = "dark: the rank's other stage";
    if (m && m->directions[0]) {
      first += fmt::format(" ({})", m->directions[0]);
      second += fmt::format(" ({})", m->directions[1]);
    }
    return c == 0 ? first : second;
  }
  return c == 0 ? "chunk 0 (stage = rank)" : fmt::format("chunk {}", c);
}

constexpr double kSwatchW = 30, kSwatchH = 16;  // legend swatch size
constexpr double kLegendLineH = 26;

using Held = std::vector<std::vector<int>>;  // each rank's stages in chunk order

// The part of the step to draw, and the horizontal scale once it is known.
struct View {
  double makespan, t0, t1;
  int r0, r1;
  double scale = 0;  // px per time unit
  bool visible(const Span& sp) const { return sp.end > t0 && sp.start < t1; }
  double x_of(double t) const { return kLeft + (t - t0) * scale; }
};

View checked_view(const SimResult& sim, int P, const SvgOptions& opt) {
  View v{};
  v.makespan = sim.makespan > 0 ? sim.makespan : 1;
  v.t0 = opt.time_from.value_or(0), v.t1 = opt.time_to.value_or(v.makespan);
  if (!(v.t0 >= 0 && v.t0 < v.t1 && v.t0 < v.makespan))
    throw Error(fmt::format("time range {:g}:{:g} is empty or outside the step (0:{:g})", v.t0, v.t1, v.makespan));
  v.r0 = opt.rank_from, v.r1 = opt.rank_to < 0 ? P - 1 : opt.rank_to;
  if (v.r0 < 0 || v.r0 > v.r1 || v.r1 >= P)
    throw Error(fmt::format("rank range {}:{} is empty or outside the schedule's ranks 0:{}", v.r0, v.r1, P - 1));
  return v;
}

// What the drawn part holds.
struct Contents {
  int max_mb = 0;
  std::size_t compute = 0;
  double min_cell = 0;  // shortest positive cell duration (half a pair counts as a cell)
  bool present[6] = {false, false, false, false, false, false};  // F, B, I, W, FB, FF
  bool stage_only = false;
  int chunks = 1;       // most chunks on one drawn rank
  bool labels = false;  // numbers and tooltips, for schedules small enough
};

Contents survey(const Schedule& s, const SimResult& sim, const View& v, const Held& held) {
  Contents in;
  in.stage_only = any_stage_only(s);
  for (int r = 0; r < static_cast<int>(s.actions.size()); ++r) {
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (!is_compute(a.op)) continue;
      const Span& sp = sim.timeline[r][i];
      if (r < v.r0 || r > v.r1 || !v.visible(sp)) continue;
      ++in.compute;
      in.max_mb = std::max({in.max_mb, a.mb, a.mb2});
      if (is_pair(a.op)) {
        in.present[0] = in.present[kind_of(a.second_half().op)] = in.present[a.op == Op::FB ? 4 : 5] = true;
      } else {
        in.present[kind_of(a.op)] = true;
      }
      double d = (sp.end - sp.start) / (is_pair(a.op) ? 2 : 1);
      if (d > 0 && (in.min_cell == 0 || d < in.min_cell)) in.min_cell = d;
    }
  }
  for (int r = v.r0; r <= v.r1; ++r) in.chunks = std::max(in.chunks, static_cast<int>(held[r].size()));
  in.labels = in.compute <= kMaxLabelledActions;
  return in;
}

// Px per time unit (file comment).
double horizontal_scale(const Contents& in, double span, const SvgOptions& opt) {
  const double label_px = digits(in.max_mb) * kDigitW + 6;
  double scale;
  if (opt.width > 0) {
    scale = std::max(kMinChartWidth, opt.width - kLeft - kRight) / span;
  } else {
    scale = kTargetWidth / span;
    if (in.min_cell > 0) scale = std::max(scale, (in.labels ? label_px : kMinUnlabelledWidth) / in.min_cell);
    scale = std::min(scale, kMaxChartWidth / span);
  }
  return scale;
}

struct LegendItem {
  std::vector<std::string> fills;  // swatches, left to right
  bool frame = false;              // a pair's frame around the swatches
  std::string text;
};

// Only what the picture holds (file comment).
std::vector<LegendItem> legend_items(const std::string& method, const Contents& in, bool a2a) {
  std::vector<LegendItem> items;
  for (int k = 0; k < 4; ++k)
    if (in.present[k])
      items.push_back({{kKindColours[k].light}, false, fmt::format("{} {}", kKindLetter[k], kKindColours[k].name)});
  if (in.present[4])
    items.push_back({{kKindColours[0].light, kKindColours[1].light}, true, "F&B overlapped forward & backward (pair)"});
  if (in.present[5])
    items.push_back({{kKindColours[0].light, kKindColours[0].light}, true, "F&F two overlapped forwards (pair)"});
  if (in.chunks > 1) {
    for (int c = 0; c < in.chunks; ++c) {
      LegendItem it{{}, false, chunk_words(method, c, in.chunks)};
      for (int k = 0; k < 4; ++k)
        if (in.present[k]) it.fills.push_back(to_hex(fill_rgb(k, c, in.chunks)));
      items.push_back(it);
    }
  }
  if (in.stage_only) items.push_back({{}, false, "UNSHARD, RESHARD, REDUCE_GRAD: not drawn (no simulated time)"});
  // Simulated with all-to-all phases (docs/simulation.md): the rank's waits
  // for them, hatched over the cells they fall in.
  if (a2a) items.push_back({{"url(#a2a)"}, false, "waiting for an all-to-all (exposed)"});
  return items;
}

// The legend's items laid out left to right, wrapped at `wrap_at`, relative
// to the legend's top: rows' y are left as {Yn} / {Tn} markers for
// place_legend. Swatch fills are inline so that the cell classes count only cells.
struct LegendLayout {
  std::string body;
  double right = 0;   // px: the right end of the widest row
  double height = 0;
};

LegendLayout lay_out_legend(const std::vector<LegendItem>& items, double wrap_at) {
  LegendLayout l;
  double lx = kLeft, ly = 0;
  Out bo(l.body);
  for (const LegendItem& it : items) {
    const double w = static_cast<double>(it.fills.size()) * kSwatchW + (it.fills.empty() ? 0 : 6) +
                     static_cast<double>(it.text.size()) * kLegendCharW;
    if (lx > kLeft && lx + w > wrap_at) {
      lx = kLeft;
      ly += kLegendLineH;
    }
    double x = lx;
    for (const std::string& f : it.fills) {
      fmt::format_to(bo, "<rect x=\"{}\" y=\"{{Y{}}}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#555\"/>\n", px(x),
                     ly, kSwatchW, kSwatchH, f);
      x += kSwatchW;
    }
    if (it.frame)
      fmt::format_to(bo, "<rect x=\"{}\" y=\"{{Y{}}}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#111\" "
                     "stroke-width=\"2.2\"/>\n",
                     px(lx), ly, px(x - lx), kSwatchH);
    if (!it.fills.empty()) x += 6;
    fmt::format_to(bo, "<text class=\"leg\" x=\"{}\" y=\"{{T{}}}\">", px(x), ly);
    xml_escape(l.body, it.text);
    l.body += "</text>\n";
    l.right = std::max(l.right, lx + w);
    lx += w + 26;
  }
  l.height = items.empty() ? 0 : ly + kLegendLineH;
  return l;
}

// The legend group with its rows' markers replaced by y's below `legend_y`.
std::string place_legend(std::string body, double legend_y) {
  for (std::size_t at = 0; (at = body.find("{", at)) != std::string::npos;) {
    const std::size_t close = body.find('}', at);
    const bool is_text = body[at + 1] == 'T';
    const double off = std::strtod(body.c_str() + at + 2, nullptr);
    const std::string v = fmt::format("{}", px(legend_y + off + (is_text ? 12.5 : 0)));
    body.replace(at, close - at + 1, v);
    at += v.size();
  }
  return "<g id=\"legend\">\n" + body + "</g>\n";
}

// Vertical positions, top to bottom.
struct Rows {
  bool top_axis;  // a time axis above the chart as well
  double title_y, subtitle_y, chart_top, axis_y, legend_y, height;
};

Rows vertical_layout(const SvgOptions& opt, int rows, double legend_h) {
  Rows v{};
  v.top_axis = rows > 16;
  double y = 14;
  v.title_y = opt.title.empty() ? 0 : (y += 18);
  v.subtitle_y = opt.subtitle.empty() ? 0 : (y += 20);
  v.chart_top = y + 16 + (v.top_axis ? 18 : 0);
  const double chart_h = std::max(0.0, rows * (kRowH + kRowGap) - kRowGap);
  v.axis_y = v.chart_top + chart_h + 4;
  v.legend_y = v.axis_y + 44;
  v.height = v.legend_y + legend_h + 8;
  return v;
}

// The <svg> tag, the style sheet (a class per kind and chunk), the
// background and the all-to-all hatching.
void write_head(std::string& out, double width, double height, int chunks, bool outlines, bool a2a) {
  Out o(out);
  fmt::format_to(o,
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
                 "font-family=\"Helvetica, Arial, sans-serif\">\n",
                 px(width), px(height));
  out += "<style>\n";
  std::string cell_classes;
  for (int k = 0; k < 4; ++k)
    for (int c = 0; c < std::max(chunks, 2); ++c) {
      const Rgb f = fill_rgb(k, c, std::max(chunks, 2));
      fmt::format_to(o, ".{}{}{{fill:{}}}{}", kKindLetter[k], c, to_hex(f), c + 1 == std::max(chunks, 2) ? "\n" : " ");
      cell_classes += fmt::format("{}.{}{}", cell_classes.empty() ? "" : ",", kKindLetter[k], c);
    }
  // Cells only (the legend's swatches carry their own stroke attributes).
  fmt::format_to(o, "{}{{stroke:{}}}\n", cell_classes, outlines ? "#555;stroke-width:0.6" : "none");
  fmt::format_to(o,
                 ".row{{fill:#f2f2f2}} .pair{{fill:none;stroke:#111;stroke-width:2.2}} "
                 ".grid{{stroke:#dcdcdc;stroke-width:1}}\n"
                 ".t{{font-size:{}px;text-anchor:middle;fill:#111}} .tw{{fill:#fff}}\n"
                 ".lab{{font-size:13px;text-anchor:end;fill:#222}} .ax{{font-size:11px;text-anchor:middle;fill:#444}} "
                 ".leg{{font-size:12px;fill:#222}}\n",
                 kCellFont);
  out += "</style>\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\" stroke=\"none\"/>\n";
  if (a2a)
    out += "<defs><pattern id=\"a2a\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
           "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fff\" fill-opacity=\"0.5\"/>"
           "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#222\" stroke-width=\"2\"/></pattern></defs>\n";
}

void write_titles(std::string& out, const SvgOptions& opt, const Rows& rows) {
  Out o(out);
  if (!opt.title.empty()) {
    fmt::format_to(o, "<text x=\"{}\" y=\"{}\" font-size=\"16\" font-weight=\"bold\" fill=\"#111\">", kLeft - 60,
                   rows.title_y);
    xml_escape(out, opt.title);
    out += "</text>\n";
  }
  if (!opt.subtitle.empty()) {
    fmt::format_to(o, "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#555\">", kLeft - 60, rows.subtitle_y);
    xml_escape(out, opt.subtitle);
    out += "</text>\n";
  }
}

// Time axis: a tick at least every 60 px, on a round number of units.
void write_time_axis(std::string& out, const View& v, const Rows& rows, double chart_w, double sim_makespan) {
  Out o(out);
  const double step = nice_step(60 / v.scale);
  out += "<g id=\"axis\">\n";
  for (long k = static_cast<long>(std::ceil(v.t0 / step - 1e-9));; ++k) {
    const double t = static_cast<double>(k) * step;
    if (t > v.t1 + 1e-9) break;
    const double x = px(v.x_of(t));
    fmt::format_to(o, "<line class=\"grid\" x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>\n", x, rows.chart_top - 4,
                   rows.axis_y + 5);
    fmt::format_to(o, "<text class=\"ax\" x=\"{}\" y=\"{}\">{:g}</text>\n", x, rows.axis_y + 18, t);
    if (rows.top_axis) fmt::format_to(o, "<text class=\"ax\" x=\"{}\" y=\"{}\">{:g}</text>\n", x, rows.chart_top - 8, t);
  }
  fmt::format_to(o, "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#444\" stroke-width=\"1\"/>\n", kLeft,
                 rows.axis_y, px(kLeft + chart_w));
  const bool part = v.t0 > 0 || v.t1 < v.makespan;
  fmt::format_to(o, "<text class=\"ax\" x=\"{}\" y=\"{}\">time (step {:.4g}{})</text>\n", px(kLeft + chart_w / 2),
                 rows.axis_y + 34, sim_makespan, part ? fmt::format("; showing {:g} to {:g}", v.t0, v.t1) : "");
  out += "</g>\n";
}

// Draws the ranks' rows: one group per rank, a grey band (idle shows
// through), then the cells. Small schedules: a <rect> per cell, with a
// tooltip and its number. Large ones: one <path> per fill class and rank, a
// third of the bytes.
struct RankPainter {
  const Schedule& s;
  const SimResult& sim;
  const View& v;
  const Held& held;
  int chunks;
  bool labels;
  double chart_w;
  std::string& out;

  // One rank's row while it is drawn.
  struct Row {
    double ry, text_y;
    std::vector<std::string> paths;  // [kind * chunks + chunk]
    std::string frames;
    std::string tip;
  };

  // A cell over [a, b] in time, clipped to the range; nothing if nothing is left.
  void cell(Row& row, int k, int c, double a, double b, int mb) {
    a = std::max(a, v.t0);
    b = std::min(b, v.t1);
    if (b <= a) return;
    const double x = v.x_of(a), w = (b - a) * v.scale;
    if (!labels) {
      fmt::format_to(std::back_inserter(row.paths[static_cast<std::size_t>(k * chunks + c)]), "M{} {}h{}v{}h{}z",
                     px(x), px(row.ry), px(w), kRowH, -px(w));
      return;
    }
    Out o(out);
    fmt::format_to(o, "<rect class=\"{}{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>", kKindLetter[k], c,
                   px(x), px(row.ry), px(w), kRowH);
    xml_escape(out, row.tip);
    out += "</title></rect>\n";
    if (w >= digits(mb) * kDigitW + 4)
      fmt::format_to(o, "<text class=\"t{}\" x=\"{}\" y=\"{}\">{}</text>\n",
                     luminance(fill_rgb(k, c, std::max(chunks, 2))) < 0.3 ? " tw" : "", px(x + w / 2), row.text_y,
                     mb);
  }

  // An F&B pair: two halves of equal width (the pair's inner split is not
  // simulated) in a thick frame, left out where it would blot out pairs only
  // a few pixels wide.
  void pair(Row& row, int r, const Action& a, const Span& sp) {
    const double mid = (sp.start + sp.end) / 2;
    const Action f = a.forward_half(), b = a.second_half();
    cell(row, kind_of(f.op), chunk_of(held[r], f.stage), sp.start, mid, f.mb);
    cell(row, kind_of(b.op), chunk_of(held[r], b.stage), mid, sp.end, b.mb);
    const double fa = std::max(sp.start, v.t0), fb = std::min(sp.end, v.t1);
    const double x = v.x_of(fa), w = (fb - fa) * v.scale;
    if (w < kMinFramedWidth) return;
    if (labels)
      fmt::format_to(Out(out), "<rect class=\"pair\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", px(x),
                     px(row.ry), px(w), kRowH);
    else
      fmt::format_to(std::back_inserter(row.frames), "M{} {}h{}v{}h{}z", px(x), px(row.ry), px(w), kRowH, -px(w));
  }

  // The rank's waits for all-to-alls, hatched.
  void waits(int r, double ry) {
    std::string d;
    for (const Span& w : sim.a2a_waits[r]) {
      const double a = std::max(w.start, v.t0), b = std::min(w.end, v.t1);
      if (b > a)
        fmt::format_to(std::back_inserter(d), "M{} {}h{}v{}h{}z", px(v.x_of(a)), px(ry), px((b - a) * v.scale), kRowH,
                       -px((b - a) * v.scale));
    }
    if (!d.empty()) fmt::format_to(Out(out), "<path fill=\"url(#a2a)\" d=\"{}\"/>\n", d);
  }

  void rank(int r, double ry) {
    Out o(out);
    fmt::format_to(o, "<g id=\"rank{}\">\n", r);
    fmt::format_to(o, "<text class=\"lab\" x=\"{}\" y=\"{}\">rank {}</text>\n", kLeft - 10, px(ry + kRowH / 2 + 4.5),
                   r);
    fmt::format_to(o, "<rect class=\"row\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", kLeft, px(ry),
                   px(chart_w), kRowH);
    Row row{ry, px(ry + kRowH / 2 + kCellFont * 0.36), std::vector<std::string>(static_cast<std::size_t>(4 * chunks)),
            {}, {}};
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (!is_compute(a.op)) continue;
      const Span& sp = sim.timeline[r][i];
      if (!v.visible(sp)) continue;
      if (labels) row.tip = fmt::format("{} [{:g}, {:g}]", to_string(a), sp.start, sp.end);
      if (is_pair(a.op))
        pair(row, r, a, sp);
      else
        cell(row, kind_of(a.op), chunk_of(held[r], a.stage), sp.start, sp.end, a.mb);
    }
    for (int c = 0; c < 4 * chunks; ++c)
      if (!row.paths[static_cast<std::size_t>(c)].empty())
        fmt::format_to(o, "<path class=\"{}{}\" d=\"{}\"/>\n", kKindLetter[c / chunks], c % chunks,
                       row.paths[static_cast<std::size_t>(c)]);
    if (!row.frames.empty()) fmt::format_to(o, "<path class=\"pair\" d=\"{}\"/>\n", row.frames);
    if (!sim.a2a_waits.empty()) waits(r, ry);
    out += "</g>\n";
  }
};

}  // namespace

void parse_range(const std::string& option, const std::string& text, std::optional<double>& from,
                 std::optional<double>& to) {
  const auto colon = text.find(':');
  auto number = [&](const std::string& part) -> std::optional<double> {
    if (part.empty()) return std::nullopt;
    char* end = nullptr;
    const double v = std::strtod(part.c_str(), &end);
    if (*end != '\0' || !std::isfinite(v))
      throw Error(fmt::format("{} '{}': expected A:B with numbers A < B (either may be left out)", option, text));
    return v;
  };
  if (colon == std::string::npos)
    throw Error(fmt::format("{} '{}': expected A:B with numbers A < B (either may be left out)", option, text));
  from = number(text.substr(0, colon));
  to = number(text.substr(colon + 1));
}

// The title, saying which ranks of how many a crop draws.
std::string shown_title(const SvgOptions& opt, const View& v, int P) {
  if (v.r0 == 0 && v.r1 == P - 1) return opt.title;
  const std::string crop = v.r0 == v.r1 ? fmt::format("rank {} of {}", v.r0, P)
                                         : fmt::format("ranks {}-{} of {}", v.r0, v.r1, P);
  return opt.title.empty() ? crop : fmt::format("{}  ({})", opt.title, crop);
}

std::string timeline_svg(const Schedule& s, const SimResult& sim, const SvgOptions& given) {
  if (sim.timeline.size() != s.actions.size())
    throw Error("timeline_svg: the simulation has no timeline for this schedule");
  View v = checked_view(sim, static_cast<int>(s.actions.size()), given);
  SvgOptions opt = given;
  opt.title = shown_title(given, v, static_cast<int>(s.actions.size()));
  const double span = v.t1 - v.t0;
  const Held held = chunk_order(s);
  const Contents in = survey(s, sim, v, held);

  v.scale = horizontal_scale(in, span, opt);
  const double chart_w = span * v.scale;
  // Thin cell outlines only while cells are wide enough for them to help.
  const bool outlines = in.min_cell * v.scale >= 4;
  const double wrap_at = std::max(opt.width > 0 ? opt.width - kRight : kLeft + chart_w, kMinLegendWidth);

  // The legend's height depends on its wrapping, so lay it out first.
  const bool a2a = !sim.a2a_waits.empty();
  LegendLayout legend = lay_out_legend(legend_items(s.method, in, a2a), wrap_at);
  const Rows rows = vertical_layout(opt, v.r1 - v.r0 + 1, legend.height);
  const double width = opt.width > 0 ? opt.width : std::max(kLeft + chart_w, legend.right) + kRight;

  std::string out;
  out.reserve(2000 + in.compute * (in.labels ? 190 : 40));
  write_head(out, width, rows.height, in.chunks, outlines, a2a);
  write_titles(out, opt, rows);
  write_time_axis(out, v, rows, chart_w, sim.makespan);
  RankPainter paint{s, sim, v, held, in.chunks, in.labels, chart_w, out};
  for (int r = v.r0; r <= v.r1; ++r) paint.rank(r, rows.chart_top + (r - v.r0) * (kRowH + kRowGap));
  out += place_legend(std::move(legend.body), rows.legend_y);
  out += "</svg>\n";
  return out;
}

}  // namespace dualpipe
