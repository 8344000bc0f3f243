#pragma once
// The data-parallel options of `simulate` and `compare` (docs/simulation.md,
// "Data parallelism"): the gradient reduction and the memory table.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dualpipe/sim/data_parallel.h"

namespace dualpipe::cli {

struct DataParallelOptions {
  int dp = 1;
  std::string grad_bytes, param_bytes, act_mem_bytes;  // "1e9" or per stage "1e9:2e9:..."
  double rate = 0;
  int buckets = 1;
  std::string overlap = "on";
  int zero = 0;
  double memory_limit_gib = 0;  // 0: none
  // Set by add_data_parallel_options, to refuse options that do nothing alone.
  CLI::Option *dp_opt = nullptr, *rate_opt = nullptr, *buckets_opt = nullptr, *overlap_opt = nullptr,
              *zero_opt = nullptr, *limit_opt = nullptr;
};

void add_data_parallel_options(CLI::App* app, DataParallelOptions& o);
// Throws dualpipe::Error, one line, for bad values and for options that would
// change nothing without the others they need.
DataParallel make_data_parallel(const DataParallelOptions& o);

// "D=2, ZeRO-1, overlap on, rate 1" for headings.
std::string describe_data_parallel(const DataParallel& d);
// The memory table: one row per rank in GiB with its parts, and with a limit
// whether it fits.
std::string memory_table(const std::vector<RankMemory>& mem, double limit_gib);
// One rank's memory as JSON numbers (bytes).
nlohmann::json memory_json(const RankMemory& m, double limit_gib);

}  // namespace dualpipe::cli
