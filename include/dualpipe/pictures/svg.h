#pragma once
// SVG timeline in the style of the DualPipe figure of the DeepSeek-V3 report:
// one row per rank, a colour per action kind, the micro-batch number in each
// cell, each overlapped F&B pair framed as one unit, a time axis and a legend.
#include <optional>
#include <string>
#include <utility>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe {

struct SvgOptions {
  SvgOptions() = default;
  SvgOptions(std::string title_text, std::string subtitle_text = "")
      : title(std::move(title_text)), subtitle(std::move(subtitle_text)) {}

  std::string title;     // drawn above the chart; empty for none
  std::string subtitle;  // e.g. the costs; empty for none
  // Width of the whole picture in px; 0: automatic (wide enough for the
  // micro-batch numbers, up to a limit). Numbers that do not fit their cell
  // are left out either way.
  double width = 0;
  // Part of the step to draw, in simulated time; unset: from 0 / to the end.
  std::optional<double> time_from, time_to;
  // Ranks to draw, first to last inclusive; -1: the last rank.
  int rank_from = 0, rank_to = -1;
};

// `sim` must come from simulate(s, ...) with the timeline recorded. Throws
// dualpipe::Error when the time or rank range is empty or outside the schedule.
std::string timeline_svg(const Schedule& s, const SimResult& sim, const SvgOptions& opt = {});

// Parses "A:B" (either side may be empty) for the range options. Throws dualpipe::Error naming `option`.
void parse_range(const std::string& option, const std::string& text, std::optional<double>& from,
                 std::optional<double>& to);

}  // namespace dualpipe
