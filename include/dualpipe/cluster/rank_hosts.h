#pragma once
// Which emulated host runs which rank. The ranks form a mesh of
// `pipeline_ranks` (P) pipeline stages times `expert_ranks` (E) expert
// copies; global rank = expert_index * P + pipeline_index (the pipeline index
// varies fastest). A run without expert parallelism has E = 1.
//
// Rule (docs/emulated_cluster.md shows examples):
// - hosts <= E: host = expert_index % hosts. A whole pipeline stays on one
//   host, and the E expert ranks of one stage sit on different hosts as far
//   as there are hosts, so expert traffic crosses the network.
// - hosts > E: pipeline e owns the hosts h with h % E == e (n_e of them) and
//   its P stages are cut into n_e contiguous blocks, block j on host e + j*E:
//   host = e + E * (p * n_e / P). The experts of one stage still sit on
//   different hosts (host % E == e), consecutive stages share a host except
//   at block borders (as on a real cluster, where a node holds a few stages),
//   and every host gets at least one rank because n_e <= ceil(hosts/E) <= P.
#include <vector>

namespace dualpipe {

// Rank processes one launcher starts on one machine (emulated hosts are
// namespaces of this machine): each holds a model copy, Gloo threads and
// sockets; beyond this a small machine thrashes or runs out of descriptors.
constexpr int kMaxLocalRanks = 64;

// Throws dualpipe::Error unless 1 <= hosts <= ranks, e.g.
// "--emulate-hosts 5 needs at least 5 ranks (the run has 4)".
void check_host_count(int hosts, int ranks);

// The host of `rank` under the rule above; throws dualpipe::Error for a host count
// check_host_count refuses, for P or E below 1, P x E above kMaxLocalRanks,
// or a rank outside 0..P*E-1.
int host_of_rank(int rank, int pipeline_ranks, int expert_ranks, int hosts);

// host_of_rank for every rank 0..P*E-1.
std::vector<int> place_ranks(int pipeline_ranks, int expert_ranks, int hosts);

}  // namespace dualpipe
