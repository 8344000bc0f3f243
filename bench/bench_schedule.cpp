// Generate + check + simulate DualPipe at two sizes (issue goal: P=512,
// N=8192 under 1 s on the 2-core development machine, memory linear in the
// number of actions). Run: build/bench/dualpipe_bench
// Counters: actions per run, and bytes per action of the schedule plus the
// simulator's working arrays, so that the two sizes can be compared as a ratio.
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/sim/simulate.h"

namespace {

void run_once(const dualpipe::Shape& shape) {
  dualpipe::Schedule s = dualpipe::dualpipe(shape);
  benchmark::DoNotOptimize(dualpipe::simulate(s, dualpipe::parse_costs("F=1,B=2,W=1,FB=2.5"), dualpipe::SimOptions{false}).makespan);
}

// Peak resident memory (VmHWM) of a fresh process (this program,
// re-executed) that generates, checks and simulates once; ranks = 0 measures
// an idle one. The child reads its own VmHWM after the job and writes it to a
// pipe: after exec its address space is new, so nothing of this process's
// heap counts. (wait4's ru_maxrss would: Linux carries the forked copy's
// resident size, i.e. this process's, into it at exec.)
double child_peak_rss_bytes(int ranks, int micro_batches) {
  int fds[2];
  if (pipe(fds) != 0) return 0;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDOUT_FILENO);
    std::string p = std::to_string(ranks), n = std::to_string(micro_batches);
    execl("/proc/self/exe", "dualpipe_bench", "--memory-child", p.c_str(), n.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[256];
  for (ssize_t got; (got = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(got));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return out.empty() ? 0.0 : std::stod(out) * 1024.0;
}

// VmHWM of this process in kB, from /proc/self/status.
long vm_hwm_kb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

void BM_Generate(benchmark::State& st) {
  dualpipe::Shape shape{static_cast<int>(st.range(0)), static_cast<int>(st.range(1))};
  std::size_t actions = 0;
  for (auto _ : st) {
    dualpipe::Schedule s = dualpipe::dualpipe(shape);
    actions = s.action_count();
    benchmark::DoNotOptimize(s.actions.data());
  }
  st.counters["actions"] = static_cast<double>(actions);
  st.counters["actions/s"] = benchmark::Counter(static_cast<double>(actions), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Check(benchmark::State& st) {
  dualpipe::Schedule s = dualpipe::dualpipe({static_cast<int>(st.range(0)), static_cast<int>(st.range(1))});
  for (auto _ : st) {
    dualpipe::CheckReport rep = dualpipe::check(s);
    if (!rep.ok()) st.SkipWithError(rep.errors.front().c_str());
  }
  st.counters["actions/s"] =
      benchmark::Counter(static_cast<double>(s.action_count()), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Simulate(benchmark::State& st) {
  dualpipe::Schedule s = dualpipe::dualpipe({static_cast<int>(st.range(0)), static_cast<int>(st.range(1))});
  dualpipe::Costs c = dualpipe::parse_costs("F=1,B=2,W=1,FB=2.5");
  for (auto _ : st) benchmark::DoNotOptimize(dualpipe::simulate(s, c, dualpipe::SimOptions{false}).makespan);
  st.counters["actions/s"] =
      benchmark::Counter(static_cast<double>(s.action_count()), benchmark::Counter::kIsIterationInvariantRate);
}

// The whole user-facing job: what `dualpipe simulate` does before printing.
void BM_GenerateCheckSimulate(benchmark::State& st) {
  dualpipe::Shape shape{static_cast<int>(st.range(0)), static_cast<int>(st.range(1))};
  dualpipe::Costs c = dualpipe::parse_costs("F=1,B=2,W=1,FB=2.5");
  std::size_t actions = 0;
  for (auto _ : st) {
    dualpipe::Schedule s = dualpipe::dualpipe(shape);
    actions = s.action_count();
    benchmark::DoNotOptimize(dualpipe::simulate(s, c, dualpipe::SimOptions{false}).makespan);  // simulate checks first
  }
  const double base = child_peak_rss_bytes(0, 0);
  const double peak = child_peak_rss_bytes(shape.ranks, shape.micro_batches);
  st.counters["actions"] = static_cast<double>(actions);
  st.counters["peak_MiB"] = (peak - base) / (1024.0 * 1024.0);
  st.counters["bytes/action"] = (peak - base) / static_cast<double>(actions);
}

}  // namespace

BENCHMARK(BM_Generate)->Args({64, 1024})->Args({512, 8192})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Check)->Args({64, 1024})->Args({512, 8192})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Simulate)->Args({64, 1024})->Args({512, 8192})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GenerateCheckSimulate)->Args({64, 1024})->Args({256, 4096})->Args({512, 8192})->Unit(benchmark::kMillisecond);
int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--memory-child") {
    int ranks = std::stoi(argv[2]), mbs = std::stoi(argv[3]);
    if (ranks > 0) run_once(dualpipe::Shape{ranks, mbs});
    std::printf("%ld\n", vm_hwm_kb());
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
