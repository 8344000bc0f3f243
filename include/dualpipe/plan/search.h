#pragma once
// Schedule search: per-rank orders for a given placement of stages on ranks
// (one stage per rank, DualPipe's pairs, the V shape, interleaved chunks)
// that simulate to a shorter step than the built-in generators under uneven
// costs. Deterministic for a given seed; docs/planner.md gives the algorithm.
#include <cstdint>
#include <string>
#include <vector>

#include "dualpipe/plan/progress.h"
#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe::plan {

struct SearchRequest {
  int ranks = 0;          // P
  int micro_batches = 0;  // N
  int stages = 0;         // S; 0: the length of a per-stage cost list, else P
  Costs costs;
  int max_activations = 0;   // peak live activations per rank (as simulate counts them); 0: no limit
  std::string from_method;   // search only this method's placement; empty: every placement with S stages
  int chunks = 2;            // for interleaved-1f1b's placement
  std::uint64_t seed = 1;
  int iterations = 3000;     // local-search moves tried after the list scheduler
  // Told after each list-scheduling pass and each local-search move (may be empty).
  ProgressFn progress;
};

struct SearchResult {
  Schedule schedule;  // checked
  SimResult sim;
  std::vector<int> peak_activations;  // per rank
  std::string baseline_method;        // the best generator that fits the limit; empty if none does
  double baseline_makespan = 0;
  std::string found_by;  // "list scheduling (...)", "local search" or "baseline"
  long long evaluations = 0;  // schedules simulated
};

// The most work search() takes on, in action simulations: every schedule it
// simulates (about 3 S N actions each) and every list-scheduling pass,
// which costs about four simulations. About a minute on the development
// machine; beyond it the request is refused, naming the options to lower.
inline constexpr double kMaxSearchWork = 5e8;

// Throws dualpipe::Error for bad requests, requests beyond kMaxSearchWork, and when nothing (neither a generator nor
// the search) fits the activation limit.
SearchResult search(const SearchRequest& req);

// The stage count of the request (see SearchRequest::stages).
int search_stages(const SearchRequest& req);

}  // namespace dualpipe::plan
