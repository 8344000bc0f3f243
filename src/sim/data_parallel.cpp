#include "dualpipe/sim/data_parallel.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/placement.h"

namespace dualpipe {
namespace {

double pick(const std::vector<double>& v, int stage) {
  if (v.empty()) return 0.0;
  return v.size() == 1 ? v[0] : v[static_cast<std::size_t>(stage)];
}

bool any_positive(const std::vector<double>& v) {
  return std::any_of(v.begin(), v.end(), [](double x) { return x > 0; });
}

// One collective on the data-parallel links of a stage's ranks.
struct Job {
  double ready = 0;  // when the last rank of the pipeline that holds the stage has its input
  int stage = 0, bucket = 0;
  double time = 0;   // time on each link
};

// Runs `jobs` in the order they become ready (then by stage and bucket): a
// collective starts when it is ready and the links of all the stage's ranks
// are free, and holds them all until it ends.
void run_jobs(std::vector<Job> jobs, const std::vector<std::vector<int>>& ranks, std::vector<double>& link_free,
              std::vector<RankReduce>& per_rank) {
  std::sort(jobs.begin(), jobs.end(), [](const Job& a, const Job& b) {
    if (a.ready != b.ready) return a.ready < b.ready;
    return a.stage != b.stage ? a.stage < b.stage : a.bucket < b.bucket;
  });
  for (const Job& j : jobs) {
    double start = j.ready;
    for (int r : ranks[j.stage]) start = std::max(start, link_free[r]);
    for (int r : ranks[j.stage]) {
      link_free[r] = start + j.time;
      per_rank[r].link += j.time;
    }
  }
}

}  // namespace

double DataParallel::grads(int stage) const {
  return grad_bytes.empty() ? pick(param_bytes, stage) : pick(grad_bytes, stage);
}
double DataParallel::params(int stage) const {
  return param_bytes.empty() ? pick(grad_bytes, stage) : pick(param_bytes, stage);
}
bool DataParallel::reduces() const { return any_positive(grad_bytes); }
bool DataParallel::has_memory() const {
  return any_positive(grad_bytes) || any_positive(param_bytes) || any_positive(act_mem_bytes);
}

void DataParallel::validate(int stages) const {
  // A collective over D x 2 holders must stay an int; a million replicas of
  // a pipeline is far beyond any cluster.
  if (replicas < 1 || replicas > 1000000)
    throw Error(fmt::format("--dp (data-parallel degree) must be from 1 to 1000000 (got {})", replicas));
  // One collective per bucket and stage: keep their number what a step of
  // the largest schedules holds in actions.
  if (buckets < 1 || buckets > 4096)
    throw Error(fmt::format("--grad-buckets must be from 1 to 4096 (got {})", buckets));
  if (static_cast<long long>(buckets) * stages > (1LL << 24))
    throw Error(fmt::format("--grad-buckets {} x {} stages is more than 2^24 collectives; use fewer buckets", buckets,
                            stages));
  auto check_list = [&](const std::vector<double>& v, const char* option) {
    if (v.size() > 1 && static_cast<int>(v.size()) != stages)
      throw Error(fmt::format("{} has {} values; give one for all stages or one per stage ({})", option, v.size(),
                              stages));
    for (double x : v)
      if (!std::isfinite(x) || x < 0)
        throw Error(fmt::format("{} must be finite and not negative (got {})", option, x));
  };
  check_list(grad_bytes, "--grad-bytes");
  check_list(param_bytes, "--param-bytes");
  check_list(act_mem_bytes, "--act-mem-bytes");
  if (!std::isfinite(rate) || rate < 0)
    throw Error(fmt::format("--dp-rate must be finite and not negative (got {})", rate));
  if (reduces() && rate <= 0)
    throw Error("--grad-bytes needs --dp-rate above 0 (bytes per time unit of a rank's data-parallel link)");
  for (int s = 0; reduces() && s < stages; ++s)
    if (!std::isfinite(2.0 * grads(s) / rate))
      throw Error(fmt::format("the gradient reduction of stage {} overflows (use other units)", s));
}

double ring_allreduce_bytes(double bytes, int holders) {
  return holders <= 1 ? 0.0 : 2.0 * (holders - 1) / holders * bytes;
}

GradReduce reduce_gradients(const Schedule& s, const SimResult& sim, const DataParallel& d) {
  d.validate(s.stages);
  if (sim.timeline.size() != static_cast<std::size_t>(s.ranks))
    throw std::logic_error("reduce_gradients needs a simulation with its timeline");
  GradReduce g;
  g.per_rank.assign(s.ranks, RankReduce{});
  const std::vector<std::vector<int>> ranks = placement_of(s).replicas;

  // Per stage: when each bucket's gradients are ready on the last of its
  // ranks. The last action doing weight-gradient work for the stage (W; B
  // where the backward is not split; the backward half of an F&B pair)
  // finishes the buckets one after another, evenly over its span.
  const int K = d.buckets;
  std::vector<std::vector<double>> ready(s.stages, std::vector<double>(K, 0.0));
  std::vector<int> seen(s.stages, -1);  // rank that last recorded the stage
  for (int r = 0; r < s.ranks; ++r) {
    RankReduce& rr = g.per_rank[r];
    for (const Span& sp : sim.timeline[r]) rr.compute_end = std::max(rr.compute_end, sp.end);
    for (std::size_t pos = s.actions[r].size(); pos-- > 0;) {
      const Action& a = s.actions[r][pos];
      const Action part = a.op == Op::FB ? a.backward_half() : a;  // the part that makes weight gradients
      const int st = part.op == Op::W || part.op == Op::B ? part.stage : -1;
      if (st < 0 || seen[st] == r) continue;
      seen[st] = r;
      const Span& sp = sim.timeline[r][pos];
      for (int k = 0; k < K; ++k) {
        const double t = d.overlap ? sp.start + (sp.end - sp.start) * (k + 1) / K : 0.0;
        ready[st][k] = std::max(ready[st][k], t);
      }
    }
  }
  // Without overlap every reduction waits for the end of its ranks' compute.
  if (!d.overlap)
    for (int st = 0; st < s.stages; ++st)
      for (int r : ranks[st])
        for (double& t : ready[st]) t = std::max(t, g.per_rank[r].compute_end);

  // All-reduce, or ZeRO-1's reduce-scatter (half the bytes) before the optimizer.
  std::vector<double> link_free(s.ranks, 0.0);
  std::vector<Job> jobs;
  auto holders = [&](int st) { return d.replicas * static_cast<int>(ranks[st].size()); };
  for (int st = 0; st < s.stages; ++st) {
    const double bytes = ring_allreduce_bytes(d.grads(st) / K, holders(st)) * (d.zero1 ? 0.5 : 1.0);
    if (!d.reduces() || bytes <= 0) continue;
    for (int k = 0; k < K; ++k) jobs.push_back({ready[st][k], st, k, bytes / d.rate});
  }
  run_jobs(jobs, ranks, link_free, g.per_rank);

  // ZeRO-1: each rank steps its optimizer shard once its compute and its
  // reduce-scatters are done (the step itself is not timed), then the
  // stage's ranks all-gather the updated weights (the weights' bytes, equal
  // to the gradients' unless --param-bytes says otherwise): after the step,
  // so exposed.
  if (d.zero1 && d.reduces()) {
    jobs.clear();
    for (int st = 0; st < s.stages; ++st) {
      const double bytes = 0.5 * ring_allreduce_bytes(d.params(st), holders(st));
      if (bytes <= 0 || d.grads(st) <= 0) continue;
      double t = 0;
      for (int r : ranks[st]) t = std::max({t, g.per_rank[r].compute_end, link_free[r]});
      jobs.push_back({t, st, 0, bytes / d.rate});
    }
    run_jobs(jobs, ranks, link_free, g.per_rank);
  }

  g.step = sim.makespan;
  for (int r = 0; r < s.ranks; ++r) {
    RankReduce& rr = g.per_rank[r];
    rr.end = std::max(rr.compute_end, link_free[r]);
    rr.exposed = rr.end - rr.compute_end;
    g.step = std::max(g.step, rr.end);
    g.link += rr.link;
  }
  g.exposed = g.step - sim.makespan;
  if (!std::isfinite(g.step)) throw Error("the step with gradient reductions overflows a double (use other units)");
  return g;
}

std::vector<RankMemory> rank_memory(const Schedule& s, const DataParallel& d) {
  d.validate(s.stages);
  const std::vector<std::vector<int>> ranks = placement_of(s).replicas;
  const std::vector<double> act = peak_activation_bytes(s, d.act_mem_bytes.empty() ? std::vector<double>{0.0}
                                                                                    : d.act_mem_bytes);
  std::vector<RankMemory> out(s.ranks);
  for (int st = 0; st < s.stages; ++st) {
    // One "parameter" that is the whole stage: its bytes per kind are the
    // stage's bytes, AdamW's two moments twice the weights'.
    HeldParams hp;
    hp.dense = 1;
    hp.dense_replicas = d.replicas * static_cast<int>(ranks[st].size());
    const BytesPerParam bytes{d.params(st), d.grads(st), 2 * d.params(st)};
    const RankMemory m = state_memory(hp, bytes, d.zero1);
    for (int r : ranks[st]) {
      out[r].params += m.params;
      out[r].grads += m.grads;
      out[r].optimizer += m.optimizer;
    }
  }
  for (int r = 0; r < s.ranks; ++r) out[r].activations = act[r];
  return out;
}

}  // namespace dualpipe
