#pragma once
// One shape for every command's --format json (docs/json_output.md): one
// object on standard output, "command" naming the command, the inputs beside
// the results at the top level, numbers as JSON numbers without float noise.
// Header only: used by the schedule commands and the LibTorch ones alike.
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

namespace dualpipe::cli {

// `x` rounded to `digits` significant digits, so that it prints shortest
// (0.12345678912 -> 0.123457 with 6; a sum never shows as 21.200000000000003).
// Not finite: null.
inline nlohmann::json clean_number(double x, int digits = 6) {
  if (!std::isfinite(x)) return nullptr;
  return std::strtod(fmt::format("{:.{}g}", x, digits).c_str(), nullptr);
}

// Significant digits of every number a command computes (the simulator's
// sums: 6.599999999999995 is 6.6); measured values are cut further, to the
// digits they carry, where they are made.
inline constexpr int kJsonDigits = 12;

// Every floating-point number in `j`, at any depth, rounded to kJsonDigits.
inline void round_numbers(nlohmann::json& j) {
  if (j.is_number_float()) {
    j = clean_number(j.get<double>(), kJsonDigits);
  } else if (j.is_structured()) {
    for (auto& item : j) round_numbers(item);
  }
}

// A command's --format json output: `j` with "command" set, its numbers
// rounded, indented, ending in a newline.
inline std::string command_json(const std::string& command, nlohmann::json j) {
  j["command"] = command;
  round_numbers(j);
  return j.dump(1) + "\n";
}

}  // namespace dualpipe::cli
