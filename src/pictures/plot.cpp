#include "dualpipe/pictures/plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "pictures/layout.h"

namespace dualpipe {
namespace {

// Round step for about `n` ticks over `span`.
double tick_step(double span, int n) { return nice_step(span / n); }

}  // namespace

std::string line_chart_svg(const std::string& title, const std::string& x_label, const std::string& y_label,
                           const std::vector<double>& xs, const std::vector<double>& ys) {
  const double W = 800, H = 420, left = 70, right = 20, top = 40, bottom = 50;
  const double pw = W - left - right, ph = H - top - bottom;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (!xs.empty()) {
    x0 = *std::min_element(xs.begin(), xs.end());
    x1 = *std::max_element(xs.begin(), xs.end());
    y0 = *std::min_element(ys.begin(), ys.end());
    y1 = *std::max_element(ys.begin(), ys.end());
  }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * ph; };
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
      W, H);
  s += fmt::format("<text x=\"{}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>\n", left, xml_escaped(title));
  // Steps (or any x that is a whole number everywhere) get whole-number ticks.
  const bool whole_x = std::all_of(xs.begin(), xs.end(), [](double x) { return x == std::floor(x); });
  const double xs_step = whole_x ? std::max(1.0, tick_step(x1 - x0, 8)) : tick_step(x1 - x0, 8);
  const double ys_step = tick_step(y1 - y0, 6);
  for (double t = std::ceil(y0 / ys_step) * ys_step; t <= y1; t += ys_step)
    s += fmt::format(
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#e4e4e4\"/><text x=\"{3}\" y=\"{4:.1f}\" "
        "text-anchor=\"end\">{5:g}</text>\n",
        left, left + pw, Y(t), left - 6, Y(t) + 4, t);
  for (double t = std::ceil(x0 / xs_step) * xs_step; t <= x1; t += xs_step)
    s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:g}</text>\n", X(t), top + ph + 18, t);
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", left, top,
                   pw, ph);
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, H - 10,
                   xml_escaped(x_label));
  s += fmt::format("<text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n", top + ph / 2,
                   xml_escaped(y_label));
  std::string pts;
  for (std::size_t i = 0; i < xs.size(); ++i) pts += fmt::format("{:.1f},{:.1f} ", X(xs[i]), Y(ys[i]));
  s += fmt::format("<polyline fill=\"none\" stroke=\"#1f6fb4\" stroke-width=\"2\" points=\"{}\"/>\n", pts);
  s += "</svg>\n";
  return s;
}

}  // namespace dualpipe
