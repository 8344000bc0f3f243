// Example: generate pipeline schedules with dualpipe::schedule and simulate
// them with dualpipe::sim; no LibTorch involved.
//
//   simulate_schedule [P] [N]     (defaults: 8 ranks, 20 micro-batches)
//
// For every method that supports the shape, prints the simulated step time
// and bubble with the default costs (F=1, B=2, W=1), then draws DualPipe's
// step as a text grid. Exit code 1 if a generated schedule fails the checker.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <dualpipe/pictures/grid.h>
#include <dualpipe/schedule/check.h>
#include <dualpipe/schedule/error.h>
#include <dualpipe/schedule/generators.h>
#include <dualpipe/sim/simulate.h>
#include <dualpipe/version.h>

int main(int argc, char** argv) {
  const int ranks = argc > 1 ? std::atoi(argv[1]) : 8;
  const int micro_batches = argc > 2 ? std::atoi(argv[2]) : 20;
  std::printf("dualpipe %s: P=%d ranks, N=%d micro-batches, costs F=1 B=2 W=1\n", DUALPIPE_VERSION, ranks,
              micro_batches);
  const dualpipe::Costs costs;  // the defaults; parse_costs("F=1,B=2,W=1,FB=3") reads the command line's form
  std::printf("%-18s %8s %10s %8s\n", "method", "stages", "step time", "bubble");
  for (const dualpipe::Method& m : dualpipe::methods()) {
    dualpipe::Schedule s;
    try {
      s = m.generate(dualpipe::Shape{ranks, micro_batches});
    } catch (const dualpipe::Error& e) {  // a shape the method does not support
      std::printf("%-18s %s\n", m.name, e.what());
      continue;
    }
    const dualpipe::CheckReport report = dualpipe::check(s);
    if (!report.ok()) {
      std::fprintf(stderr, "%s: invalid schedule: %s\n", m.name, report.errors.front().c_str());
      return 1;
    }
    const dualpipe::SimResult r = dualpipe::simulate(s, costs);
    std::printf("%-18s %8d %10.1f %7.1f%%\n", m.name, s.stages, r.makespan, 100.0 * r.bubble_ratio);
  }
  const dualpipe::Schedule s = dualpipe::generate("dualpipe", dualpipe::Shape{ranks, micro_batches});
  std::printf("\n%s", dualpipe::terminal_grid(s, dualpipe::simulate(s, costs), dualpipe::GridOptions{false, 100}).c_str());
  return 0;
}
