#pragma once
// Words in messages: counts ("1 step", "3 micro-batches") and lists ("a, b and c").
#include <string>
#include <vector>

namespace dualpipe {

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

// "a", "a and b", "a, b and c" (`last`: the word before the last item).
inline std::string listing(const std::vector<std::string>& items, const std::string& last = "and") {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i)
    out += (i == 0 ? "" : i + 1 == items.size() ? " " + last + " " : ", ") + items[i];
  return out;
}

}  // namespace dualpipe
