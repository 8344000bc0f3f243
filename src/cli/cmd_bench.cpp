// dualpipe bench: time pipeline steps (forward and backward of every
// micro-batch, sends, receives, replica gradient sums; no optimizer).
#include <sched.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>
#include <nlohmann/json.hpp>

#include "runtime/stats.h"
#include "cli/output_paths.h"
#include "cli/summary_json.h"
#include "cli/torch_common.h"
#include "cli/torch_commands.h"
#include "schedule/text_file.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/gpt.h"
#include "dualpipe/train/perf.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe::cli {
namespace {

// Every rank's calibration (OverlapEngine), averaged per piece over the
// ranks that hold it, on every rank: a table summed over the whole job.
std::map<PieceKey, double> gather_calibration(const std::map<PieceKey, double>& mine, int stages, Comm& world) {
  constexpr int kOps = 4, kPieces = 256;  // F, B, I, W; pieces per chunk (a W: one per weight)
  auto op_index = [](int op) {
    switch (static_cast<Op>(op)) {
      case Op::F: return 0;
      case Op::B: return 1;
      case Op::I: return 2;
      case Op::W: return 3;
      default: return -1;
    }
  };
  const int64_t cells = int64_t{kOps} * stages * kPieces;
  torch::Tensor t = torch::zeros({2 * cells}, torch::kFloat64);
  double* v = t.data_ptr<double>();
  for (const auto& [key, cost] : mine) {
    const auto [op, stage, piece] = key;
    const int o = op_index(op);
    if (o < 0 || piece >= kPieces) continue;
    const int64_t i = (int64_t{o} * stages + stage) * kPieces + piece;
    v[i] += cost;
    v[cells + i] += 1;
  }
  world.all_reduce(t, c10d::ReduceOp::SUM, "the gather of the device calibration");
  v = t.data_ptr<double>();
  const Op ops[kOps] = {Op::F, Op::B, Op::I, Op::W};
  std::map<PieceKey, double> all;
  for (int o = 0; o < kOps; ++o)
    for (int st = 0; st < stages; ++st)
      for (int k = 0; k < kPieces; ++k) {
        const int64_t i = (int64_t{o} * stages + st) * kPieces + k;
        if (v[cells + i] > 0) all[PieceKey{static_cast<int>(ops[o]), st, k}] = v[i] / v[cells + i];
      }
  return all;
}

// The simulator's costs from the calibration: each chunk lasts K times its
// pieces' calibrated CPU time, and a pair's halves are cut where the runtime
// cuts them. With `fill` (EngineOptions::fill_waits) a B's pieces are its
// input-gradient work and its weight gradients ran as W pieces: a B is both.
Costs calibrated_costs(const std::map<PieceKey, double>& cal, int stages, double K, bool fill) {
  std::vector<StageTimes> per_stage(stages);
  std::vector<std::vector<double>> f_pieces(stages), b_pieces(stages);
  auto add = [](double& total, double d) { total = std::max(total, 0.0) + d; };
  for (const auto& [key, cost] : cal) {
    const auto [op, st, piece] = key;
    (void)piece;
    const double d = K * cost;
    StageTimes& t = per_stage[st];
    switch (static_cast<Op>(op)) {
      case Op::F: add(t.F, d); f_pieces[st].push_back(d); break;
      case Op::B: add(t.B, d); b_pieces[st].push_back(d); break;
      case Op::I: add(t.I, d); break;
      case Op::W: add(t.W, d); break;
      default: break;
    }
  }
  if (fill)
    for (StageTimes& t : per_stage)
      if (t.B >= 0 && t.W > 0) t.B += t.W;
  Costs c = costs_from_stage_times(per_stage);
  c.fill_waits = fill;
  c.f_pieces = std::move(f_pieces);
  c.b_pieces = std::move(b_pieces);
  return c;
}

// Per rank: the median over the timed steps of each cause of exposed time.
nlohmann::json exposed_medians(const std::vector<ExposedComm>& steps) {
  auto med = [&](auto field) {
    std::vector<double> v;
    for (const ExposedComm& e : steps) v.push_back(field(e));
    return v.empty() ? 0.0 : median(v);
  };
  nlohmann::json j = {{"all_to_all", med([](const ExposedComm& e) { return e.all_to_all; })},
                      {"pipeline", med([](const ExposedComm& e) { return e.pipeline; })},
                      {"grad_reduce", med([](const ExposedComm& e) { return e.grad_reduce; })},
                      {"handover", med([](const ExposedComm& e) { return e.handover; })},
                      {"peer_wait", med([](const ExposedComm& e) { return e.peer_wait; })},
                      // not exposed: weight-gradient work that ran inside all-to-all waits
                      {"filled_by_weight_work", med([](const ExposedComm& e) { return e.filled; })}};
  nlohmann::json by_point = nlohmann::json::object();
  for (int p = 0; p < kCommPoints; ++p)
    by_point[comm_point_name(static_cast<CommPoint>(p))] = med([p](const ExposedComm& e) { return e.by_point[p]; });
  j["by_point"] = by_point;
  return j;
}

// Every rank's exposed_medians, on rank 0 (an array indexed by rank; others
// get empty objects). Every rank must call it.
nlohmann::json gather_exposed(const std::vector<ExposedComm>& steps, Comm& comm) {
  const nlohmann::json mine = exposed_medians(steps);
  nlohmann::json all_ranks = nlohmann::json::array();
  for (int r = 0; r < comm.world; ++r) all_ranks.push_back(nlohmann::json::object());
  for (const auto& [key, value] : mine.items()) {
    if (value.is_object()) {
      for (const auto& [point, x] : value.items()) {
        auto all = gather_value(x.get<double>(), comm);  // rank 0 only
        for (std::size_t r = 0; r < all.size(); ++r) all_ranks[r][key][point] = all[r];
      }
    } else {
      auto all = gather_value(value.get<double>(), comm);  // rank 0 only
      for (std::size_t r = 0; r < all.size(); ++r) all_ranks[r][key] = all[r];
    }
  }
  return all_ranks;
}

nlohmann::json calibration_json(const std::map<PieceKey, double>& cal) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& [key, cost] : cal) {
    const auto [op, stage, piece] = key;
    j.push_back({{"op", op_name(static_cast<Op>(op))}, {"stage", stage}, {"piece", piece}, {"cpu_s", cost}});
  }
  return j;
}

// The piece costs of an earlier `bench --format json` (its "calibration"),
// for --calibration; throws dualpipe::Error with one line. A piece is keyed
// by op, stage and index alone, so a file that names its run's model, stage
// count, expert degree or fill_waits (a B piece holds its weight gradient
// only with weight gradients inline) must name this run's (`run`: its
// inputs' JSON with fill_waits).
std::map<PieceKey, double> read_calibration(const std::string& path, const nlohmann::json& run) {
  const std::string what = fmt::format("--calibration '{}'", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(path, 64ull << 20, "--calibration file"));
  } catch (const nlohmann::json::exception&) {
    throw Error(fmt::format("{}: not JSON (give the output of bench --emulate-device K --format json)", what));
  }
  if (!j.is_object() || !j.contains("calibration") || !j["calibration"].is_array() || j["calibration"].empty())
    throw Error(fmt::format("{}: holds no calibration (give the output of bench --emulate-device K --format json)", what));
  for (const char* key : {"model", "stages", "ep", "fill_waits"})
    if (j.contains(key) && j[key] != run[key])
      throw Error(fmt::format("{} was measured with {} {}, this run has {}: a calibration fits one model, stage "
                              "count, --ep and --fill-waits",
                              what, key, j[key].dump(), run[key].dump()));
  std::map<PieceKey, double> out;
  for (const auto& c : j["calibration"]) {
    int op = -1;
    for (Op o : {Op::F, Op::B, Op::I, Op::W})
      if (c.value("op", "") == op_name(o)) op = static_cast<int>(o);
    const double cost = c.value("cpu_s", -1.0);
    if (op < 0 || !c.contains("stage") || !c.contains("piece") || !std::isfinite(cost) || cost < 0)
      throw Error(fmt::format("{}: a malformed calibration entry: {}", what, c.dump()));
    out[PieceKey{op, c["stage"].get<int>(), c["piece"].get<int>()}] = cost;
  }
  return out;
}

// The calibration, once per run, on stderr: each chunk's compute as emulated.
void print_calibration(const std::map<PieceKey, double>& cal, double K) {
  std::map<std::pair<int, int>, std::pair<double, int>> chunks;  // (op, stage) -> (sum, pieces)
  for (const auto& [key, cost] : cal) {
    auto& c = chunks[{std::get<0>(key), std::get<1>(key)}];
    c.first += cost;
    ++c.second;
  }
  std::string line = fmt::format("device emulation x{:g}: calibrated compute per chunk (ms, pieces):", K);
  for (const auto& [k, v] : chunks)
    line += fmt::format(" {}{} {:.3f} ({})", op_name(static_cast<Op>(k.first)), k.second, 1e3 * K * v.first, v.second);
  fmt::print(stderr, "{}\n", line);
}

struct Opts {
  SourceOptions src;
  ModelOptions model;
  RankOptions ranks;
  int steps = 5;
  std::string format = "text";
  std::string output = "-";
  std::string lane_records;  // a folder: every rank's collectives of the last step; empty: none
  std::string calibration;   // an earlier bench JSON whose piece costs the device emulation takes; empty: none
};

// What a rank measures before the run, every rank at once so that each core
// is as loaded as during the run.
struct Yardsticks {
  double rate = 0;        // matrix-product FLOP/s of one thread (mlp only)
  double sequential = 0;  // the model's own compute, unpipelined, on one rank
  double unit = 0;        // bytes of one activation
  double latency = 0;     // one pipeline transfer
  double boundary_bytes = 0;  // of the activation one pipeline transfer carries
  // moe across expert ranks: the wire time of one dispatch or combine of the
  // average size (every token's K copies spread evenly over the E ranks),
  // and of the small token-count exchange before each dispatch.
  double a2a_phase = 0;
  double tokens_a2a = 0, counts_a2a = 0;  // its two parts: the tokens, and one count exchange
  double a2a_bytes = 0;                   // link bytes of the tokens' exchange
  double link_bytes_per_s = 0;  // the link's rate as an all-to-all sees it (0: not measured)
};

Yardsticks measure_yardsticks(const Opts& o, const TrainOptions& t, const ModelConfig& whole, const Mesh& mesh) {
  Yardsticks y;
  y.rate = t.model.name == "mlp" ? matmul_flops_per_second(t.model, 0.5) : 0.0;
  y.sequential = sequential_compute_seconds(whole, 1);
  y.unit = activation_unit_bytes(whole);
  PipelineModel shapes = make_model(whole);
  y.latency = transfer_seconds(*mesh.pipeline, shapes.boundary_shape, shapes.boundary_dtype, 50);
  y.boundary_bytes = static_cast<double>(torch::elementSize(shapes.boundary_dtype));
  for (int64_t d : shapes.boundary_shape) y.boundary_bytes *= static_cast<double>(d);
  if (!mesh.expert) return y;
  const int64_t rows = std::max<int64_t>(o.model.micro_batch_size * o.model.seq_len * o.model.top_k / mesh.shape.ep, 1);
  y.tokens_a2a = all_to_all_seconds(*mesh.expert, rows, o.model.hidden, t.model.dtype, 20);
  y.counts_a2a = all_to_all_seconds(*mesh.expert, 1, o.model.experts / mesh.shape.ep, torch::kInt64, 20);
  y.a2a_phase = y.tokens_a2a + y.counts_a2a / 2;  // one count exchange per two phases
  // Protocol and shaping included: what a transfer beyond it spent waiting for a late peer.
  y.a2a_bytes = static_cast<double>(rows * (mesh.shape.ep - 1) * o.model.hidden) *
                static_cast<double>(torch::elementSize(t.model.dtype));
  if (y.tokens_a2a > 0) y.link_bytes_per_s = y.a2a_bytes / y.tokens_a2a;
  return y;
}

// Every rank's figures, on rank 0 (per rank, indexed by rank). Every rank calls it.
struct Gathered {
  nlohmann::json exposed;               // exposed_medians per rank
  std::map<PieceKey, double> calibration;  // with device emulation
  std::vector<double> overruns, overslept, rates, heaps, sequential, batch;
  std::vector<double> a2a_bytes;  // mean link bytes of a data all-to-all over the timed steps (0: none)
  std::vector<std::vector<ActionTime>> times;  // the first pipeline's last step
};

Gathered gather_run(const Schedule& s, const RankRun& run, const Yardsticks& y, double K, const Mesh& mesh) {
  Comm& world = *mesh.world;
  Gathered g;
  g.exposed = gather_exposed(run.exposed, world);
  if (K > 0) g.calibration = gather_calibration(run.calibration, s.stages, world);
  g.overruns = gather_value(run.device_overruns, world);
  g.overslept = gather_value(run.device_overslept_s, world);
  double exchanges = 0, link_bytes = 0;
  for (const ExposedComm& e : run.exposed) {
    exchanges += e.a2a_exchanges;
    link_bytes += e.a2a_link_bytes;
  }
  g.a2a_bytes = gather_value(exchanges > 0 ? link_bytes / exchanges : 0.0, world);
  g.rates = gather_value(y.rate, world);
  g.heaps = gather_value(run.peak_heap_bytes, world);
  g.sequential = gather_value(y.sequential, world);
  g.batch = gather_value(sched_getscheduler(0) == SCHED_BATCH ? 1.0 : 0.0, world);
  g.times = gather_times(s, run.last_times, *mesh.pipeline);
  return g;
}

// The simulator fed this run's measured per-action costs (last step); the
// same with the measured transfer time on every cross-rank edge; and with
// the all-to-alls as communication phases of every chunk (2 per MoE block of
// the stage), hidden by F&B pairs when overlap is on, from the calibration
// the ranks emulated where there is one.
struct Simulated {
  SimResult plain, a2a;  // a2a: the pipeline transfers on the links with the all-to-alls (duplex)
  // The run's mean link bytes of a data all-to-all (over the ranks that ran
  // some), and the phase time it makes.
  double a2a_link_bytes = 0, a2a_phase = 0;
  double with_latency = 0;
  // a2a's step on the sender's link only (fifo), on a shared link, and with the transfers off it
  double upload_only = 0, shared = 0, apart = 0;
};

Simulated simulate_run(const Schedule& s, const TrainOptions& t, const Gathered& g, const Yardsticks& y) {
  Simulated out;
  Costs costs = measured_costs(s, g.times);
  out.plain = simulate(compute_only(s), costs);
  costs.latency = y.latency;
  out.with_latency = simulate(compute_only(s), costs, SimOptions{false}).makespan;
  if (y.a2a_phase <= 0) return out;
  double sum = 0, ranks = 0;
  for (double b : g.a2a_bytes)
    if (b > 0) {
      sum += b;
      ranks += 1;
    }
  out.a2a_link_bytes = ranks > 0 ? sum / ranks : y.a2a_bytes;
  const double K = t.engine.device_factor;
  Costs ca = K > 0 ? calibrated_costs(g.calibration, s.stages, K, t.engine.fill_waits) : measured_costs(s, g.times);
  ca.pair_turns = t.engine.lane ? Costs::PairTurns::Alternate : Costs::PairTurns::FirstReady;
  ca.latency = y.latency;
  ca.a2a_bytes.assign(s.stages, 0.0);
  ca.a2a_phases.assign(s.stages, 0);
  // A phase as the run's tokens made it: the yardstick's exchange of the
  // average size, scaled to the link bytes the run's exchanges carried.
  const double tokens = y.a2a_bytes > 0 ? y.tokens_a2a * out.a2a_link_bytes / y.a2a_bytes : y.tokens_a2a;
  out.a2a_phase = tokens + y.counts_a2a / 2;
  for (int st = 0; st < s.stages; ++st) {
    const auto [first, end] = gpt_blocks(st, s.stages, gpt_layers(t.model));
    ca.a2a_phases[st] = 2 * (end - first);
    ca.a2a_bytes[st] = out.a2a_phase * ca.a2a_phases[st];  // "bytes" in seconds at rate 1
  }
  ca.a2a_rate = 1.0;
  ca.fb_overlap = t.fb_overlap;
  // The pipeline transfers on the same link: their bytes at the rate the
  // all-to-alls see, the rest of the measured transfer as latency.
  if (y.link_bytes_per_s > 0) {
    ca.act_bytes = y.boundary_bytes;
    ca.bandwidth = y.link_bytes_per_s;
    ca.latency = std::max(0.0, y.latency - ca.act_bytes / y.link_bytes_per_s);
  }
  // The emulated hosts shape each link's upload and download apart.
  ca.link = Costs::Link::Duplex;
  out.a2a = simulate(compute_only(s), ca);
  ca.link = Costs::Link::Fifo;
  out.upload_only = simulate(compute_only(s), ca, SimOptions{false}).makespan;
  ca.link = Costs::Link::Shared;
  out.shared = simulate(compute_only(s), ca, SimOptions{false}).makespan;
  ca.link = Costs::Link::Apart;
  ca.latency = y.latency;
  out.apart = simulate(compute_only(s), ca, SimOptions{false}).makespan;
  return out;
}

// The cores this process may run on (its CPU affinity: taskset, cgroups'
// cpusets), which rank threads and spawned ranks inherit.
int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// The model's compute, split over ranks by their share of the work (F, B, I,
// W counted by FLOPs for mlp, by compute actions otherwise), and the runtime
// overhead per compute action that the step shows beyond it.
struct Overhead {
  std::vector<double> flops, computes, compute_s, floor_s;  // per rank
  double floor = 0, compute = 0, compute_actions = 0;
  double per_action_us = 0;
  std::string unreliable;  // why per_action_us means nothing here; empty: it does
};

Overhead overhead_of(const Schedule& s, const TrainOptions& t, const Gathered& g, double median_step, int world) {
  const StageFlops flops = mlp_stage_flops(t.model);
  Overhead h;
  h.flops.assign(s.ranks, 0);
  h.computes.assign(s.ranks, 0);
  double all_flops = 0, all_computes = 0;
  for (int r = 0; r < s.ranks; ++r) {
    h.flops[r] = rank_flops(s, r, flops);
    for (const Action& a : s.actions[r]) h.computes[r] += is_comm(a.op) ? 0 : is_pair(a.op) ? 2 : 1;
    all_flops += h.flops[r];
    all_computes += h.computes[r];
  }
  for (int r = 0; r < s.ranks; ++r) {
    const double share = all_flops > 0 ? h.flops[r] / all_flops : h.computes[r] / all_computes;
    h.floor_s.push_back(g.rates[r] > 0 ? h.flops[r] / g.rates[r] : 0.0);
    h.compute_s.push_back(share * g.sequential[r]);
    h.floor = std::max(h.floor, h.floor_s[r]);
    h.compute = std::max(h.compute, h.compute_s[r]);
    h.compute_actions = std::max(h.compute_actions, h.computes[r]);
  }
  h.per_action_us = h.compute_actions > 0 ? 1e6 * (median_step - h.compute) / h.compute_actions : 0.0;
  // With more ranks than cores they time-share them, and the yardsticks
  // (measured with every rank busy at once) no longer compare with the
  // step: the difference came out as -19298 us per action.
  if (world > usable_cores())
    h.unreliable = "ranks outnumber cores";
  else if (h.per_action_us < 0)
    h.unreliable = "the step measured below its compute alone";
  return h;
}

// One rank's line of the JSON's per_rank array.
nlohmann::json rank_json(const Schedule& s, int r, const Gathered& g, const Simulated& sim, const Overhead& h,
                         const Yardsticks& y, bool track_memory) {
  // Where the rank's last step went: compute (waits excluded), waiting on
  // receives, and the rest (sends, posting, bookkeeping between actions).
  double busy = 0, waited = 0, span = 0;
  for (std::size_t p = 0; p < g.times[r].size(); ++p) {
    const ActionTime& at = g.times[r][p];
    waited += at.wait;
    if (!is_comm(s.actions[r][p].op)) busy += at.end - at.start - at.wait;
    span = std::max(span, at.end);
  }
  nlohmann::json j = {{"flops", h.flops[r]},
                      {"last_step_compute_s", busy},
                      {"last_step_recv_wait_s", waited},
                      {"last_step_pipeline_s", span},
                      {"batch_scheduling", g.batch[r] > 0},
                      {"matmul_flops_per_s", g.rates[r]},
                      {"floor_s", h.floor_s[r]},
                      {"compute_s", h.compute_s[r]},
                      {"compute_actions", h.computes[r]},
                      {"actions", s.actions[r].size()},
                      {"simulated_peak_activations", sim.plain.per_rank[r].peak_activations},
                      {"simulated_peak_held", sim.plain.per_rank[r].peak_held},
                      // Time with nothing computing, by cause: medians over the timed steps.
                      {"exposed_comm_s", g.exposed[r]},
                      {"device_overruns", g.overruns[r]},
                      {"device_overslept_s", g.overslept[r]}};
  if (y.a2a_phase > 0) {
    j["simulated_exposed_a2a_s"] = sim.a2a.per_rank[r].exposed_a2a;
    j["simulated_a2a_total_s"] = sim.a2a.per_rank[r].a2a_total;
  }
  if (track_memory) {
    // Held, not just live: what a split backward leaves for its W stays in memory until the W runs.
    j["peak_heap_bytes"] = g.heaps[r];
    j["predicted_activation_bytes"] = sim.plain.per_rank[r].peak_held * y.unit;
  }
  return j;
}

// Rank 0's results, as bench prints them.
struct BenchResult {
  std::vector<double> steps, pipes;  // per timed step: whole step, pipeline part
  double median_step = 0, median_pipe = 0;
  std::size_t exposed_steps = 0;
};

nlohmann::json bench_json(const Opts& o, const Schedule& s, const TrainOptions& t, const BenchResult& b,
                          const Gathered& g, const Simulated& sim, const Overhead& h, const Yardsticks& y) {
  nlohmann::json per_rank = nlohmann::json::array();
  for (int r = 0; r < s.ranks; ++r) per_rank.push_back(rank_json(s, r, g, sim, h, y, t.track_memory));
  // The inputs as train and verify give them, then the measurements.
  nlohmann::json j = run_inputs_json(s, o.model, o.ranks, t.model.seed);
  j.update({{"median_step_s", b.median_step},
            {"fb_overlap", o.ranks.fb_overlap == "on"},
            {"pair_forwards", o.src.pair_forwards == "on"},
            // The yardstick's phase (every token's copies spread evenly), and
            // the simulator's: scaled to the link bytes the run's exchanges carried.
            {"a2a_phase_s", y.a2a_phase},
            {"simulated_a2a_phase_s", sim.a2a_phase},
            {"a2a_yardstick_bytes", y.a2a_bytes},
            {"a2a_link_bytes_mean", sim.a2a_link_bytes},
            {"simulated_with_a2a_s", y.a2a_phase > 0 ? sim.a2a.makespan : 0.0},
            {"simulated_upload_only_s", sim.upload_only},
            {"simulated_shared_link_s", sim.shared},
            {"simulated_transfers_apart_s", sim.apart},
            {"median_pipeline_s", b.median_pipe},
            {"step_times", b.steps},      {"pipeline_times", b.pipes},
            {"simulated_step_s", sim.plain.makespan},
            {"transfer_s", y.latency},
            {"simulated_with_transfers_s", sim.with_latency},
            {"floor_s", h.floor},
            {"compute_s", h.compute},
            // null where it means nothing, and overhead_unreliable says why.
            {"overhead_per_action_us",
             h.unreliable.empty() ? nlohmann::json(h.per_action_us) : nlohmann::json(nullptr)},
            {"overhead_unreliable", h.unreliable.empty() ? nlohmann::json(nullptr) : nlohmann::json(h.unreliable)},
            {"activation_unit_bytes", y.unit},
            {"emulate_device", t.engine.device_factor},
            {"calibration_from", o.calibration.empty() ? nlohmann::json() : nlohmann::json(o.calibration)},
            {"comm_lane", t.engine.lane},
            {"fill_waits", t.engine.fill_waits},
            {"calibration", calibration_json(g.calibration)},
            {"per_rank", per_rank}});
  return j;
}

std::string bench_text(const Opts& o, const Schedule& s, const BenchResult& b, const Gathered& g,
                      const Simulated& sim, const Overhead& h, const Yardsticks& y) {
  const auto [lo, hi] = std::minmax_element(b.steps.begin(), b.steps.end());
  const std::string model =
      o.model.stages.empty()
          ? fmt::format("model {} (hidden {}, seq {}, micro-batch size {}), {}", o.model.model, o.model.hidden,
                        o.model.seq_len, o.model.micro_batch_size, o.model.dtype)
          : fmt::format("your TorchScript stages (micro-batch size {})", o.model.micro_batch_size);
  std::string t;
  t += fmt::format("bench {}: {} ranks, {} micro-batches, {}: median step {:.4f} s over {} steps (min {:.4f}, max "
                   "{:.4f})\n",
                   s.method, s.ranks, s.micro_batches, model, b.median_step, b.steps.size(), *lo, *hi);
  t += fmt::format("  simulated from measured action costs {:.4f} s (measured/simulated {:.3f})\n", sim.plain.makespan,
                   b.median_step / sim.plain.makespan);
  if (h.floor > 0)
    t += fmt::format("  compute floor (FLOPs / single-thread matrix-product rate) {:.4f} s (measured/floor {:.3f})\n",
                     h.floor, b.median_step / h.floor);
  t += fmt::format("  one transfer {:.1f} us; simulated with it on every cross-rank edge {:.4f} s (measured/simulated "
                   "{:.3f})\n",
                   1e6 * y.latency, sim.with_latency, b.median_step / sim.with_latency);
  if (h.unreliable.empty())
    t += fmt::format("  model compute alone {:.4f} s: runtime overhead {:.1f} us per compute action\n", h.compute,
                     h.per_action_us);
  else
    t += fmt::format("  model compute alone {:.4f} s: overhead: unreliable ({})\n", h.compute, h.unreliable);
  for (int r = 0; r < s.ranks; ++r) {
    const nlohmann::json& e = g.exposed[r];
    t += fmt::format("  rank {}: nothing computing (median of {} steps): all-to-all {:.4f} s, peer wait {:.4f} s, "
                     "pipeline {:.4f} s, gradient reduction {:.4f} s, hand-over {:.4f} s\n",
                     r, b.exposed_steps, e["all_to_all"].get<double>(), e["peer_wait"].get<double>(),
                     e["pipeline"].get<double>(), e["grad_reduce"].get<double>(), e["handover"].get<double>());
  }
  if (y.a2a_phase > 0)
    t += fmt::format("  one all-to-all phase {:.2f} ms even, {:.2f} ms as the run's tokens went ({:.0f} link bytes "
                     "against {:.0f}); simulated with the all-to-alls {:.4f} s (measured/simulated {:.3f})\n",
                     1e3 * y.a2a_phase, 1e3 * sim.a2a_phase, sim.a2a_link_bytes, y.a2a_bytes, sim.a2a.makespan,
                     b.median_pipe / sim.a2a.makespan);
  return t;
}

// The collectives of the rank's last timed step, in lane order, as CSV
// (--lane-records DIR: DIR/rank<R>.csv): times in seconds since that step's
// start and, in step_start_s, the start on the steady clock, which the ranks
// of one machine share, so that expert peers' posts can be set side by side;
// wait_from_s..wait_to_s is the rank's exposed wait for the collective.
void write_lane_records(const std::string& dir, const Mesh& mesh, const RankRun& run) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("--lane-records '{}': cannot make the folder: {}", dir, ec.message()));
  std::string text =
      "rank,pp,ep,dp,group,point,half,bytes,step_start_s,posted_s,started_s,done_s,wait_from_s,wait_to_s\n";
  for (const LaneRecord& r : run.last_lane)
    text += fmt::format("{},{},{},{},{},{},{},{},{:.9f},{:.9f},{:.9f},{:.9f},{:.9f},{:.9f}\n", mesh.rank,
                        mesh.coord.pp, mesh.coord.ep, mesh.coord.dp, r.group, comm_point_name(r.point),
                        r.half == Half::Forward ? "forward" : "backward", r.bytes, run.last_start, r.posted,
                        r.started, r.done, r.wait_from, r.wait_to);
  write_output(fmt::format("{}/rank{}.csv", dir, mesh.rank), text);
}

// One rank's part: yardsticks, the timed steps, then (rank 0) the report.
int bench_rank(const Opts& o, const Schedule& s, const TrainOptions& t, const Mesh& mesh) {
  ModelConfig whole = t.model;  // the yardsticks run the model unsharded on one rank
  whole.ep = 1;
  const Yardsticks y = measure_yardsticks(o, t, whole, mesh);
  TrainOptions rank_opts = t;  // this rank's copy (thread ranks share t)
  if (y.link_bytes_per_s > 0) rank_opts.engine.link_bytes_per_s = y.link_bytes_per_s;
  const RankRun run = train_rank(s, rank_opts, mesh);
  if (!o.lane_records.empty()) write_lane_records(o.lane_records, mesh, run);
  const double K = t.engine.device_factor;
  const Gathered g = gather_run(s, run, y, K, mesh);
  if (mesh.world->rank != 0) return 0;
  if (K > 0) print_calibration(g.calibration, K);
  BenchResult b;
  for (const StepStats& st : run.steps) {
    b.steps.push_back(st.seconds);
    b.pipes.push_back(st.pipeline_seconds);
  }
  b.median_step = median(b.steps);
  b.median_pipe = median(b.pipes);
  b.exposed_steps = run.exposed.size();
  const Simulated sim = simulate_run(s, t, g, y);
  const Overhead h = overhead_of(s, t, g, b.median_step, mesh.world->world);
  write_output(o.output, o.format == "json" ? command_json("bench", bench_json(o, s, t, b, g, sim, h, y))
                                            : bench_text(o, s, b, g, sim, h, y));
  return 0;
}

// The command itself, once its options are parsed: returns the exit code.
int bench_command(Opts& o) {
  require_step_count(o.steps);
  if (is_lead_process()) {  // once, before any rank starts
    require_output_file("--output", o.output);
    if (!o.lane_records.empty()) require_output_folder("--lane-records", o.lane_records);
  }
  PipedScheduleCopy piped(o.src);  // --from <(cmd): read once, copied for the rank processes
  Schedule s = load_schedule(o.src);
  if (!s.has_comm()) s = lower(s);
  TrainOptions t = run_options(s, o.model, o.ranks, false);
  if (!o.calibration.empty()) {
    if (t.engine.device_factor <= 0) throw Error("--calibration needs --emulate-device K");
    nlohmann::json run = run_inputs_json(s, o.model, o.ranks, t.model.seed);
    run["fill_waits"] = t.engine.fill_waits;
    t.preset_calibration = read_calibration(o.calibration, run);
  }
  t.steps = o.steps;
  t.warmup_steps = 1;
  t.optimize = false;
  t.track_memory = !o.ranks.threads;  // the heap is per process
  return launch_ranks(o.ranks, s.ranks, [&](const Mesh& mesh) { return bench_rank(o, s, t, mesh); });
}

}  // namespace

void add_bench_command(CLI::App* app, CommandRun& run) {
  auto o = std::make_shared<Opts>();
  auto* cmd = app->add_subcommand("bench", std::string(torch_command_summary("bench")));
  add_source_options(cmd, o->src);
  add_model_options(cmd, o->model);
  add_rank_options(cmd, o->ranks);
  cmd->add_option("--steps", o->steps, "timed steps K")->capture_default_str();
  cmd->add_option("-f,--format", o->format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  add_output_option(cmd, o->output);
  cmd->add_option("--lane-records", o->lane_records,
                  "folder to write every rank's collectives of the last timed step into (rank<R>.csv: "
                  "group, point, half, link bytes, posted/started/done in s since the step's start; default: none)");
  cmd->add_option("--calibration", o->calibration,
                  "with --emulate-device: take each compute piece's cost from the calibration of an earlier "
                  "bench --format json, so that runs compare at one device speed (pieces it lacks are "
                  "calibrated as usual; default: none)");
  cmd->callback([o, &run] { run = [o] { return bench_command(*o); }; });
}

}  // namespace dualpipe::cli
