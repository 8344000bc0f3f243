#include "dualpipe/plan/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <queue>
#include <set>
#include <tuple>

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

bool has_pairs(const Schedule& s) {
  for (const auto& rank : s.actions)
    for (const Action& a : rank)
      if (a.op == Op::FB) return true;
  return false;
}

// Which communication the simulator is given (all of it for the step; parts
// of it to split the step into its causes).
struct CommMask {
  bool a2a = true, p2p = true, tp = true;
};

// The simulator's costs. A plain action pays its all-to-all (nothing to hide
// it behind); an overlapped F&B pair lasts the larger of its compute and its
// communication (DeepSeek-V3's overlap), each pair of stages its own.
// Tensor-parallel collectives sit between a layer's matrix products and are
// paid in full.
Costs sim_costs(const std::vector<PartCost>& parts, const ModelCosts& mc, const Schedule& s, CommMask mask) {
  Costs c;
  c.F.clear();
  c.B.clear();
  c.W.clear();
  const double ka = mask.a2a ? 1.0 : 0.0, kt = mask.tp ? 1.0 : 0.0;
  for (const PartCost& p : parts) {
    c.F.push_back(p.f + ka * p.a2a_f + kt * p.tp_f);
    c.B.push_back(p.i + p.w + ka * p.a2a_b + kt * p.tp_b);
    c.W.push_back(p.w);
  }
  if (has_pairs(s)) {  // each pair of stages its own F&B time
    const std::size_t S = parts.size();
    c.FB_pair.resize(S * S);
    c.FB_pair_stages = static_cast<int>(S);
    for (std::size_t fs = 0; fs < S; ++fs)
      for (std::size_t bs = 0; bs < S; ++bs) {
        const PartCost &f = parts[fs], &b = parts[bs];
        c.FB_pair[fs * S + bs] = std::max(f.f + b.i + b.w, ka * (f.a2a_f + b.a2a_b)) + kt * (f.tp_f + b.tp_b);
      }
  }
  if (mask.p2p && s.ranks > 1) {
    c.latency = mc.p2p_latency;
    c.bandwidth = mc.p2p_bandwidth;
    c.act_bytes = mc.boundary_bytes;
  }
  return c;
}

// A part's time per micro-batch, as the cut weighs it: compute and
// communication one after the other, or, where the schedule overlaps F&B
// pairs (DualPipe, DualPipeV), the larger of compute and all-to-all (the
// pairs hide one behind the other).
double part_time(const PartCost& p, bool overlapped) {
  const double compute = p.f + p.i + p.w, a2a = p.a2a_f + p.a2a_b;
  return (overlapped ? std::max(compute, a2a) : compute + a2a) + p.tp_f + p.tp_b;
}

std::vector<double> layer_times(const ModelCosts& mc, bool overlapped) {
  std::vector<double> t;
  for (const PartCost& p : mc.layers) t.push_back(part_time(p, overlapped));
  return t;
}


SimResult simulate_quietly(const Schedule& s, const Costs& c) {
  SimOptions quiet;
  quiet.timeline = false;
  return simulate(s, c, quiet);
}

// Stages of a hand-made layout ("8,8,7" or "Et*8|t*8|t*7L").
int layout_stage_count(const std::string& layout) {
  return static_cast<int>(std::count(layout.begin(), layout.end(),
                                     layout.find_first_of("Et") != std::string::npos ? '|' : ',')) + 1;
}

struct Candidate {  // one shape to evaluate
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

  // In an order where consecutive candidates share a schedule (only the
  // expert degree and recomputation change between them).
  std::vector<Candidate> enumerate() {
    const ModelSpec& m = req_.model;
    const ClusterSpec& c = req_.cluster;
    std::vector<Candidate> out;
    for (int tp : tensor_degrees())
      for (int pp : divisors(c.devices / tp, m.layers)) {
        if (req_.pp && pp != req_.pp) continue;
        const int dp = c.devices / tp / pp;
        if (req_.global_batch % dp != 0) continue;
        std::vector<int> eps;
        for (int ep : m.moe.experts > 0 ? divisors(dp, m.moe.experts) : std::vector<int>{1})
          if (m.moe.experts % ep == 0 && (!req_.ep || ep == req_.ep) && fits_measured_experts(ep)) eps.push_back(ep);
        if (!eps.empty()) add_batches(Parallel{pp, dp, 1, 1, {}, tp}, eps, out);
      }
    return out;
  }

  // Fills `row` but for its simulation: layout, memory, data-parallel sync,
  // and in `bound` a step no simulation can beat (the busiest device's
  // compute plus the sync). Returns false when the shape is not one the
  // method runs.
  bool prepare(const Candidate& cand, const ModelCosts& mc, PlanRow& row, double& bound) const {
    row = PlanRow{};
    row.method = cand.method;
    row.chunks = cand.chunks;
    row.par = cand.par;
    row.micro_batches = cand.N;
    const Schedule* cached = schedule_of(cand);
    if (!cached) return false;  // e.g. DualPipe with an odd number of ranks
    const Schedule& sched = *cached;
    const Placement placement = placement_of(sched);
    const bool pairs = has_pairs(sched);
    row.layout = req_.layout.empty()
                     ? balance_layers(layer_times(mc, pairs), part_time(mc.embedding, pairs),
                                      part_time(mc.head, pairs), placement)
                     : parse_layout(req_.layout, placement.stages, req_.model.layers);
    const std::vector<PartCost> parts = stage_parts(mc, row.layout);
    const SyncBytes sync = fill_memory(cand, sched, placement, parts, row);
    row.reserve_bytes = req_.cluster.reserve_gib * kGiB;
    row.not_executable = missing_in_runtime(cand.par);
    fill_dp_sync(cand, placement, parts, sync, row);
    bound = busiest(parts, placement, cand.N).work + row.dp_sync_s;
    return true;
  }

  // Simulates a prepared row (the schedule from the cache when the previous
  // row had the same).
  void simulate_row(const ModelCosts& mc, PlanRow& row) const {
    const Schedule& sched = *schedule_of(Candidate{row.method, row.chunks, row.par, row.micro_batches});
    const std::vector<PartCost> parts = stage_parts(mc, row.layout);
    const SimResult with = simulate_quietly(sched, sim_costs(parts, mc, sched, CommMask{}));
    row.pipeline_s = with.makespan;
    row.bubble_ratio = with.bubble_ratio;
    row.step_s = row.pipeline_s + row.dp_sync_s;
  }

  // Splits a simulated row's step into its causes (docs/planner.md).
  void explain(PlanRow& row, const ModelCosts& mc) const {
    const Schedule sched = generate(row.method, Shape{row.par.pp, row.micro_batches, row.chunks});
    const std::vector<PartCost> parts = stage_parts(mc, row.layout);
    const double none = simulate_quietly(sched, sim_costs(parts, mc, sched, CommMask{false, false, false})).makespan;
    const double a2a = simulate_quietly(sched, sim_costs(parts, mc, sched, CommMask{true, false, false})).makespan;
    const double p2p = simulate_quietly(sched, sim_costs(parts, mc, sched, CommMask{true, true, false})).makespan;
    const Work b = busiest(parts, placement_of(sched), row.micro_batches);
    row.exposed_comm_s = std::max(0.0, row.pipeline_s - none);
    StepSplit& sp = row.split;
    sp.compute = b.work - b.recompute;
    sp.recompute = b.recompute;
    sp.bubble = std::max(0.0, none - b.work);  // never below 0 but for rounding
    sp.expert_comm = a2a - none;
    sp.pipeline_comm = p2p - a2a;
    sp.tp_comm = row.pipeline_s - p2p;
    sp.dp_sync = row.dp_sync_s;
    sp.valid = true;
  }

  // A floor under the memory of the candidate's fullest device, from the
  // model's totals alone, before its layers are cut or its schedule built:
  // the average device's. A device holds, on average, 1/pp of the weights
  // and gradients and its share of the optimizer state (divided over the
  // replicas with ZeRO-1), and at its peak at least one micro-batch's
  // activations of a stage it runs, which averages the model's activations
  // over the method's stages (its stage count: pp, 2pp or chunks x pp).
  double memory_floor(const Candidate& cand, const ModelCosts& mc) const {
    PartCost all = mc.embedding;
    all += mc.head;
    for (const PartCost& p : mc.layers) all += p;
    const int pp = cand.par.pp;
    const HeldParams avg{all.dense_params / pp, all.expert_params / pp, cand.par.dp, cand.par.dp / cand.par.ep};
    const BytesPerParam bytes{req_.model.param_bytes, req_.model.grad_bytes, req_.model.optimizer_bytes};
    RankMemory m = state_memory(avg, bytes, req_.zero1);
    m.activations = all.act_bytes / find_method(cand.method).stage_count(pp, cand.chunks);
    return m.total() + req_.cluster.reserve_gib * kGiB;
  }

  // Whether the candidate's method runs its shape (the schedule generates).
  bool runs(const Candidate& cand) const { return schedule_of(cand) != nullptr; }

  double limit_bytes() const { return limit_bytes_; }
  bool too_many_micro_batches() const { return too_many_micro_batches_; }

 private:
  struct SyncBytes {
    double dense = 0, expert = 0;  // gradient bytes of the rank with the most
  };

  // The candidate's schedule; the last one is kept, since consecutive
  // candidates mostly share it. Null when the method does not run the shape.
  const Schedule* schedule_of(const Candidate& c) const {
    const auto key = std::make_tuple(c.method, c.par.pp, c.N, c.chunks);
    if (key != last_key_) {
      last_key_ = key;
      try {
        last_schedule_ = generate(c.method, Shape{c.par.pp, c.N, c.chunks});
        last_ok_ = true;
      } catch (const Error&) {
        last_ok_ = false;
      }
    }
    return last_ok_ ? &last_schedule_ : nullptr;
  }
  struct Work {
    double work = -1, recompute = 0;  // seconds of compute of one step on a device, recomputation included
  };

  // The device with the most compute per step (all of its actions without communication).
  static Work busiest(const std::vector<PartCost>& parts, const Placement& placement, int N) {
    Work best;
    for (const auto& held : held_stages(placement)) {
      Work w{0, 0};
      for (const HeldStage& h : held) {
        const PartCost& p = parts[static_cast<std::size_t>(h.stage)];
        w.work += h.share * N * (p.f + p.i + p.w);
        w.recompute += h.share * N * p.rc;
      }
      if (w.work > best.work) best = w;
    }
    return best;
  }

  // A profile of a MoE model timed its experts on so many devices: only
  // that expert-parallel degree has the costs it measured.
  bool fits_measured_experts(int ep) const {
    return !req_.use_measured || req_.measured.expert_parallel == 0 || ep == req_.measured.expert_parallel;
  }

  // Tensor-parallel degrees: divisors of a node's devices that divide the
  // heads (1 only with measured costs, taken on one device).
  std::vector<int> tensor_degrees() const {
    std::vector<int> out;
    for (int tp : divisors(req_.cluster.devices_per_node, req_.cluster.devices_per_node))
      if (req_.model.heads % tp == 0 && (!req_.tp || tp == req_.tp) && (tp == 1 || !req_.use_measured))
        out.push_back(tp);
    return out;
  }

  std::vector<Recompute> recompute_modes() const {
    const std::string& r = req_.model.recompute;
    if (r == "none") return {Recompute::None};
    if (r == "selective") return {Recompute::Selective};
    if (r == "full") return {Recompute::Full};
    if (req_.use_measured) return {Recompute::None, Recompute::Full};
    return {Recompute::None, Recompute::Selective, Recompute::Full};
  }

  // Micro-batch sizes, methods and chunks, expert degrees and recomputation
  // for one choice of the other degrees.
  void add_batches(Parallel par, const std::vector<int>& eps, std::vector<Candidate>& out) {
    std::vector<std::string> methods = req_.methods;
    // By default every method but combined 1F1B, whose pairs' overlap and
    // extra warm-up activation the cost model does not price yet (it would
    // be ranked on interleaved 1F1B's figures with free overlap); asked for
    // by name, it is planned all the same.
    if (methods.empty())
      for (const Method& mm : dualpipe::methods())
        if (std::string(mm.name) != "combined-1f1b") methods.emplace_back(mm.name);
    const long long per = req_.global_batch / par.dp;
    for (int mbs : divisors(per, req_.micro_batch_size ? req_.micro_batch_size : kMaxMicroBatchSize)) {
      if (req_.micro_batch_size && mbs != req_.micro_batch_size) continue;
      const long long N = per / mbs;
      if (N > kMaxMicroBatches) {
        too_many_micro_batches_ = true;
        continue;
      }
      par.micro_batch_size = mbs;
      for (const std::string& method : methods) {
        const Method& mm = find_method(method);
        for (int chunks : mm.takes_chunks() ? req_.chunk_options : std::vector<int>{1}) {
          const int S = mm.stage_count(par.pp, chunks);
          if (S > req_.model.layers) continue;
          if (!req_.layout.empty() && S != layout_stage_count(req_.layout)) continue;
          for (int ep : eps)
            for (Recompute rc : recompute_modes()) {
              par.ep = ep;
              par.recompute = rc;
              out.push_back({method, chunks, par, static_cast<int>(N)});
            }
        }
      }
    }
  }

  std::vector<std::string> missing_in_runtime(const Parallel& par) const {
    std::vector<std::string> out;
    if (par.tp > 1) out.emplace_back("tensor parallelism");
    if (par.recompute != Recompute::None) out.emplace_back("recomputation");
    if (req_.model.gemm_precision == "fp8") out.emplace_back("FP8 matrix products");
    return out;
  }

  // Memory per rank (the peak one into `row`); returns the gradient bytes to sync.
  SyncBytes fill_memory(const Candidate& cand, const Schedule& sched, const Placement& placement,
                        const std::vector<PartCost>& parts, PlanRow& row) const {
    std::vector<double> act(parts.size());
    for (std::size_t s = 0; s < parts.size(); ++s) act[s] = parts[s].act_bytes;
    const std::vector<double> peak_act = peak_activation_bytes(sched, act);
    const BytesPerParam bytes{req_.model.param_bytes, req_.model.grad_bytes, req_.model.optimizer_bytes};
    SyncBytes sync;
    for (int r = 0; r < cand.par.pp; ++r) {
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
      sync.dense = std::max(sync.dense, all.dense * bytes.grad);
      sync.expert = std::max(sync.expert, all.expert * bytes.grad);
    }
    return sync;
  }

  // The data-parallel sync: a reduce-scatter of the gradients and an
  // all-gather of the parameters, each half of a ring all-reduce's volume.
  // Data-parallel replicas are tp apart; expert replicas ep x tp apart.
  // Overlapped, the reduce-scatter hides behind the last micro-batch's
  // backward and the all-gather behind the first one's forward, of the
  // slowest stage.
  void fill_dp_sync(const Candidate& cand, const Placement& placement, const std::vector<PartCost>& parts,
                    const SyncBytes& sync, PlanRow& row) const {
    const ClusterSpec& c = req_.cluster;
    const Parallel& p = cand.par;
    row.dp_sync_total_s =
        allreduce_seconds(c, sync.dense, p.dp, p.tp) + allreduce_seconds(c, sync.expert, p.dp / p.ep, p.ep * p.tp);
    row.dp_sync_s = row.dp_sync_total_s;
    if (!req_.overlap_dp_sync) return;
    double fwd = 0, bwd = 0;
    for (const auto& stages : placement.stages_of) {
      double f = 0, b = 0;
      for (int s : stages) {
        f += parts[static_cast<std::size_t>(s)].f;
        b += parts[static_cast<std::size_t>(s)].i + parts[static_cast<std::size_t>(s)].w;
      }
      fwd = std::max(fwd, f);
      bwd = std::max(bwd, b);
    }
    const double half = row.dp_sync_total_s / 2;
    row.dp_sync_s = std::max(0.0, half - bwd) + std::max(0.0, half - fwd);
  }

  const PlanRequest& req_;
  double limit_bytes_;
  mutable std::tuple<std::string, int, int, int> last_key_{"", 0, 0, 0};
  mutable Schedule last_schedule_;
  mutable bool last_ok_ = false;
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
    throw Error(fmt::format("--ranks must divide cluster.devices ({}) (got {})", req.cluster.devices, req.pp));
  if (req.tp < 0 || (req.tp > 0 && (req.cluster.devices_per_node % req.tp != 0 || req.model.heads % req.tp != 0)))
    throw Error(fmt::format("--tp must divide cluster.devices_per_node ({}) and model.heads ({}) (got {})",
                            req.cluster.devices_per_node, req.model.heads, req.tp));
  if (req.pp > req.model.layers)
    throw Error(fmt::format("--ranks must be in [1, {}] (model.layers: a stage needs a layer) (got {})",
                            req.model.layers, req.pp));
  const int measured_ep = req.use_measured ? req.measured.expert_parallel : 0;
  if (req.ep > 0 && measured_ep > 0 && req.ep != measured_ep)
    throw Error(fmt::format("--ep {}: {} timed the experts on {} device(s), so it fits --ep {} only", req.ep,
                            req.measured.source, measured_ep, measured_ep));
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
  std::set<int> dp_set;  // data-parallel degrees whose pipeline fits the layers and the batch
  for (int tp : divisors(req.cluster.devices_per_node, req.cluster.devices_per_node)) {
    if ((req.tp && tp != req.tp) || req.model.heads % tp != 0) continue;
    for (int pp : divisors(devices / tp, req.model.layers))
      if ((!req.pp || pp == req.pp) && req.global_batch % (devices / tp / pp) == 0) dp_set.insert(devices / tp / pp);
  }
  const std::vector<int> dps(dp_set.begin(), dp_set.end());
  if (dps.empty())
    return fmt::format("no pipeline shape fits: --global-batch {} must be divisible by the data-parallel degree "
                       "(cluster.devices {} / pipeline degree / tensor degree, with at most model.layers = {} "
                       "stages){}",
                       req.global_batch, devices, req.model.layers, req.pp ? fmt::format(" (--ranks {})", req.pp) : "");
  if (req.ep > 0 && std::none_of(dps.begin(), dps.end(), [&](int dp) { return dp % req.ep == 0; }))
    return fmt::format("--ep {} must divide the data-parallel degree (cluster.devices {} / pipeline degree / "
                       "tensor degree), which is {} here{}",
                       req.ep, devices, fmt::join(dps, " or "), req.pp ? fmt::format(" with --ranks {}", req.pp) : "");
  if (!req.layout.empty())
    return fmt::format("--layout '{}' has {} stages: no method in the request has that many stages on a pipeline "
                       "degree that divides cluster.devices {} and --global-batch {}",
                       req.layout, layout_stage_count(req.layout), devices, req.global_batch);
  return fmt::format("no pipeline shape fits --global-batch {} on cluster.devices {} with the fixed --ranks, --ep and "
                     "--micro-batch-size", req.global_batch, devices);
}

// Memory a row needs on its fullest device, with the cluster's reserve.
double used_bytes(const PlanRow& r) { return r.peak.total() + r.reserve_bytes; }

// Tells the caller's progress callback, if any, how far a phase is.
void report(const PlanRequest& req, const char* phase, std::size_t done, std::size_t total) {
  if (req.progress) req.progress(Progress{phase, static_cast<long long>(done), static_cast<long long>(total)});
}

struct Pending {
  PlanRow row;
  double bound;  // no simulation of the row can give a shorter step
  bool done = false;
};

// Simulates the rows that can be among the first rows_wanted: first the
// rows_wanted with the smallest bounds, whose rows_wanted-th best step is an
// upper limit U; then, in enumeration order (consecutive rows share
// schedules), every row whose bound is at most U, lowering U as better rows
// come. The rest are counted as pruned. rows_wanted 0: all are simulated.
template <typename CostsFor>
void simulate_bounded(const PlanRequest& req, const Planner& planner, std::vector<Pending>& pending,
                      CostsFor& costs_for, PlanResult& res) {
  const std::size_t K = req.rows_wanted;
  std::priority_queue<double> best;  // the K smallest steps so far, largest on top
  auto run = [&](Pending& p) {
    report(req, "simulating candidates", static_cast<std::size_t>(res.simulated), pending.size());
    planner.simulate_row(costs_for(p.row.par), p.row);
    p.done = true;
    best.push(p.row.step_s);
    if (K > 0 && best.size() > K) best.pop();
    ++res.simulated;
  };
  if (K > 0) {
    std::vector<std::size_t> order(pending.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    const std::size_t seed = std::min(K, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<long>(seed), order.end(),
                      [&](std::size_t a, std::size_t b) { return pending[a].bound < pending[b].bound; });
    for (std::size_t i = 0; i < seed; ++i) run(pending[order[i]]);
  }
  for (Pending& p : pending) {
    if (p.done) continue;
    if (K > 0 && best.size() >= K && p.bound > best.top()) {
      ++res.pruned;
      continue;
    }
    run(p);
  }
  for (Pending& p : pending)
    if (p.done) res.rows.push_back(std::move(p.row));
}

// Cuts the layers and sizes the memory of every candidate, returning those
// that fit. A candidate whose memory floor (Planner::memory_floor) is over
// the limit is over memory without being cut (cutting thousands of layers
// is the slow part); afterwards only as many of those are cut, smallest
// floor first, as can still hold less memory than the least found, so
// res.least_memory is the same as if every one had been.
template <typename CostsFor>
std::vector<Pending> prepare_fitting(const PlanRequest& req, const Planner& planner,
                                     const std::vector<Candidate>& cands, CostsFor& costs_for, PlanResult& res) {
  auto note = [&](const PlanRow& row) {
    if (!res.any_candidate || used_bytes(row) < used_bytes(res.least_memory)) res.least_memory = row;
    res.any_candidate = true;
  };
  std::vector<Pending> pending;
  std::vector<std::pair<double, std::size_t>> over;  // (floor, candidate) over the limit by the floor alone
  for (std::size_t i = 0; i < cands.size(); ++i) {
    report(req, "sizing candidates", i, cands.size());
    const Candidate& cand = cands[i];
    const ModelCosts& mc = costs_for(cand.par);
    const double floor = planner.memory_floor(cand, mc) * (1 - 1e-9);  // below rounding's reach
    if (floor > planner.limit_bytes()) {
      if (planner.runs(cand)) over.emplace_back(floor, i);
      continue;
    }
    Pending p;
    if (!planner.prepare(cand, mc, p.row, p.bound)) continue;
    note(p.row);
    if (used_bytes(p.row) > planner.limit_bytes()) {
      ++res.over_memory;
      continue;
    }
    pending.push_back(std::move(p));
  }
  res.over_memory += static_cast<long long>(over.size());
  std::sort(over.begin(), over.end());
  for (const auto& [floor, i] : over) {
    if (res.any_candidate && floor >= used_bytes(res.least_memory)) break;
    PlanRow row;
    double bound = 0;
    if (planner.prepare(cands[i], costs_for(cands[i].par), row, bound)) note(row);
  }
  return pending;
}

}  // namespace

PlanResult plan(const PlanRequest& req) {
  validate_request(req);
  Planner planner(req);
  const std::vector<Candidate> cands = planner.enumerate();
  PlanResult res;
  res.candidates = static_cast<long long>(cands.size());
  // Work: the actions generated and simulated (at most twice) over all candidates.
  double work = 0;
  for (const Candidate& c : cands) work += 3.0 * find_method(c.method).stage_count(c.par.pp, c.chunks) * c.N;
  if (work > kMaxSimulatedActions)
    throw Error(fmt::format("cluster.devices {} with --global-batch {}: {} candidate plans of {:.3g} actions in all, "
                            "at most {:.3g} are simulated; fix --ranks, --ep or --micro-batch-size, or lower "
                            "--global-batch",
                            req.cluster.devices, req.global_batch, cands.size(), work, kMaxSimulatedActions));
  if (res.candidates > kMaxCandidates)
    throw Error(fmt::format("cluster.devices {} with --global-batch {} gives {} candidate plans, at most {} are "
                            "enumerated; fix --ranks, --ep or --micro-batch-size",
                            req.cluster.devices, req.global_batch, res.candidates, kMaxCandidates));
  if (cands.empty() && planner.too_many_micro_batches())
    throw Error(fmt::format("--global-batch {} on cluster.devices {} needs more than {} micro-batches per pipeline "
                            "at every micro-batch size up to {}; at most {} are simulated (lower --global-batch or "
                            "raise --micro-batch-size)",
                            req.global_batch, req.cluster.devices, kMaxMicroBatches,
                            req.micro_batch_size ? req.micro_batch_size : kMaxMicroBatchSize, kMaxMicroBatches));
  if (cands.empty()) throw Error(no_shape_reason(req));
  // Costs per degrees; a few dozen at a time (consecutive candidates share them).
  std::map<std::tuple<int, int, int, int, int, Recompute>, ModelCosts> costs;
  auto costs_for = [&](const Parallel& par) -> const ModelCosts& {
    const auto key = std::make_tuple(par.pp, par.dp, par.ep, par.tp, par.micro_batch_size, par.recompute);
    auto it = costs.find(key);
    if (it != costs.end()) return it->second;
    if (costs.size() >= 64) costs.clear();
    ModelCosts mc = model_costs(req.model, req.cluster, par);
    if (req.use_measured) apply_measured(mc, req.measured, par);
    return costs.emplace(key, std::move(mc)).first->second;
  };
  std::vector<Pending> pending = prepare_fitting(req, planner, cands, costs_for, res);
  simulate_bounded(req, planner, pending, costs_for, res);
  if (!res.any_candidate)
    throw Error("no method runs any of the enumerated shapes (try other --methods or --ranks)");
  if (res.rows.empty()) {
    const PlanRow& s = res.least_memory;
    throw Error(fmt::format("no plan fits --memory-limit {:.3g} GiB per device: the smallest ({} pp={} tp={} ep={} "
                            "micro-batch {}, {} recomputation) needs {:.3g} GiB{}",
                            planner.limit_bytes() / kGiB, s.method, s.par.pp, s.par.tp, s.par.ep,
                            s.par.micro_batch_size, recompute_name(s.par.recompute), used_bytes(s) / kGiB,
                            s.reserve_bytes > 0 ? fmt::format(" (with the cluster's reserve of {:.3g} GiB)",
                                                              s.reserve_bytes / kGiB)
                                                : ""));
  }
  // Fastest first; among equals, the one this project's runtime can run
  // (e.g. no recomputation the model prices at nothing), then the smallest.
  std::stable_sort(res.rows.begin(), res.rows.end(), [](const PlanRow& a, const PlanRow& b) {
    if (a.step_s != b.step_s) return a.step_s < b.step_s;
    if (a.not_executable.size() != b.not_executable.size()) return a.not_executable.size() < b.not_executable.size();
    return a.peak.total() < b.peak.total();
  });
  for (std::size_t i = 0; i < res.rows.size() && (req.rows_wanted == 0 || i < req.rows_wanted); ++i)
    planner.explain(res.rows[i], costs_for(res.rows[i].par));  // also fills exposed_comm_s
  return res;
}

BuiltPlan build_plan(const PlanRequest& req, const PlanRow& row) {
  ModelCosts mc = model_costs(req.model, req.cluster, row.par);
  if (req.use_measured) apply_measured(mc, req.measured, row.par);
  BuiltPlan b;
  b.schedule = generate(row.method, Shape{row.par.pp, row.micro_batches, row.chunks});
  const std::vector<PartCost> parts = stage_parts(mc, row.layout);
  b.costs = sim_costs(parts, mc, b.schedule, CommMask{});
  for (const PartCost& p : parts) b.act_bytes.push_back(p.act_bytes);
  return b;
}

}  // namespace dualpipe::plan
