#pragma once
// A plain line chart as SVG (the training loss curve).
#include <string>
#include <vector>

namespace dualpipe {

std::string line_chart_svg(const std::string& title, const std::string& x_label, const std::string& y_label,
                           const std::vector<double>& xs, const std::vector<double>& ys);

}  // namespace dualpipe
