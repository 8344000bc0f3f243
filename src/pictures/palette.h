#pragma once
// Colours of the action kinds: the SVG timeline's (and its tests') and the
// terminal grid's.
//
// Chosen to stay apart for colour-blind readers: under a simulated
// deuteranopia or protanopia (Machado et al. 2009, severity 1) every two
// kinds of one shade differ by at least 14 CIELAB units, and the light and
// dark shade of one kind by at least 17 (tests/test_pictures.cpp computes it).
// The light shades take black text; dark B, I and W take white text.
namespace dualpipe {

struct KindColours {
  const char* light;  // the rank's first stage (chunk 0)
  const char* dark;   // its second (or last) stage
  const char* name;   // legend text
};

// Indexed F, B, I, W.
inline constexpr KindColours kKindColours[4] = {
    {"#f5c26b", "#e69f00", "forward"},
    {"#8fc8ec", "#2f7fc4", "backward"},
    {"#7fd1b4", "#138a66", "backward for input"},
    {"#d493c0", "#a8468c", "backward for weights"},
};

// The terminal grid: ANSI 256-colour backgrounds, [kind][shade] light to
// dark, kinds as above; the two darker shades take white text.
inline constexpr int kAnsiShades = 4;
inline constexpr int kAnsiBackground[4][kAnsiShades] = {
    {223, 215, 214, 172},  // F orange
    {153, 117, 75, 32},    // B blue
    {158, 115, 72, 29},    // I green
    {225, 218, 176, 132},  // W purple
};

}  // namespace dualpipe
