#pragma once
// The bandwidth of one emulated host link, as written on the command line
// (`--link-rate 1gbit`) and as handed to tc's token bucket filter.
#include <cstdint>
#include <string>
#include <vector>

namespace dualpipe {

struct LinkRate {
  std::uint64_t bits_per_second = 0;
};

// Accepts tc's rate units, case-insensitively: bit, kbit, mbit, gbit, tbit
// (powers of 1000), kibit, mibit, gibit, tibit (powers of 1024), and the
// same in bytes per second: bps, kbps, mbps, gbps, tbps, kibps, ... (so
// "10mbps" is 80 Mbit/s). A number may have a fraction ("1.5gbit"). A plain
// number is bits per second (tc itself reads it as bytes per second; on our
// command line every rate without a unit is in bits, like the flag's name).
// The result must lie in 100kbit..100gbit. Throws dualpipe::Error with one line
// otherwise.
LinkRate parse_link_rate(const std::string& text);

// Shortest exact form, e.g. "50mbit", "1gbit", "1500kbit", "12345bit".
std::string to_string(LinkRate rate);

// tbf's parameters for one link at this rate (see docs/emulated_cluster.md):
// burst is the bucket size (bytes that may leave at once after an idle
// pause), limit the bytes that may wait in the queue.
struct TbfParams {
  std::uint64_t burst_bytes = 0;
  std::uint64_t limit_bytes = 0;
};
TbfParams tbf_params(LinkRate rate);

// The tc commands (arguments after "tc") that shape one direction of a link
// on device `dev`: tbf at the rate (tbf_params) at the root, and inside it
// two queues served by priority (htb, whose own rate is twice the link's so
// that only tbf limits): IPv4 packets under 256 bytes (acknowledgements,
// "ready to receive" and other control messages) before everything else, as
// a network card's per-flow queueing lets a sparse flow pass a bulk one.
// The bulk queue holds tbf_params' limit. In order; the first adds the root.
std::vector<std::vector<std::string>> link_queue_commands(const std::string& dev, LinkRate rate);

}  // namespace dualpipe
