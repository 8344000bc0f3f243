#include "dualpipe/cluster/link_rate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

struct Unit {
  const char* name;
  double bits;  // bits per second of one unit
};

// tc's rate units (iproute2 tc/tc_util.c), except that no unit means bits.
constexpr Unit kUnits[] = {
    {"", 1.0},
    {"bit", 1.0},
    {"kbit", 1e3},
    {"mbit", 1e6},
    {"gbit", 1e9},
    {"tbit", 1e12},
    {"kibit", 1024.0},
    {"mibit", 1024.0 * 1024},
    {"gibit", 1024.0 * 1024 * 1024},
    {"tibit", 1024.0 * 1024 * 1024 * 1024},
    {"bps", 8.0},
    {"kbps", 8e3},
    {"mbps", 8e6},
    {"gbps", 8e9},
    {"tbps", 8e12},
    {"kibps", 8.0 * 1024},
    {"mibps", 8.0 * 1024 * 1024},
    {"gibps", 8.0 * 1024 * 1024 * 1024},
    {"tibps", 8.0 * 1024 * 1024 * 1024 * 1024},
};

constexpr std::uint64_t kMinRate = 100'000;          // 100kbit: below, one MTU frame takes > 0.1 s
constexpr std::uint64_t kMaxRate = 100'000'000'000;  // 100gbit: far above what veth carries

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

LinkRate parse_link_rate(const std::string& text) {
  const Error bad(fmt::format("--link-rate '{}' is not a rate such as 1gbit or 100mbit", text));
  // Digits, optionally a fraction; no sign, exponent or blanks (strtod alone
  // would take " 1e3" or "inf").
  std::size_t i = 0, digits = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i, ++digits;
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i, ++digits;
  }
  if (digits == 0 || text[0] == '.' || text[i - 1] == '.') throw bad;
  const double number = std::strtod(text.substr(0, i).c_str(), nullptr);
  const std::string unit = lower(text.substr(i));
  const auto u = std::find_if(std::begin(kUnits), std::end(kUnits), [&](const Unit& x) { return unit == x.name; });
  if (u == std::end(kUnits)) throw bad;
  const double bits = std::round(number * u->bits);
  if (!(bits >= static_cast<double>(kMinRate) && bits <= static_cast<double>(kMaxRate)))
    throw Error(fmt::format("--link-rate '{}' is outside {}..{}", text, to_string(LinkRate{kMinRate}),
                            to_string(LinkRate{kMaxRate})));
  return LinkRate{static_cast<std::uint64_t>(bits)};
}

std::string to_string(LinkRate rate) {
  const std::uint64_t b = rate.bits_per_second;
  if (b != 0 && b % 1'000'000'000 == 0) return fmt::format("{}gbit", b / 1'000'000'000);
  if (b != 0 && b % 1'000'000 == 0) return fmt::format("{}mbit", b / 1'000'000);
  if (b != 0 && b % 1'000 == 0) return fmt::format("{}kbit", b / 1'000);
  return fmt::format("{}bit", b);
}

// Why these numbers (docs/emulated_cluster.md has the measurements):
// - burst: the bucket must hold what the link sends while the sender is not
//   running, or tokens overflow and the link delivers less than its rate.
//   Scheduling pauses here are up to about a millisecond, so the bucket holds
//   1 ms of traffic; at low rates at least kMinBurst, two full frames (one
//   is the least tbf can pass; with one, 10mbit carried 1% less). A small
//   bucket keeps short messages honest too: after a pause at most 1 ms worth
//   (or two frames) passes early. With four frames, an 8 KB activation took
//   4 to 6 ms at 10mbit instead of the 6.9 ms its bytes need (two: 8 ms).
//   GSO super-packets larger than the bucket are cut into frames by tbf.
// - limit: the queue behind the bucket. A sender on the host is throttled by
//   TCP small queues before it fills this; on the download side several
//   senders meet, and a short queue would drop and make TCP back off below
//   the rate. 100 ms of traffic (at least kMinLimit) keeps the link busy; the
//   cost is queueing delay only when a link is oversubscribed.
TbfParams tbf_params(LinkRate rate) {
  constexpr std::uint64_t kMinBurst = 2 * 1514;   // two full Ethernet frames
  constexpr std::uint64_t kMinLimit = 256 * 1024;
  const std::uint64_t bytes_per_s = rate.bits_per_second / 8;
  TbfParams p;
  p.burst_bytes = std::max(kMinBurst, bytes_per_s / 1000);
  p.limit_bytes = p.burst_bytes + std::max(kMinLimit, bytes_per_s / 10);
  return p;
}

std::vector<std::vector<std::string>> link_queue_commands(const std::string& dev, LinkRate rate) {
  const TbfParams tbf = tbf_params(rate);
  const std::string bits = fmt::format("{}bit", rate.bits_per_second);
  const std::string inner = fmt::format("{}bit", 2 * rate.bits_per_second);  // never the limit
  auto klass = [&](const char* id, const char* prio) {
    return std::vector<std::string>{"class", "add", "dev", dev, "parent", "10:1", "classid", id, "htb", "rate", inner,
                                    "ceil", inner, "prio", prio, "quantum", "1514"};
  };
  return {
      {"qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", bits, "burst",
       std::to_string(tbf.burst_bytes), "limit", std::to_string(tbf.limit_bytes)},
      {"qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "htb", "default", "20"},
      {"class", "add", "dev", dev, "parent", "10:", "classid", "10:1", "htb", "rate", inner, "ceil", inner},
      klass("10:10", "0"),
      klass("10:20", "1"),
      {"qdisc", "add", "dev", dev, "parent", "10:20", "bfifo", "limit", std::to_string(tbf.limit_bytes)},
      // The IPv4 total length (bytes 2-3 of the header) below 256.
      {"filter", "add", "dev", dev, "parent", "10:", "protocol", "ip", "prio", "1", "u32", "match", "u16", "0x0000",
       "0xff00", "at", "2", "flowid", "10:10"},
  };
}

}  // namespace dualpipe
