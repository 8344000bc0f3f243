#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "dualpipe/cluster/rank_hosts.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

using V = std::vector<int>;

TEST(RankHosts, PipelineOnlyCutsStagesIntoContiguousBlocks) {
  EXPECT_EQ(place_ranks(4, 1, 1), (V{0, 0, 0, 0}));
  EXPECT_EQ(place_ranks(4, 1, 2), (V{0, 0, 1, 1}));
  EXPECT_EQ(place_ranks(4, 1, 3), (V{0, 0, 1, 2}));
  EXPECT_EQ(place_ranks(4, 1, 4), (V{0, 1, 2, 3}));
  EXPECT_EQ(place_ranks(8, 1, 2), (V{0, 0, 0, 0, 1, 1, 1, 1}));
}

TEST(RankHosts, FewerHostsThanExpertsKeepsEachPipelineOnOneHost) {
  // rank = e * P + p: ranks 0,1 are expert 0's two stages, 2,3 expert 1's, ...
  EXPECT_EQ(place_ranks(2, 4, 2), (V{0, 0, 1, 1, 0, 0, 1, 1}));
  EXPECT_EQ(place_ranks(2, 4, 4), (V{0, 0, 1, 1, 2, 2, 3, 3}));
  EXPECT_EQ(place_ranks(1, 3, 2), (V{0, 1, 0}));
}

TEST(RankHosts, MoreHostsThanExpertsSpreadsStagesOverThem) {
  // Expert 0 owns hosts 0 and 2, expert 1 hosts 1 and 3; stages 0,1 | 2,3.
  EXPECT_EQ(place_ranks(4, 2, 4), (V{0, 0, 2, 2, 1, 1, 3, 3}));
  // Three hosts for two experts: expert 0 owns 0 and 2, expert 1 only 1.
  EXPECT_EQ(place_ranks(2, 2, 3), (V{0, 2, 1, 1}));
  EXPECT_EQ(place_ranks(2, 2, 4), (V{0, 2, 1, 3}));
}

// The rule's promises, over many shapes: every host gets a rank, the expert
// ranks of one stage sit on different hosts (spread as evenly as the hosts
// allow when there are fewer hosts than experts), and a pipeline visits its
// hosts in contiguous blocks of stages.
TEST(RankHosts, PromisesHoldForManyShapes) {
  for (int P = 1; P <= 8; ++P)
    for (int E = 1; E <= 6; ++E)
      for (int H = 1; H <= P * E && H <= 24; ++H) {
        const V hosts = place_ranks(P, E, H);
        const std::string shape = "P=" + std::to_string(P) + " E=" + std::to_string(E) + " H=" + std::to_string(H);
        ASSERT_EQ(hosts.size(), static_cast<std::size_t>(P * E)) << shape;
        EXPECT_EQ(std::set<int>(hosts.begin(), hosts.end()).size(), static_cast<std::size_t>(H)) << shape;
        for (int p = 0; p < P; ++p) {
          std::vector<int> per_host(static_cast<std::size_t>(H), 0);
          for (int e = 0; e < E; ++e) ++per_host[static_cast<std::size_t>(hosts[static_cast<std::size_t>(e * P + p)])];
          const int most = *std::max_element(per_host.begin(), per_host.end());
          EXPECT_EQ(most, (E + H - 1) / H) << shape << " stage " << p;
        }
        for (int e = 0; e < E; ++e) {
          std::set<int> left;  // hosts this pipeline has moved away from
          for (int p = 1; p < P; ++p) {
            const int prev = hosts[static_cast<std::size_t>(e * P + p - 1)], cur = hosts[static_cast<std::size_t>(e * P + p)];
            if (cur != prev) left.insert(prev);
            EXPECT_EQ(left.count(cur), 0u) << shape << " pipeline " << e << " returns to host " << cur;
          }
        }
      }
}

TEST(RankHosts, MoreHostsThanRanksIsRefused) {
  try {
    host_of_rank(0, 2, 2, 5);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "--emulate-hosts 5 needs at least 5 ranks (the run has 4)");
  }
  EXPECT_THROW(place_ranks(4, 1, 5), Error);
  EXPECT_THROW(check_host_count(0, 4), Error);
  EXPECT_NO_THROW(check_host_count(4, 4));
  EXPECT_THROW(host_of_rank(4, 2, 2, 2), Error);   // no rank 4 in a 2x2 mesh
  EXPECT_THROW(host_of_rank(-1, 2, 2, 2), Error);
  EXPECT_THROW(place_ranks(0, 2, 1), Error);
}

}  // namespace
}  // namespace dualpipe
