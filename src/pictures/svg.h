#pragma once
// SVG timeline in the style of the DualPipe figure of the DeepSeek-V3 report:
// one row per rank, a colour per action kind, the micro-batch number in each
// cell, each overlapped F&B pair framed as one unit, a time axis and a legend.
#include <string>

#include "schedule/schedule.h"
#include "sim/simulate.h"

namespace dp {

struct SvgOptions {
  std::string title;     // drawn above the chart; empty for none
  std::string subtitle;  // e.g. the costs; empty for none
};

// `sim` must come from simulate(s, ...) with the timeline recorded.
std::string timeline_svg(const Schedule& s, const SimResult& sim, const SvgOptions& opt = {});

}  // namespace dp
