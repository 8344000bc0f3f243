#pragma once
// What the pictures (terminal grid, SVG timeline, line chart) share: the
// action kinds and their letters, each rank's stages in chunk order (which
// sets the shade of a cell), round tick steps and XML escaping. Colours are
// in palette.h. Header-only: a handful of small functions.
#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include "dualpipe/schedule/placement.h"
#include "dualpipe/schedule/schedule.h"

namespace dualpipe {

// Kinds drawn, in palette order: F, B, I, W.
inline constexpr int kKinds = 4;
inline constexpr char kKindLetter[kKinds] = {'F', 'B', 'I', 'W'};

// The kind of a plain compute action (F, B, I or W; anything else counts as W).
inline int kind_of(Op op) {
  switch (op) {
    case Op::F: return 0;
    case Op::B: return 1;
    case Op::I: return 2;
    default: return 3;
  }
}

// [rank]: the stages it holds (its placement) in chunk order: by
// (stage - rank) mod S, so chunk 0 is the stage equal to the rank (DualPipe's
// direction 0, the way down of a V) and later chunks are drawn darker. In
// DualPipe this makes the two directions read apart on every rank, which
// "higher stage index is darker" would not (it flips sides).
inline std::vector<std::vector<int>> chunk_order(const Schedule& s) {
  std::vector<std::vector<int>> held = placement_of(s).stages_of;
  const int S = std::max(s.stages, 1);
  for (std::size_t r = 0; r < held.size(); ++r) {
    const int rank = static_cast<int>(r);
    std::sort(held[r].begin(), held[r].end(),
              [&](int x, int y) { return ((x - rank) % S + S) % S < ((y - rank) % S + S) % S; });
  }
  return held;
}

// Position of `stage` in one rank's chunk order.
inline int chunk_of(const std::vector<int>& chunks, int stage) {
  return static_cast<int>(std::find(chunks.begin(), chunks.end(), stage) - chunks.begin());
}

// Whether `s` holds stage-only actions (UNSHARD, RESHARD, REDUCE_GRAD),
// which take no simulated time: the pictures say they are not drawn.
inline bool any_stage_only(const Schedule& s) {
  for (const auto& rank : s.actions)
    for (const Action& a : rank)
      if (is_stage_only(a.op)) return true;
  return false;
}

// 1, 2 or 5 times a power of ten, at least `v` (> 0): a tick step.
inline double nice_step(double v) {
  const double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= v) return m * p;
  return 10 * p;
}

// Appends `text` with &, <, > and " escaped for XML.
inline void xml_escape(std::string& out, std::string_view text) {
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
inline std::string xml_escaped(std::string_view text) {
  std::string out;
  xml_escape(out, text);
  return out;
}

}  // namespace dualpipe
