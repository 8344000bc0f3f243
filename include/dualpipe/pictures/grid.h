#pragma once
// Compact terminal grid of a schedule: one row per rank, time running left
// to right, one short cell per action placed at its simulated time.
#include <string>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe {

struct GridOptions {
  bool color = false;  // ANSI colours (for terminals); without them plain text
  // Width of the whole picture in characters (every line fits); 0: the
  // chart part takes up to kDefaultGridColumns, for output that is not a terminal.
  int columns = 0;
};
inline constexpr int kDefaultGridColumns = 200;

std::string terminal_grid(const Schedule& s, const SimResult& sim, const GridOptions& opt);
inline std::string terminal_grid(const Schedule& s, const SimResult& sim, bool color) {
  return terminal_grid(s, sim, GridOptions{color, 0});
}

// The width of the terminal on standard output: $COLUMNS when it holds a
// number, else the terminal's own (ioctl), else 0 (not a terminal).
int terminal_columns();

}  // namespace dualpipe
