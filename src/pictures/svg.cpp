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

std::string timeline_svg(const Schedule& s, const SimResult& sim, const SvgOptions& opt) {
  if (sim.timeline.size() != s.actions.size())
    throw Error("timeline_svg: the simulation has no timeline for this schedule");
  const int P = static_cast<int>(s.actions.size());

  // The part to draw.
  const double makespan = sim.makespan > 0 ? sim.makespan : 1;
  const double t0 = opt.time_from.value_or(0), t1 = opt.time_to.value_or(makespan);
  if (!(t0 >= 0 && t0 < t1 && t0 < makespan))
    throw Error(fmt::format("time range {:g}:{:g} is empty or outside the step (0:{:g})", t0, t1, makespan));
  const int r0 = opt.rank_from, r1 = opt.rank_to < 0 ? P - 1 : opt.rank_to;
  if (r0 < 0 || r0 > r1 || r1 >= P)
    throw Error(fmt::format("rank range {}:{} is empty or outside the schedule's ranks 0:{}", r0, r1, P - 1));
  const double span = t1 - t0;
  auto visible = [&](const Span& sp) { return sp.end > t0 && sp.start < t1; };

  // What there is to draw.
  int max_mb = 0;
  std::size_t compute = 0;
  double min_cell = 0;  // shortest positive cell duration (half a pair counts as a cell)
  bool present[5] = {false, false, false, false, false};  // F, B, I, W, FB
  const bool stage_only = any_stage_only(s);
  for (int r = 0; r < P; ++r) {
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (!is_compute(a.op)) continue;
      const Span& sp = sim.timeline[r][i];
      if (r < r0 || r > r1 || !visible(sp)) continue;
      ++compute;
      max_mb = std::max({max_mb, a.mb, a.mb2});
      if (a.op == Op::FB) {
        present[0] = present[1] = present[4] = true;
      } else {
        present[kind_of(a.op)] = true;
      }
      double d = (sp.end - sp.start) / (a.op == Op::FB ? 2 : 1);
      if (d > 0 && (min_cell == 0 || d < min_cell)) min_cell = d;
    }
  }
  const auto held = chunk_order(s);
  int chunks = 1;
  for (int r = r0; r <= r1; ++r) chunks = std::max(chunks, static_cast<int>(held[r].size()));
  const bool labels = compute <= kMaxLabelledActions;

  // Horizontal scale (file comment).
  const double label_px = digits(max_mb) * kDigitW + 6;
  double scale;
  if (opt.width > 0) {
    scale = std::max(kMinChartWidth, opt.width - kLeft - kRight) / span;
  } else {
    scale = kTargetWidth / span;
    if (min_cell > 0) scale = std::max(scale, (labels ? label_px : kMinUnlabelledWidth) / min_cell);
    scale = std::min(scale, kMaxChartWidth / span);
  }
  const double chart_w = span * scale;
  // Thin cell outlines only while cells are wide enough for them to help.
  const bool outlines = min_cell * scale >= 4;
  const double wrap_at = std::max(opt.width > 0 ? opt.width - kRight : kLeft + chart_w, kMinLegendWidth);

  // Legend: items laid out left to right, wrapped at `wrap_at`. Swatch
  // fills are inline so that the cell classes count only cells.
  std::string legend = "<g id=\"legend\">\n";
  Out lo(legend);
  const double sw = 30, swh = 16, line_h = 26;  // swatch size, legend line height
  struct Item {
    std::vector<std::string> fills;  // swatches, left to right
    bool frame = false;              // a pair's frame around the swatches
    std::string text;
  };
  std::vector<Item> items;
  for (int k = 0; k < 4; ++k)
    if (present[k]) items.push_back({{kKindColours[k].light}, false, fmt::format("{} {}", kKindLetter[k], kKindColours[k].name)});
  if (present[4])
    items.push_back({{kKindColours[0].light, kKindColours[1].light}, true, "F&B overlapped forward & backward (pair)"});
  if (chunks > 1) {
    for (int c = 0; c < chunks; ++c) {
      Item it{{}, false, chunk_words(s.method, c, chunks)};
      for (int k = 0; k < 4; ++k)
        if (present[k]) it.fills.push_back(to_hex(fill_rgb(k, c, chunks)));
      items.push_back(it);
    }
  }
  if (stage_only) items.push_back({{}, false, "UNSHARD, RESHARD, REDUCE_GRAD: not drawn (no simulated time)"});
  // Simulated with all-to-all phases (docs/simulation.md): the rank's waits
  // for them, hatched over the cells they fall in.
  const bool a2a = !sim.a2a_waits.empty();
  if (a2a) items.push_back({{"url(#a2a)"}, false, "waiting for an all-to-all (exposed)"});

  // Vertical layout; the legend's height depends on its wrapping, so lay it
  // out first, relative to its top.
  double lx = kLeft, ly = 0, legend_right = 0;
  std::string legend_body;
  Out bo(legend_body);
  for (const Item& it : items) {
    const double w = static_cast<double>(it.fills.size()) * sw + (it.fills.empty() ? 0 : 6) +
                     static_cast<double>(it.text.size()) * kLegendCharW;
    if (lx > kLeft && lx + w > wrap_at) {
      lx = kLeft;
      ly += line_h;
    }
    double x = lx;
    for (const std::string& f : it.fills) {
      fmt::format_to(bo, "<rect x=\"{}\" y=\"{{Y{}}}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#555\"/>\n", px(x),
                     ly, sw, swh, f);
      x += sw;
    }
    if (it.frame)
      fmt::format_to(bo, "<rect x=\"{}\" y=\"{{Y{}}}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#111\" "
                     "stroke-width=\"2.2\"/>\n",
                     px(lx), ly, px(x - lx), swh);
    if (!it.fills.empty()) x += 6;
    fmt::format_to(bo, "<text class=\"leg\" x=\"{}\" y=\"{{T{}}}\">", px(x), ly);
    xml_escape(legend_body, it.text);
    legend_body += "</text>\n";
    legend_right = std::max(legend_right, lx + w);
    lx += w + 26;
  }
  const double legend_h = items.empty() ? 0 : ly + line_h;

  const int rows = r1 - r0 + 1;
  const bool top_axis = rows > 16;
  double y = 14;
  const double title_y = opt.title.empty() ? 0 : (y += 18);
  const double subtitle_y = opt.subtitle.empty() ? 0 : (y += 20);
  const double chart_top = y + 16 + (top_axis ? 18 : 0);
  const double chart_h = std::max(0.0, rows * (kRowH + kRowGap) - kRowGap);
  const double axis_y = chart_top + chart_h + 4;
  const double legend_y = axis_y + 44;
  const double height = legend_y + legend_h + 8;
  auto row_y = [&](int r) { return chart_top + (r - r0) * (kRowH + kRowGap); };

  // Place the legend: its rows' y were left as {Yn} / {Tn} markers.
  for (std::size_t at = 0; (at = legend_body.find("{", at)) != std::string::npos;) {
    const std::size_t close = legend_body.find('}', at);
    const bool is_text = legend_body[at + 1] == 'T';
    const double off = std::strtod(legend_body.c_str() + at + 2, nullptr);
    const std::string v = fmt::format("{}", px(legend_y + off + (is_text ? 12.5 : 0)));
    legend_body.replace(at, close - at + 1, v);
    at += v.size();
  }
  legend += legend_body;
  legend += "</g>\n";

  const double width = opt.width > 0 ? opt.width : std::max(kLeft + chart_w, legend_right) + kRight;

  std::string out;
  out.reserve(2000 + compute * (labels ? 190 : 40));
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
  auto x_of = [&](double t) { return kLeft + (t - t0) * scale; };
  out += "<g id=\"axis\">\n";
  for (long k = static_cast<long>(std::ceil(t0 / step - 1e-9));; ++k) {
    const double t = static_cast<double>(k) * step;
    if (t > t1 + 1e-9) break;
    const double x = px(x_of(t));
    fmt::format_to(o, "<line class=\"grid\" x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>\n", x, chart_top - 4,
                   axis_y + 5);
    fmt::format_to(o, "<text class=\"ax\" x=\"{}\" y=\"{}\">{:g}</text>\n", x, axis_y + 18, t);
    if (top_axis) fmt::format_to(o, "<text class=\"ax\" x=\"{}\" y=\"{}\">{:g}</text>\n", x, chart_top - 8, t);
  }
  fmt::format_to(o, "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#444\" stroke-width=\"1\"/>\n", kLeft,
                 axis_y, px(kLeft + chart_w));
  const bool part = t0 > 0 || t1 < makespan;
  fmt::format_to(o, "<text class=\"ax\" x=\"{}\" y=\"{}\">time (step {:.4g}{})</text>\n", px(kLeft + chart_w / 2),
                 axis_y + 34, sim.makespan, part ? fmt::format("; showing {:g} to {:g}", t0, t1) : "");
  out += "</g>\n";

  // One group per rank: a grey band (idle shows through), then the cells.
  for (int r = r0; r <= r1; ++r) {
    const double ry = row_y(r);
    fmt::format_to(o, "<g id=\"rank{}\">\n", r);
    fmt::format_to(o, "<text class=\"lab\" x=\"{}\" y=\"{}\">rank {}</text>\n", kLeft - 10, px(ry + kRowH / 2 + 4.5),
                   r);
    fmt::format_to(o, "<rect class=\"row\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", kLeft, px(ry),
                   px(chart_w), kRowH);
    const double text_y = px(ry + kRowH / 2 + kCellFont * 0.36);
    // Small schedules: a <rect> per cell, with a tooltip and its number.
    // Large ones: one <path> per fill class and rank, a third of the bytes.
    std::vector<std::string> paths(static_cast<std::size_t>(4 * chunks));  // [kind * chunks + chunk]
    std::string frames;
    std::string tip;
    // A cell over [a, b] in time, clipped to the range; false if nothing is left.
    auto cell = [&](int k, int c, double a, double b, int mb) {
      a = std::max(a, t0);
      b = std::min(b, t1);
      if (b <= a) return;
      const double x = x_of(a), w = (b - a) * scale;
      if (!labels) {
        fmt::format_to(std::back_inserter(paths[static_cast<std::size_t>(k * chunks + c)]), "M{} {}h{}v{}h{}z", px(x),
                       px(ry), px(w), kRowH, -px(w));
        return;
      }
      fmt::format_to(o, "<rect class=\"{}{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>", kKindLetter[k], c,
                     px(x), px(ry), px(w), kRowH);
      xml_escape(out, tip);
      out += "</title></rect>\n";
      if (w >= digits(mb) * kDigitW + 4)
        fmt::format_to(o, "<text class=\"t{}\" x=\"{}\" y=\"{}\">{}</text>\n",
                       luminance(fill_rgb(k, c, std::max(chunks, 2))) < 0.3 ? " tw" : "", px(x + w / 2), text_y, mb);
    };
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (!is_compute(a.op)) continue;
      const Span& sp = sim.timeline[r][i];
      if (!visible(sp)) continue;
      if (labels) tip = fmt::format("{} [{:g}, {:g}]", to_string(a), sp.start, sp.end);
      if (a.op != Op::FB) {
        cell(kind_of(a.op), chunk_of(held[r], a.stage), sp.start, sp.end, a.mb);
        continue;
      }
      // Halves of equal width: the pair's inner split is not simulated.
      const double mid = (sp.start + sp.end) / 2;
      const Action f = a.forward_half(), b = a.backward_half();
      cell(kind_of(f.op), chunk_of(held[r], f.stage), sp.start, mid, f.mb);
      cell(kind_of(b.op), chunk_of(held[r], b.stage), mid, sp.end, b.mb);
      // The thick frame would blot out pairs only a few pixels wide.
      const double fa = std::max(sp.start, t0), fb = std::min(sp.end, t1);
      const double x = x_of(fa), w = (fb - fa) * scale;
      if (w < kMinFramedWidth) continue;
      if (labels)
        fmt::format_to(o, "<rect class=\"pair\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", px(x), px(ry),
                       px(w), kRowH);
      else
        fmt::format_to(std::back_inserter(frames), "M{} {}h{}v{}h{}z", px(x), px(ry), px(w), kRowH, -px(w));
    }
    for (int c = 0; c < 4 * chunks; ++c)
      if (!paths[static_cast<std::size_t>(c)].empty())
        fmt::format_to(o, "<path class=\"{}{}\" d=\"{}\"/>\n", kKindLetter[c / chunks], c % chunks,
                       paths[static_cast<std::size_t>(c)]);
    if (!frames.empty()) fmt::format_to(o, "<path class=\"pair\" d=\"{}\"/>\n", frames);
    if (a2a) {
      std::string waits;
      for (const Span& w : sim.a2a_waits[r]) {
        const double a = std::max(w.start, t0), b = std::min(w.end, t1);
        if (b > a)
          fmt::format_to(std::back_inserter(waits), "M{} {}h{}v{}h{}z", px(x_of(a)), px(ry), px((b - a) * scale),
                         kRowH, -px((b - a) * scale));
      }
      if (!waits.empty()) fmt::format_to(o, "<path fill=\"url(#a2a)\" d=\"{}\"/>\n", waits);
    }
    out += "</g>\n";
  }

  out += legend;
  out += "</svg>\n";
  return out;
}

}  // namespace dualpipe
