// How long `dualpipe plan` takes for DeepSeek-V3 on its 2048-GPU cluster
// (issue 13: under 10 s on the 2-core development machine). Prints the
// wall time of each of a few runs, their median, and what was enumerated
// (the library's default: the 10 best rows exact, the rest pruned by bound).
// Run: build/bench/plan_bench [runs] [global batch]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include "dualpipe/plan/planner.h"
#include "dualpipe/plan/spec.h"

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 3;
  const long long batch = argc > 2 ? std::atoll(argv[2]) : 15360;
  if (runs < 1 || batch < 1) {
    fmt::print(stderr, "usage: plan_bench [runs >= 1] [global batch >= 1]\n");
    return 2;
  }
  dualpipe::plan::PlanRequest req;
  const dualpipe::plan::Preset p = dualpipe::plan::load_preset("deepseek-v3");
  req.model = p.model;
  req.cluster = p.cluster;
  req.global_batch = batch;
  std::vector<double> seconds;
  dualpipe::plan::PlanResult res;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    res = dualpipe::plan::plan(req);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    fmt::print("run {}: {:.3f} s\n", i + 1, seconds.back());
  }
  std::sort(seconds.begin(), seconds.end());
  const auto& best = res.rows.front();
  fmt::print(
      "{{\"preset\": \"deepseek-v3\", \"devices\": {}, \"global_batch\": {}, \"candidates\": {}, \"simulated\": {}, "
      "\"pruned\": {}, \"over_memory\": {}, \"median_s\": {:.3f}, \"min_s\": {:.3f}, \"best\": \"{} pp={} tp={} "
      "ep={} mbs={}\", \"best_step_s\": {:.4g}}}\n",
      req.cluster.devices, batch, res.candidates, res.simulated, res.pruned, res.over_memory,
      seconds[seconds.size() / 2], seconds.front(), best.method, best.par.pp, best.par.tp, best.par.ep,
      best.par.micro_batch_size, best.step_s);
  return 0;
}
