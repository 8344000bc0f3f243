#include "dualpipe/cluster/rank_hosts.h"

#include <fmt/format.h>

#include "dualpipe/schedule/error.h"

namespace dualpipe {

void check_host_count(int hosts, int ranks) {
  if (hosts < 1) throw Error(fmt::format("--emulate-hosts must be at least 1 (got {})", hosts));
  if (hosts > ranks)
    throw Error(fmt::format("--emulate-hosts {} needs at least {} ranks (the run has {})", hosts, hosts, ranks));
}

namespace {

void check_mesh(int P, int E, int hosts) {
  if (P < 1 || E < 1)
    throw Error(fmt::format("a rank mesh needs at least one stage and one expert rank (got {}x{})", P, E));
  // In 64 bits: 65536 x 65536 wraps to 0 in an int.
  const long long ranks = static_cast<long long>(P) * E;
  if (ranks > kMaxLocalRanks)
    throw Error(fmt::format("{} x {} = {} ranks, more than the {} rank processes one machine runs", P, E, ranks,
                            kMaxLocalRanks));
  check_host_count(hosts, P * E);
}

}  // namespace

int host_of_rank(int rank, int pipeline_ranks, int expert_ranks, int hosts) {
  const int P = pipeline_ranks, E = expert_ranks;
  check_mesh(P, E, hosts);
  if (rank < 0 || rank >= P * E) throw Error(fmt::format("rank {} is outside 0..{}", rank, P * E - 1));
  const int e = rank / P, p = rank % P;
  if (hosts <= E) return e % hosts;
  const int n_e = (hosts - e + E - 1) / E;  // hosts e, e+E, e+2E, ... below `hosts`
  return e + E * (p * n_e / P);
}

std::vector<int> place_ranks(int pipeline_ranks, int expert_ranks, int hosts) {
  check_mesh(pipeline_ranks, expert_ranks, hosts);
  std::vector<int> hosts_of;
  for (int r = 0; r < pipeline_ranks * expert_ranks; ++r)
    hosts_of.push_back(host_of_rank(r, pipeline_ranks, expert_ranks, hosts));
  return hosts_of;
}

}  // namespace dualpipe
