// wakeup_latency: what one cross-thread message costs on this machine, the
// floor under every transfer between ranks. A writer thread busy-computes
// for a while (so the reader has gone to sleep, as a waiting rank does),
// then writes 8 bytes into a pipe; the reader wakes and notes the delay.
// Measured with the reader on the other core and on the same core, and the
// writer's own cost of the write. scripts/benchmarks.sh puts the figures in
// docs/BENCHMARKS.md next to the runtime's per-action overhead.
//
//   wakeup_latency [BUSY_US] [ROUNDS]      (defaults 500 and 2000)
// Prints one JSON object.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double now_us() { return std::chrono::duration<double, std::micro>(Clock::now().time_since_epoch()).count(); }

bool pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0;
}

struct Stats {
  double median = 0, p90 = 0, p99 = 0, max = 0;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return {v[n / 2], v[n * 9 / 10], v[n * 99 / 100], v[n - 1]};
}

// Wake-up delay seen by the reader, and the writer's time in write().
std::pair<Stats, Stats> measure(int reader_cpu, double busy_us, int rounds) {
  int fds[2];
  if (pipe(fds) != 0) {
    std::perror("pipe");
    std::exit(1);
  }
  std::vector<double> delay, cost;
  delay.reserve(rounds);
  cost.reserve(rounds);
  std::thread reader([&] {
    pin(reader_cpu);
    for (int i = 0; i < rounds; ++i) {
      double sent = 0;
      if (read(fds[0], &sent, sizeof sent) != sizeof sent) std::exit(1);
      delay.push_back(now_us() - sent);
    }
  });
  pin(0);
  for (int i = 0; i < rounds; ++i) {
    const double t = now_us();
    while (now_us() - t < busy_us) {
    }
    const double sent = now_us();
    if (write(fds[1], &sent, sizeof sent) != sizeof sent) std::exit(1);
    cost.push_back(now_us() - sent);
  }
  reader.join();
  close(fds[0]);
  close(fds[1]);
  return {stats(delay), stats(cost)};
}

void print(const char* name, const Stats& s, bool comma) {
  std::printf("  \"%s\": {\"median_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f}%s\n", name,
              s.median, s.p90, s.p99, s.max, comma ? "," : "");
}

}  // namespace

int main(int argc, char** argv) {
  const double busy = argc > 1 ? std::atof(argv[1]) : 500.0;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 2000;
  if (busy < 0 || rounds < 10) {
    std::fprintf(stderr, "usage: wakeup_latency [BUSY_US >= 0] [ROUNDS >= 10]\n");
    return 2;
  }
  const bool two = std::thread::hardware_concurrency() > 1;
  auto [same_delay, same_cost] = measure(0, busy, rounds);
  std::printf("{\n  \"busy_us\": %.0f,\n  \"rounds\": %d,\n", busy, rounds);
  print("same_core_wakeup", same_delay, true);
  print("same_core_write", same_cost, two);
  if (two) {
    auto [other_delay, other_cost] = measure(1, busy, rounds);
    print("other_core_wakeup", other_delay, true);
    print("other_core_write", other_cost, false);
  }
  std::printf("}\n");
  return 0;
}
