#pragma once
// Words in messages: counts ("1 step", "3 micro-batches"), lists ("a, b and
// c"), and text from outside made safe to print.
#include <fmt/format.h>

#include <string>
#include <string_view>
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

// `text` made safe for one line on a terminal: control bytes (escape
// sequences, NUL, newlines; C1 controls too) and bytes that are not UTF-8
// become \xNN; printable UTF-8 (a file name in any script) stays as it is.
// Messages echo what the user gave (an argument, bytes of a binary file).
inline std::string terminal_text(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
    const unsigned char c = byte(i);
    const std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = len > 0 && i + len <= text.size() && !(len == 1 && (c < 0x20 || c == 0x7f));
    for (std::size_t k = 1; ok && k < len; ++k) ok = (byte(i + k) >> 6) == 0x2;
    if (ok && len == 2 && c == 0xc2 && byte(i + 1) < 0xa0) ok = false;  // U+0080..U+009F
    if (!ok) {
      out += fmt::format("\\x{:02x}", c);
      ++i;
      continue;
    }
    out.append(text.substr(i, len));
    i += len;
  }
  return out;
}

}  // namespace dualpipe
