// dualpipe bench: time pipeline steps (forward and backward of every
// micro-batch, sends, receives, replica gradient sums; no optimizer).
#include <sched.h>

#include <fmt/format.h>

#include <algorithm>
#include <thread>
#include <nlohmann/json.hpp>

#include "schedule/stats.h"
#include "cli/torch_common.h"
#include "cli/torch_commands.h"
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
  constexpr int kOps = 4, kPieces = 64;  // F, B, I, W; pieces per chunk
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
// cuts them.
Costs calibrated_costs(const std::map<PieceKey, double>& cal, int stages, double K) {
  Costs c;
  c.F.assign(stages, 0);
  c.B.assign(stages, 0);
  c.W.assign(stages, 0);
  std::vector<double> I(stages, 0);
  std::vector<char> has_b(stages, 0);
  c.f_pieces.assign(stages, {});
  c.b_pieces.assign(stages, {});
  for (const auto& [key, cost] : cal) {
    const auto [op, st, piece] = key;
    (void)piece;
    const double d = K * cost;
    switch (static_cast<Op>(op)) {
      case Op::F: c.F[st] += d; c.f_pieces[st].push_back(d); break;
      case Op::B: c.B[st] += d; c.b_pieces[st].push_back(d); has_b[st] = 1; break;
      case Op::I: I[st] += d; break;
      case Op::W: c.W[st] += d; break;
      default: break;
    }
  }
  for (int st = 0; st < stages; ++st) {
    if (!has_b[st]) c.B[st] = I[st] + c.W[st];  // B is the whole backward
    c.W[st] = std::min(c.W[st], c.B[st]);
  }
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
                      {"peer_wait", med([](const ExposedComm& e) { return e.peer_wait; })}};
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

}  // namespace

void run_bench(CLI::App* app) {
  struct Opts {
    SourceOptions src;
    ModelOptions model;
    RankOptions ranks;
    int steps = 5;
    std::string format = "text";
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app->add_subcommand("bench", std::string(torch_command_summary("bench")));
  add_source_options(cmd, o->src);
  add_model_options(cmd, o->model);
  add_rank_options(cmd, o->ranks);
  cmd->add_option("--steps", o->steps, "timed steps K")->capture_default_str();
  cmd->add_option("-f,--format", o->format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->callback([o]() {
    require_step_count(o->steps);
    Schedule s = load_schedule(o->src);
    if (!s.has_comm()) s = lower(s);
    TrainOptions t = run_options(s, o->model, o->ranks, false);
    t.steps = o->steps;
    t.warmup_steps = 1;
    t.optimize = false;
    t.track_memory = !o->ranks.threads;  // the heap is per process
    const StageFlops flops = mlp_stage_flops(t.model);
    // The yardsticks run the model unsharded on one rank.
    ModelConfig whole = t.model;
    whole.ep = 1;
    int code = launch_ranks(o->ranks, s.ranks, [&](const Mesh& mesh) {
      const std::shared_ptr<Comm>& comm = mesh.world;
      // Yardsticks first, on every rank at once, so each core is as loaded
      // as during the run: the matrix-product rate, the model's own compute
      // with no pipeline, and the bytes of one activation.
      const double rate = t.model.name == "mlp" ? matmul_flops_per_second(t.model, 0.5) : 0.0;
      const double sequential = sequential_compute_seconds(whole, 1);
      const double unit = activation_unit_bytes(whole);
      PipelineModel shapes = make_model(whole);
      const double latency = transfer_seconds(*mesh.pipeline, shapes.boundary_shape, shapes.boundary_dtype, 50);
      // moe across expert ranks: the wire time of one dispatch or combine of
      // the average size (every token's K copies spread evenly over the E
      // ranks), and of the small token-count exchange before each dispatch.
      double a2a_phase = 0;
      TrainOptions rank_opts = t;  // this rank's copy (thread ranks share t)
      if (mesh.expert) {
        const int64_t rows = o->model.micro_batch_size * o->model.seq_len * o->model.top_k / mesh.shape.ep;
        const double tokens_a2a = all_to_all_seconds(*mesh.expert, std::max<int64_t>(rows, 1), o->model.hidden,
                                                     t.model.dtype, 20);
        const double counts_a2a = all_to_all_seconds(*mesh.expert, 1, o->model.experts / mesh.shape.ep, torch::kInt64, 20);
        a2a_phase = tokens_a2a + counts_a2a / 2;  // one count exchange per two phases
        // The link's effective rate as an all-to-all sees it (protocol and
        // shaping included): what a transfer beyond it spent waiting for a late peer.
        const double sent = static_cast<double>(std::max<int64_t>(rows, 1) * (mesh.shape.ep - 1) * o->model.hidden) *
                            static_cast<double>(torch::elementSize(t.model.dtype));
        if (tokens_a2a > 0) rank_opts.engine.link_bytes_per_s = sent / tokens_a2a;
      }
      RankRun run = train_rank(s, rank_opts, mesh);
      const nlohmann::json exposed_all = gather_exposed(run.exposed, *comm);
      const double K = t.engine.device_factor;
      const std::map<PieceKey, double> cal =
          K > 0 ? gather_calibration(run.calibration, s.stages, *comm) : std::map<PieceKey, double>{};
      auto overruns = gather_value(run.device_overruns, *comm);
      auto rates = gather_value(rate, *comm);
      auto heaps = gather_value(run.peak_heap_bytes, *comm);
      auto seqs = gather_value(sequential, *comm);
      auto batch = gather_value(sched_getscheduler(0) == SCHED_BATCH ? 1.0 : 0.0, *comm);
      auto times = gather_times(s, run.last_times, *mesh.pipeline);
      if (comm->rank != 0) return 0;
      if (K > 0) print_calibration(cal, K);
      std::vector<double> steps, pipes;
      for (const StepStats& st : run.steps) {
        steps.push_back(st.seconds);
        pipes.push_back(st.pipeline_seconds);
      }
      const double med = median(steps), med_pipe = median(pipes);
      // The simulator fed this run's measured per-action costs (last step).
      Costs costs = measured_costs(s, times);
      SimResult sim = simulate(compute_only(s), costs);
      // ... and the same with the measured transfer time on every cross-rank edge.
      costs.latency = latency;
      const double sim_latency = simulate(compute_only(s), costs, SimOptions{false}).makespan;
      // ... and with the all-to-alls as communication phases of every chunk
      // (2 per MoE block of the stage), hidden by F&B pairs when overlap is on.
      SimResult sim_a2a;
      double sim_shared = 0, sim_apart = 0;  // the same on a shared link, and with the transfers off it
      if (a2a_phase > 0) {
        // With device emulation: the calibration the ranks emulated, piece by piece.
        Costs ca = K > 0 ? calibrated_costs(cal, s.stages, K) : measured_costs(s, times);
        ca.pair_turns = t.engine.lane ? Costs::PairTurns::Alternate : Costs::PairTurns::FirstReady;
        ca.latency = latency;
        ca.a2a_bytes.assign(s.stages, 0.0);
        ca.a2a_phases.assign(s.stages, 0);
        for (int st = 0; st < s.stages; ++st) {
          const auto [first, end] = gpt_blocks(st, s.stages, gpt_layers(t.model));
          ca.a2a_phases[st] = 2 * (end - first);
          ca.a2a_bytes[st] = a2a_phase * ca.a2a_phases[st];  // "bytes" in seconds at rate 1
        }
        ca.a2a_rate = 1.0;
        ca.fb_overlap = t.fb_overlap;
        // The pipeline transfers on the same link: their bytes at the rate
        // the all-to-alls see, the rest of the measured transfer as latency.
        const double rate_bps = rank_opts.engine.link_bytes_per_s;
        if (rate_bps > 0) {
          ca.act_bytes = static_cast<double>(torch::elementSize(shapes.boundary_dtype));
          for (int64_t d : shapes.boundary_shape) ca.act_bytes *= static_cast<double>(d);
          ca.bandwidth = rate_bps;
          ca.latency = std::max(0.0, latency - ca.act_bytes / rate_bps);
        }
        ca.link = Costs::Link::Fifo;
        sim_a2a = simulate(compute_only(s), ca);
        ca.link = Costs::Link::Shared;
        sim_shared = simulate(compute_only(s), ca, SimOptions{false}).makespan;
        ca.link = Costs::Link::Apart;
        ca.latency = latency;
        sim_apart = simulate(compute_only(s), ca, SimOptions{false}).makespan;
      }
      // The model's compute, split over ranks by their share of the work
      // (F, B, I, W counted by FLOPs for mlp, by compute actions otherwise).
      double all_flops = 0, all_computes = 0;
      std::vector<double> rflops(s.ranks), computes(s.ranks);
      for (int r = 0; r < s.ranks; ++r) {
        rflops[r] = rank_flops(s, r, flops);
        for (const Action& a : s.actions[r]) computes[r] += is_comm(a.op) ? 0 : a.op == Op::FB ? 2 : 1;
        all_flops += rflops[r];
        all_computes += computes[r];
      }
      double floor = 0, compute = 0, compute_actions = 0;
      nlohmann::json per_rank = nlohmann::json::array();
      for (int r = 0; r < s.ranks; ++r) {
        const double share = all_flops > 0 ? rflops[r] / all_flops : computes[r] / all_computes;
        const double r_floor = rates[r] > 0 ? rflops[r] / rates[r] : 0.0;
        floor = std::max(floor, r_floor);
        compute = std::max(compute, share * seqs[r]);
        compute_actions = std::max(compute_actions, computes[r]);
        // Where the rank's last step went: compute (waits excluded), waiting
        // on receives, and the rest (sends, posting, bookkeeping between actions).
        double busy = 0, waited = 0, span = 0;
        for (std::size_t p = 0; p < times[r].size(); ++p) {
          const ActionTime& at = times[r][p];
          waited += at.wait;
          if (!is_comm(s.actions[r][p].op)) busy += at.end - at.start - at.wait;
          span = std::max(span, at.end);
        }
        nlohmann::json j = {{"flops", rflops[r]},
                            {"last_step_compute_s", busy},
                            {"last_step_recv_wait_s", waited},
                            {"last_step_pipeline_s", span},
                            {"batch_scheduling", batch[r] > 0},
                            {"matmul_flops_per_s", rates[r]},
                            {"floor_s", r_floor},
                            {"compute_s", share * seqs[r]},
                            {"compute_actions", computes[r]},
                            {"actions", s.actions[r].size()},
                            {"simulated_peak_activations", sim.per_rank[r].peak_activations},
                            {"simulated_peak_held", sim.per_rank[r].peak_held},
                            // Time with nothing computing, by cause: medians over the timed steps.
                            {"exposed_comm_s", exposed_all[r]},
                            {"device_overruns", overruns[r]}};
        if (a2a_phase > 0) {
          j["simulated_exposed_a2a_s"] = sim_a2a.per_rank[r].exposed_a2a;
          j["simulated_a2a_total_s"] = sim_a2a.per_rank[r].a2a_total;
        }
        if (t.track_memory) {
          // Held, not just live: what a split backward leaves for its W stays
          // in memory until the W runs.
          j["peak_heap_bytes"] = heaps[r];
          j["predicted_activation_bytes"] = sim.per_rank[r].peak_held * unit;
        }
        per_rank.push_back(j);
      }
      const double overhead_us = compute_actions > 0 ? 1e6 * (med - compute) / compute_actions : 0.0;
      // With more ranks than cores they time-share them, and the yardsticks
      // (measured with every rank busy at once) no longer compare with the
      // step: the difference came out as -19298 us per action. Flagged, not printed.
      const unsigned cores = std::thread::hardware_concurrency();
      const bool crowded = cores > 0 && static_cast<unsigned>(comm->world) > cores;
      const bool overhead_reliable = !crowded && overhead_us >= 0;
      const char* unreliable_why = crowded ? "ranks outnumber cores" : "the step measured below its compute alone";
      if (o->format == "json") {
        nlohmann::json j = {{"method", s.method},         {"ranks", s.ranks},
                            {"stages", s.stages},         {"micro_batches", s.micro_batches},
                            {"model", o->model.model},    {"hidden", o->model.hidden},
                            {"ffn", o->model.model == "mlp" ? mlp_ffn(t.model) : 0},
                            {"seq_len", o->model.seq_len}, {"micro_batch_size", o->model.micro_batch_size},
                            {"dtype", o->model.dtype},    {"median_step_s", med},
                            {"ep", o->ranks.ep},          {"fb_overlap", o->ranks.fb_overlap == "on"},
                            {"dp", o->ranks.dp},          {"zero", o->ranks.zero},
                            {"a2a_phase_s", a2a_phase},
                            {"simulated_with_a2a_s", a2a_phase > 0 ? sim_a2a.makespan : 0.0},
                            {"simulated_shared_link_s", sim_shared},
                            {"simulated_transfers_apart_s", sim_apart},
                            {"median_pipeline_s", med_pipe},
                            {"step_times", steps},        {"pipeline_times", pipes},
                            {"simulated_step_s", sim.makespan},
                            {"transfer_s", latency},
                            {"simulated_with_transfers_s", sim_latency},
                            {"floor_s", floor},
                            {"compute_s", compute},
                            {"overhead_per_action_us", overhead_us},  // read it only where overhead_reliable
                            {"overhead_reliable", overhead_reliable},
                            {"activation_unit_bytes", unit},
                            {"emulate_device", K},
                            {"comm_lane", t.engine.lane},
                            {"calibration", calibration_json(cal)},
                            {"per_rank", per_rank}};
        fmt::print("{}\n", j.dump(1));
      } else {
        std::vector<double> sorted = steps;
        std::sort(sorted.begin(), sorted.end());
        fmt::print("bench {}: {} ranks, {} micro-batches, model {} (hidden {}, seq {}, micro-batch size {}), {}: "
                   "median step {:.4f} s over {} steps (min {:.4f}, max {:.4f})\n",
                   s.method, s.ranks, s.micro_batches, o->model.model, o->model.hidden, o->model.seq_len,
                   o->model.micro_batch_size, o->model.dtype, med, steps.size(), sorted.front(), sorted.back());
        fmt::print("  simulated from measured action costs {:.4f} s (measured/simulated {:.3f})\n", sim.makespan,
                   med / sim.makespan);
        if (floor > 0)
          fmt::print("  compute floor (FLOPs / single-thread matrix-product rate) {:.4f} s (measured/floor {:.3f})\n",
                     floor, med / floor);
        fmt::print("  one transfer {:.1f} us; simulated with it on every cross-rank edge {:.4f} s (measured/simulated "
                   "{:.3f})\n",
                   1e6 * latency, sim_latency, med / sim_latency);
        if (overhead_reliable)
          fmt::print("  model compute alone {:.4f} s: runtime overhead {:.1f} us per compute action\n", compute,
                     overhead_us);
        else
          fmt::print("  model compute alone {:.4f} s: overhead: unreliable ({})\n", compute, unreliable_why);
        for (int r = 0; r < s.ranks; ++r) {
          const nlohmann::json& e = exposed_all[r];
          fmt::print("  rank {}: nothing computing (median of {} steps): all-to-all {:.4f} s, peer wait {:.4f} s, "
                     "pipeline {:.4f} s, gradient reduction {:.4f} s, hand-over {:.4f} s\n",
                     r, run.exposed.size(), e["all_to_all"].get<double>(), e["peer_wait"].get<double>(),
                     e["pipeline"].get<double>(), e["grad_reduce"].get<double>(), e["handover"].get<double>());
        }
        if (a2a_phase > 0)
          fmt::print("  one all-to-all phase {:.2f} ms; simulated with the all-to-alls {:.4f} s (measured/simulated {:.3f})\n",
                     1e3 * a2a_phase, sim_a2a.makespan, med_pipe / sim_a2a.makespan);
      }
      return 0;
    });
    if (code != 0) std::exit(code);
  });
}

}  // namespace dualpipe::cli
