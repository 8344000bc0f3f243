#pragma once
// Counts in messages: "1 step", "2 steps", "1 micro-batch", "3 micro-batches".
#include <string>

namespace dp {

// `noun` in the singular; the plural adds "es" after ch, sh, s or x, else "s".
inline std::string plural(const std::string& noun, long long n) {
  if (n == 1) return noun;
  const auto ends = [&](const char* tail) {
    const std::string t(tail);
    return noun.size() >= t.size() && noun.compare(noun.size() - t.size(), t.size(), t) == 0;
  };
  return noun + (ends("ch") || ends("sh") || ends("s") || ends("x") ? "es" : "s");
}
inline std::string count_of(long long n, const std::string& noun) { return std::to_string(n) + " " + plural(noun, n); }

}  // namespace dp
