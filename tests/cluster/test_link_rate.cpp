#include <gtest/gtest.h>

#include "dualpipe/cluster/link_rate.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

std::uint64_t bits(const std::string& s) { return parse_link_rate(s).bits_per_second; }

std::string error_of(const std::string& s) {
  try {
    parse_link_rate(s);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LinkRate, ReadsTcUnits) {
  EXPECT_EQ(bits("100mbit"), 100'000'000u);
  EXPECT_EQ(bits("1gbit"), 1'000'000'000u);
  EXPECT_EQ(bits("500kbit"), 500'000u);
  EXPECT_EQ(bits("10gbit"), 10'000'000'000u);
  EXPECT_EQ(bits("2000000bit"), 2'000'000u);
  EXPECT_EQ(bits("128kibit"), 128u * 1024);
  EXPECT_EQ(bits("1mibit"), 1024u * 1024);
  EXPECT_EQ(bits("1.5gbit"), 1'500'000'000u);
  EXPECT_EQ(bits("1GBit"), 1'000'000'000u);  // tc's units ignore case
}

TEST(LinkRate, BpsUnitsAreBytes) {
  EXPECT_EQ(bits("10mbps"), 80'000'000u);
  EXPECT_EQ(bits("1gbps"), 8'000'000'000u);
  EXPECT_EQ(bits("100000bps"), 800'000u);
  EXPECT_EQ(bits("1mibps"), 8u * 1024 * 1024);
}

TEST(LinkRate, PlainNumbersAreBits) { EXPECT_EQ(bits("1000000"), 1'000'000u); }

TEST(LinkRate, RefusesWhatIsNotARate) {
  EXPECT_EQ(error_of("abc"), "--link-rate 'abc' is not a rate such as 1gbit or 100mbit");
  for (const char* bad : {"", "mbit", "10 mbit", " 10mbit", "-1mbit", "+1mbit", "1e9", "1.", ".5gbit", "10mbitx",
                          "10mb", "inf", "nan", "1,5gbit", "0x10mbit"})
    EXPECT_EQ(error_of(bad), std::string("--link-rate '") + bad + "' is not a rate such as 1gbit or 100mbit") << bad;
}

TEST(LinkRate, RefusesRatesOutOfRange) {
  EXPECT_EQ(error_of("50kbit"), "--link-rate '50kbit' is outside 100kbit..100gbit");
  EXPECT_EQ(error_of("0"), "--link-rate '0' is outside 100kbit..100gbit");
  EXPECT_EQ(error_of("101gbit"), "--link-rate '101gbit' is outside 100kbit..100gbit");
  EXPECT_EQ(error_of("99999999999999999999999999999gbit"),
            "--link-rate '99999999999999999999999999999gbit' is outside 100kbit..100gbit");
  EXPECT_EQ(bits("100kbit"), 100'000u);
  EXPECT_EQ(bits("100gbit"), 100'000'000'000u);
}

TEST(LinkRate, PrintsTheShortestExactForm) {
  EXPECT_EQ(to_string(LinkRate{50'000'000}), "50mbit");
  EXPECT_EQ(to_string(LinkRate{1'000'000'000}), "1gbit");
  EXPECT_EQ(to_string(LinkRate{1'500'000}), "1500kbit");
  EXPECT_EQ(to_string(LinkRate{12'345}), "12345bit");
  for (const char* s : {"10mbit", "1gbit", "500kbit", "2500mbit"}) EXPECT_EQ(to_string(parse_link_rate(s)), s);
}

TEST(LinkRate, TbfBucketHoldsAMillisecondAndTwoFrames) {
  for (std::uint64_t rate : {100'000ull, 10'000'000ull, 100'000'000ull, 1'000'000'000ull, 10'000'000'000ull}) {
    const TbfParams p = tbf_params(LinkRate{rate});
    EXPECT_GE(p.burst_bytes, rate / 8 / 1000) << rate;   // a millisecond of traffic
    EXPECT_GE(p.burst_bytes, 2u * 1514) << rate;         // full frames always pass
    EXPECT_GE(p.limit_bytes, p.burst_bytes + rate / 8 / 10) << rate;  // 100 ms of queue
  }
  // At 10gbit the millisecond dominates: 1.25 MB.
  EXPECT_EQ(tbf_params(LinkRate{10'000'000'000ull}).burst_bytes, 1'250'000u);
}

// tbf at the root shapes to the rate; inside it an htb that never limits
// (twice the rate) serves IPv4 packets under 256 bytes before the bulk
// queue, which holds tbf's limit.
TEST(LinkRate, LinkQueueIsTbfWithSmallPacketsFirstInside) {
  const LinkRate rate{50'000'000};
  const TbfParams p = tbf_params(rate);
  const auto commands = link_queue_commands("eth0", rate);
  auto joined = [](const std::vector<std::string>& c) {
    std::string s;
    for (const auto& w : c) s += (s.empty() ? "" : " ") + w;
    return s;
  };
  ASSERT_EQ(commands.size(), 7u);
  EXPECT_EQ(joined(commands[0]), "qdisc add dev eth0 root handle 1: tbf rate 50000000bit burst " +
                                     std::to_string(p.burst_bytes) + " limit " + std::to_string(p.limit_bytes));
  EXPECT_EQ(joined(commands[1]), "qdisc add dev eth0 parent 1:1 handle 10: htb default 20");
  std::string all;
  for (const auto& c : commands) all += joined(c) + "\n";
  EXPECT_NE(all.find("classid 10:10 htb rate 100000000bit ceil 100000000bit prio 0"), std::string::npos) << all;
  EXPECT_NE(all.find("classid 10:20 htb rate 100000000bit ceil 100000000bit prio 1"), std::string::npos) << all;
  EXPECT_NE(all.find("parent 10:20 bfifo limit " + std::to_string(p.limit_bytes)), std::string::npos) << all;
  EXPECT_NE(all.find("u32 match u16 0x0000 0xff00 at 2 flowid 10:10"), std::string::npos) << all;
}

}  // namespace
}  // namespace dualpipe
