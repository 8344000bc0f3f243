#include "dualpipe/plan/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "dualpipe/plan/partition.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/placement.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe::plan {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
// Micro-batch sizes tried: every divisor of a replica's share of the batch up
// to this many sequences (larger ones only add memory on a pipeline).
constexpr int kMaxMicroBatchSize = 16;

std::vector<int> divisors(long long n, long long limit) {
  std::vector<int> out;
  for (long long d = 1; d <= std::min(n, limit); ++d)
    if (n % d == 0) out.push_back(static_cast<int>(d));
  return out;
}

std::vector<PartCost> stage_parts(const ModelCosts& mc, const std::vector<int>& layout) {
  std::vector<PartCost> parts(layout.size());
  int l = 0;
  for (std::size_t s = 0; s < layout.size(); ++s)
    for (int k = 0; k < layout[s]; ++k) parts[s] += mc.layers[static_cast<std::size_t>(l++)];
  parts.front() += mc.embedding;
  parts.back() += mc.head;
  return parts;
}

// The simulator's costs. A plain action pays its all-to-all (nothing to hide
// it behind); an overlapped F&B pair lasts the larger of its compute and its
// communication (DeepSeek-V3's overlap). The simulator takes one F&B time for
// every pair, so this is the largest pair the schedule runs.
Costs sim_costs(const std::vector<PartCost>& parts, const ModelCosts& mc, const Schedule& s, bool with_comm) {
  Costs c;
  c.F.clear();
  c.B.clear();
  c.W.clear();
  const double k = with_comm ? 1.0 : 0.0;
  for (const PartCost& p : parts) {
    c.F.push_back(p.f + k * p.a2a_f);
    c.B.push_back(p.i + p.w + k * p.a2a_b);
    c.W.push_back(p.w);
  }
  double fb = -1;
  std::set<std::pair<int, int>> seen;
  for (const auto& rank : s.actions)
    for (const Action& a : rank)
      if (a.op == Op::FB && seen.insert({a.forward_half().stage, a.backward_half().stage}).second) {
        const PartCost &f = parts[a.forward_half().stage], &b = parts[a.backward_half().stage];
        fb = std::max(fb, std::max(f.f + b.i + b.w, k * (f.a2a_f + b.a2a_b)));
      }
  if (fb >= 0) c.FB = fb;
  if (with_comm && s.ranks > 1) {
    c.latency = mc.p2p_latency;
    c.bandwidth = mc.p2p_bandwidth;
    c.act_bytes = mc.boundary_bytes;
  }
  return c;
}

std::vector<double> layer_times(const ModelCosts& mc) {
  std::vector<double> t;
  for (const PartCost& p : mc.layers) t.push_back(p.f + p.i + p.w + p.a2a_f + p.a2a_b);
  return t;
}

double part_time(const PartCost& p) { return p.f + p.i + p.w + p.a2a_f + p.a2a_b; }

// Stages of a hand-made layout ("8,8,7" or "Et*8|t*8|t*7L").
int layout_stage_count(const std::string& layout) {
  return static_cast<int>(std::count(layout.begin(), layout.end(),
                                     layout.find_first_of("Et") != std::string::npos ? '|' : ',')) + 1;
}

struct Candidate {
  std::string method;
  int chunks;
  Parallel par;
  int N;
};

class Planner {
 public:
  explicit Planner(const PlanRequest& req) : req_(req) {
    limit_bytes_ = (req.memory_limit_gib > 0 ? req.memory_limit_gib : req.cluster.memory_gib) * kGiB;
  }

  std::vector<Candidate> enumerate() {
    const ModelSpec& m = req_.model;
    const ClusterSpec& c = req_.cluster;
    std::vector<std::string> methods = req_.methods;
    if (methods.empty())
      for (const Method& mm : dualpipe::methods()) methods.emplace_back(mm.name);
    std::vector<Candidate> out;
    for (int pp : divisors(c.devices, m.layers)) {
      if (req_.pp && pp != req_.pp) continue;
      const int dp = c.devices / pp;
      if (req_.global_batch % dp != 0) continue;
      const long long per = req_.global_batch / dp;
      const std::vector<int> eps = m.moe.experts > 0 ? divisors(dp, m.moe.experts) : std::vector<int>{1};
      for (int ep : eps) {
        if (m.moe.experts % ep != 0 || (req_.ep && ep != req_.ep)) continue;
        for (int mbs : divisors(per, req_.micro_batch_size ? req_.micro_batch_size : kMaxMicroBatchSize)) {
          if (req_.micro_batch_size && mbs != req_.micro_batch_size) continue;
          const long long N = per / mbs;
          if (N > kMaxMicroBatches) {
            too_many_micro_batches_ = true;
            continue;
          }
          for (bool recompute : {false, true}) {
          if (m.recompute == (recompute ? "none" : "full")) continue;
          for (const std::string& method : methods) {
            const Method& mm = find_method(method);
            for (int chunks : mm.takes_chunks() ? req_.chunk_options : std::vector<int>{1}) {
              const int S = mm.stage_count(pp, chunks);
              if (S > m.layers) continue;
              if (!req_.layout.empty() && S != layout_stage_count(req_.layout)) continue;
              out.push_back({method, chunks, Parallel{pp, dp, ep, mbs, recompute}, static_cast<int>(N)});
            }
          }
          }
        }
      }
    }
    return out;
  }

  // Fills `row`; returns false when the shape is not one the method runs.
  bool evaluate(const Candidate& cand, const ModelCosts& mc, PlanRow& row, bool simulate_it) const {
    row = PlanRow{};
    row.method = cand.method;
    row.chunks = cand.chunks;
    row.par = cand.par;
    row.micro_batches = cand.N;
    const int P = cand.par.pp, S = find_method(cand.method).stage_count(P, cand.chunks);
    Schedule sched;
    try {
      sched = generate(cand.method, Shape{P, cand.N, cand.chunks});
    } catch (const Error&) {
      return false;  // e.g. DualPipe with an odd number of ranks
    }
    const Placement placement = placement_of(sched);
    row.layout = req_.layout.empty()
                     ? balance_layers(layer_times(mc), part_time(mc.embedding), part_time(mc.head), placement)
                     : parse_layout(req_.layout, S, req_.model.layers);
    const std::vector<PartCost> parts = stage_parts(mc, row.layout);
    std::vector<double> act(parts.size());
    for (std::size_t s = 0; s < parts.size(); ++s) act[s] = parts[s].act_bytes;
    const std::vector<double> peak_act = peak_activation_bytes(sched, act);
    const BytesPerParam bytes{req_.model.param_bytes, req_.model.grad_bytes, req_.model.optimizer_bytes};
    double worst_sync_bytes_dense = 0, worst_sync_bytes_expert = 0;
    for (int r = 0; r < P; ++r) {
      // ZeRO-1 divides a stage's optimizer state over all its holders: the
      // data-parallel replicas times the stage's ranks in one pipeline (two
      // for DualPipe and Chimera). Stages with as many holders are summed
      // first, so the usual one group costs one state_memory call.
      std::map<int, HeldParams> by_holders;
      HeldParams all;
      for (int s : placement.stages_of[static_cast<std::size_t>(r)]) {
        HeldParams& hp = by_holders[placement.holders(s)];
        hp.dense += parts[s].dense_params;
        hp.expert += parts[s].expert_params;
        all.dense += parts[s].dense_params;
        all.expert += parts[s].expert_params;
      }
      RankMemory rm;
      for (auto& [holders, hp] : by_holders) {
        hp.dense_replicas = cand.par.dp * holders;
        hp.expert_replicas = cand.par.dp / cand.par.ep * holders;
        const RankMemory m = state_memory(hp, bytes, req_.zero1);
        rm.params += m.params;
        rm.grads += m.grads;
        rm.optimizer += m.optimizer;
      }
      rm.activations = peak_act[r];
      if (r == 0 || rm.total() > row.peak.total()) {
        row.peak = rm;
        row.peak_rank = r;
      }
      worst_sync_bytes_dense = std::max(worst_sync_bytes_dense, all.dense * bytes.grad);
      worst_sync_bytes_expert = std::max(worst_sync_bytes_expert, all.expert * bytes.grad);
    }
    if (!simulate_it || row.peak.total() > limit_bytes_) return true;
    SimOptions quiet;
    quiet.timeline = false;
    const SimResult with = simulate(sched, sim_costs(parts, mc, sched, true), quiet);
    const SimResult without = simulate(sched, sim_costs(parts, mc, sched, false), quiet);
    row.pipeline_s = with.makespan;
    row.bubble_ratio = with.bubble_ratio;
    row.exposed_comm_s = std::max(0.0, with.makespan - without.makespan);
    // Data-parallel replicas are neighbours (stride 1); expert replicas are ep apart.
    const ClusterSpec& c = req_.cluster;
    row.dp_sync_s = allreduce_seconds(c, worst_sync_bytes_dense, cand.par.dp, 1) +
                    allreduce_seconds(c, worst_sync_bytes_expert, cand.par.dp / cand.par.ep, cand.par.ep);
    row.step_s = row.pipeline_s + row.dp_sync_s;
    return true;
  }

  double limit_bytes() const { return limit_bytes_; }
  bool too_many_micro_batches() const { return too_many_micro_batches_; }

 private:
  const PlanRequest& req_;
  double limit_bytes_;
  bool too_many_micro_batches_ = false;
};

void validate_request(const PlanRequest& req) {
  if (req.global_batch < 1 || req.global_batch > (1LL << 40))
    throw Error(fmt::format("--global-batch must be in [1, {}] sequences (got {})", 1LL << 40, req.global_batch));
  if (req.memory_limit_gib < 0 || !std::isfinite(req.memory_limit_gib))
    throw Error(fmt::format("--memory-limit must be a positive number of GiB (got {})", req.memory_limit_gib));
  for (const std::string& m : req.methods) find_method(m);
  for (int v : req.chunk_options)
    if (v < 1) throw Error(fmt::format("interleaved-1f1b's chunk counts must be at least 1 (got {})", v));
  if (req.pp < 0 || req.pp > req.cluster.devices || (req.pp > 0 && req.cluster.devices % req.pp != 0))
    throw Error(fmt::format("--pp must divide cluster.devices ({}) (got {})", req.cluster.devices, req.pp));
  if (req.pp > req.model.layers)
    throw Error(fmt::format("--pp must be in [1, {}] (model.layers: a stage needs a layer) (got {})", req.model.layers,
                            req.pp));
  if (req.ep < 0 || (req.ep > 0 && (req.model.moe.experts > 0 ? req.model.moe.experts % req.ep != 0 : req.ep != 1)))
    throw Error(fmt::format("--ep must divide model.moe.experts ({}) (got {})", req.model.moe.experts, req.ep));
  if (req.micro_batch_size < 0 || req.micro_batch_size > req.global_batch)
    throw Error(fmt::format("--micro-batch-size must be in [1, --global-batch = {}] (got {})", req.global_batch,
                            req.micro_batch_size));
  // A hand-made cut must place the model's layers whatever the stage count.
  if (!req.layout.empty()) parse_layout(req.layout, layout_stage_count(req.layout), req.model.layers);
}

// Why no candidate was enumerated, naming the option or field to change:
// the batch, the fixed expert degree, or the hand-made layout.
std::string no_shape_reason(const PlanRequest& req) {
  const int devices = req.cluster.devices;
  std::vector<int> dps;  // data-parallel degrees whose pipeline fits the layers and the batch
  for (int pp : divisors(devices, req.model.layers))
    if ((!req.pp || pp == req.pp) && req.global_batch % (devices / pp) == 0) dps.push_back(devices / pp);
  if (dps.empty())
    return fmt::format("no pipeline shape fits: --global-batch {} must be divisible by the data-parallel degree "
                       "(cluster.devices {} / pipeline degree, with at most model.layers = {} stages){}",
                       req.global_batch, devices, req.model.layers, req.pp ? fmt::format(" (--pp {})", req.pp) : "");
  if (req.ep > 0 && std::none_of(dps.begin(), dps.end(), [&](int dp) { return dp % req.ep == 0; }))
    return fmt::format("--ep {} must divide the data-parallel degree (cluster.devices {} / pipeline degree), which "
                       "is {} here{}",
                       req.ep, devices, fmt::join(dps, " or "), req.pp ? fmt::format(" with --pp {}", req.pp) : "");
  if (!req.layout.empty())
    return fmt::format("--layout '{}' has {} stages: no method in the request has that many stages on a pipeline "
                       "degree that divides cluster.devices {} and --global-batch {}",
                       req.layout, layout_stage_count(req.layout), devices, req.global_batch);
  return fmt::format("no pipeline shape fits --global-batch {} on cluster.devices {} with the fixed --pp, --ep and "
                     "--micro-batch-size", req.global_batch, devices);
}

}  // namespace

PlanResult plan(const PlanRequest& req) {
  validate_request(req);
  Planner planner(req);
  const std::vector<Candidate> cands = planner.enumerate();
  PlanResult res;
  res.candidates = static_cast<long long>(cands.size());
  // Work: the actions simulated (twice) over all candidates.
  double work = 0;
  for (const Candidate& c : cands) work += 3.0 * find_method(c.method).stage_count(c.par.pp, c.chunks) * c.N;
  if (work > kMaxSimulatedActions)
    throw Error(fmt::format("cluster.devices {} with --global-batch {}: {} candidate plans of {:.3g} actions in all, "
                            "at most {:.3g} are simulated; fix --pp, --ep or --micro-batch-size, or lower --global-batch",
                            req.cluster.devices, req.global_batch, cands.size(), work, kMaxSimulatedActions));
  if (res.candidates > kMaxCandidates)
    throw Error(fmt::format("cluster.devices {} with --global-batch {} gives {} candidate plans, at most {} are "
                            "enumerated; fix --pp, --ep or --micro-batch-size",
                            req.cluster.devices, req.global_batch, res.candidates, kMaxCandidates));
  if (cands.empty() && planner.too_many_micro_batches())
    throw Error(fmt::format("--global-batch {} on cluster.devices {} needs more than {} micro-batches per pipeline "
                            "at every micro-batch size up to {}; at most {} are simulated (lower --global-batch or "
                            "raise --micro-batch-size)",
                            req.global_batch, req.cluster.devices, kMaxMicroBatches,
                            req.micro_batch_size ? req.micro_batch_size : kMaxMicroBatchSize, kMaxMicroBatches));
  if (cands.empty()) throw Error(no_shape_reason(req));
  ModelCosts mc;
  Parallel last{0, 0, 0, 0, false};
  for (const Candidate& cand : cands) {
    if (cand.par.pp != last.pp || cand.par.ep != last.ep || cand.par.micro_batch_size != last.micro_batch_size ||
        cand.par.recompute != last.recompute) {
      mc = model_costs(req.model, req.cluster, cand.par);
      if (req.use_measured) apply_measured(mc, req.measured, cand.par);
      last = cand.par;
    }
    PlanRow row;
    if (!planner.evaluate(cand, mc, row, true)) continue;
    if (!res.any_candidate || row.peak.total() < res.least_memory.peak.total()) res.least_memory = row;
    res.any_candidate = true;
    if (row.peak.total() > planner.limit_bytes()) {
      ++res.over_memory;
      continue;
    }
    ++res.simulated;
    res.rows.push_back(std::move(row));
  }
  if (!res.any_candidate)
    throw Error("no method runs any of the enumerated shapes (try other --methods or --pp)");
  if (res.rows.empty()) {
    const PlanRow& s = res.least_memory;
    throw Error(fmt::format("no plan fits --memory-limit {:.3g} GiB per device: the smallest ({} pp={} ep={} "
                            "micro-batch {}{}) needs {:.3g} GiB",
                            planner.limit_bytes() / kGiB, s.method, s.par.pp, s.par.ep, s.par.micro_batch_size,
                            s.par.recompute ? ", full recompute" : "", s.peak.total() / kGiB));
  }
  std::stable_sort(res.rows.begin(), res.rows.end(), [](const PlanRow& a, const PlanRow& b) {
    if (a.step_s != b.step_s) return a.step_s < b.step_s;
    return a.peak.total() < b.peak.total();
  });
  return res;
}

BuiltPlan build_plan(const PlanRequest& req, const PlanRow& row) {
  ModelCosts mc = model_costs(req.model, req.cluster, row.par);
  if (req.use_measured) apply_measured(mc, req.measured, row.par);
  BuiltPlan b;
  b.schedule = generate(row.method, Shape{row.par.pp, row.micro_batches, row.chunks});
  const std::vector<PartCost> parts = stage_parts(mc, row.layout);
  b.costs = sim_costs(parts, mc, b.schedule, true);
  for (const PartCost& p : parts) b.act_bytes.push_back(p.act_bytes);
  return b;
}

}  // namespace dualpipe::plan
