#pragma once
// The presets of presets/*.json, compiled into the program (CMake writes
// presets_data.cpp from the files), so an installed dualpipe finds them.
#include <vector>

namespace dualpipe::plan {

struct EmbeddedPreset {
  const char* name;  // file name without .json
  const char* json;  // {"model": {...}, "cluster": {...}}
};
const std::vector<EmbeddedPreset>& embedded_presets();

}  // namespace dualpipe::plan
