// Data parallelism in the simulator (docs/simulation.md, "Data
// parallelism"): the gradient reductions over the holders of each stage,
// their overlap with the pipeline's tail, ZeRO-1, and the memory per rank.
// Expected figures are derived here from the ring all-reduce formula and
// the simulated timeline, not copied from the implementation's output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_run.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/placement.h"
#include "dualpipe/sim/compare.h"
#include "dualpipe/sim/data_parallel.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe {
namespace {

Costs costs() { return parse_costs("F=1,B=2,W=1"); }

DataParallel dp_of(int D, double grad_bytes, double rate, bool overlap, int buckets = 1) {
  DataParallel d;
  d.replicas = D;
  d.grad_bytes = {grad_bytes};
  d.rate = rate;
  d.overlap = overlap;
  d.buckets = buckets;
  return d;
}

// End of each rank's last action, from the timeline.
std::vector<double> compute_ends(const SimResult& r) {
  std::vector<double> out;
  for (const auto& spans : r.timeline) {
    double e = 0;
    for (const Span& s : spans) e = std::max(e, s.end);
    out.push_back(e);
  }
  return out;
}

// Time of a ring all-reduce of `bytes` over `holders` ranks at `rate`.
double ring_time(double bytes, int holders, double rate) { return 2.0 * (holders - 1) / holders * bytes / rate; }

TEST(DataParallel, HoldersFollowTheSchedulesPlacement) {
  // DualPipe and Chimera run every stage on two ranks (r and P-1-r); the
  // others on one.
  const auto dual = placement_of(generate("dualpipe", Shape{4, 8, 1})).replicas;
  for (int st = 0; st < 4; ++st) EXPECT_EQ(dual[st], (std::vector<int>{std::min(st, 3 - st), std::max(st, 3 - st)}));
  const auto chim = placement_of(generate("chimera", Shape{4, 8, 1})).replicas;
  for (const auto& v : chim) EXPECT_EQ(v.size(), 2u);
  const auto zbv = placement_of(generate("zbv", Shape{4, 8, 1})).replicas;
  ASSERT_EQ(zbv.size(), 8u);
  for (int st = 0; st < 8; ++st) EXPECT_EQ(zbv[st], (std::vector<int>{st < 4 ? st : 7 - st}));
}

TEST(DataParallel, OverlapOffExposesTheWholeReductionAfterTheLastCompute) {
  const double G = 3, rate = 2;
  // ZB1P, D = 2: one stage a rank, two holders; every rank adds one ring
  // all-reduce after its own last compute.
  {
    const Schedule s = generate("zb1p", Shape{4, 8, 1});
    const SimResult sim = simulate(s, costs());
    const GradReduce g = reduce_gradients(s, sim, dp_of(2, G, rate, false));
    const std::vector<double> ends = compute_ends(sim);
    double step = 0;
    for (int r = 0; r < 4; ++r) {
      EXPECT_DOUBLE_EQ(g.per_rank[r].exposed, ring_time(G, 2, rate)) << r;
      EXPECT_DOUBLE_EQ(g.per_rank[r].end, ends[r] + ring_time(G, 2, rate)) << r;
      step = std::max(step, g.per_rank[r].end);
    }
    EXPECT_DOUBLE_EQ(g.step, step);
    EXPECT_DOUBLE_EQ(g.exposed, step - sim.makespan);
  }
  // DualPipe, D = 2: rank r holds stages r and P-1-r with rank P-1-r, four
  // holders each; both reductions start when both ranks have finished.
  {
    const Schedule s = generate("dualpipe", Shape{4, 8, 1});
    const SimResult sim = simulate(s, costs());
    const GradReduce g = reduce_gradients(s, sim, dp_of(2, G, rate, false));
    const std::vector<double> ends = compute_ends(sim);
    for (int r = 0; r < 4; ++r) {
      const double start = std::max(ends[r], ends[3 - r]);
      EXPECT_DOUBLE_EQ(g.per_rank[r].end, start + 2 * ring_time(G, 4, rate)) << r;
      EXPECT_DOUBLE_EQ(g.per_rank[r].exposed, start - ends[r] + 2 * ring_time(G, 4, rate)) << r;
      EXPECT_DOUBLE_EQ(g.per_rank[r].link, 2 * ring_time(G, 4, rate)) << r;
    }
  }
}

TEST(DataParallel, OverlapHidesPartOfTheReductionUnderTheTail) {
  const double G = 1, rate = 1;
  // DualPipe: the stage a rank finishes first reduces while it computes the other.
  {
    const Schedule s = generate("dualpipe", Shape{4, 8, 1});
    const SimResult sim = simulate(s, costs());
    const GradReduce on = reduce_gradients(s, sim, dp_of(2, G, rate, true));
    const GradReduce off = reduce_gradients(s, sim, dp_of(2, G, rate, false));
    EXPECT_LT(on.exposed, off.exposed);
    EXPECT_LT(on.step, off.step);
    for (int r = 0; r < 4; ++r) {
      EXPECT_LT(on.per_rank[r].exposed, off.per_rank[r].exposed) << r;
      EXPECT_DOUBLE_EQ(on.per_rank[r].link, off.per_rank[r].link) << r;  // same bytes either way
    }
  }
  // ZB1P holds one stage a rank, and its last W is the rank's last action:
  // with one bucket a stage there is no tail to hide under. In buckets
  // that become ready during that W, all but the last can overlap it.
  {
    const Schedule s = generate("zb1p", Shape{4, 8, 1});
    const SimResult sim = simulate(s, costs());
    const GradReduce off = reduce_gradients(s, sim, dp_of(2, G, rate, false));
    const GradReduce one = reduce_gradients(s, sim, dp_of(2, G, rate, true, 1));
    EXPECT_DOUBLE_EQ(one.exposed, off.exposed);
    const GradReduce four = reduce_gradients(s, sim, dp_of(2, G, rate, true, 4));
    EXPECT_LT(four.exposed, off.exposed);
    for (int r = 0; r < 4; ++r) {
      EXPECT_LT(four.per_rank[r].exposed, off.per_rank[r].exposed) << r;
      // The last bucket can start only when the W ends: a quarter stays.
      EXPECT_GE(four.per_rank[r].exposed, ring_time(G, 2, rate) / 4 - 1e-12) << r;
    }
  }
}

TEST(DataParallel, OneReplicaOfOneHolderAddsNothing) {
  for (const char* m : {"1f1b", "zb1p", "gpipe", "interleaved-1f1b", "zbv", "dualpipev"}) {
    const Schedule s = generate(m, Shape{4, 8, 2});
    const SimResult sim = simulate(s, costs());
    for (bool overlap : {true, false}) {
      const GradReduce g = reduce_gradients(s, sim, dp_of(1, 5, 1, overlap));
      EXPECT_DOUBLE_EQ(g.step, sim.makespan) << m;
      EXPECT_DOUBLE_EQ(g.exposed, 0) << m;
      EXPECT_DOUBLE_EQ(g.link, 0) << m;
    }
  }
  // DualPipe at D = 1 still sums each stage over its two replicas.
  const Schedule s = generate("dualpipe", Shape{4, 8, 1});
  const GradReduce g = reduce_gradients(s, simulate(s, costs()), dp_of(1, 5, 1, true));
  for (const RankReduce& rr : g.per_rank) EXPECT_DOUBLE_EQ(rr.link, 2 * ring_time(5, 2, 1));
}

TEST(DataParallel, ZeroOneAllGathersAfterTheStep) {
  const double G = 2, rate = 1;
  const Schedule s = generate("zb1p", Shape{4, 8, 1});
  const SimResult sim = simulate(s, costs());
  DataParallel d = dp_of(4, G, rate, false);
  const GradReduce plain = reduce_gradients(s, sim, d);
  d.zero1 = true;
  const GradReduce z_off = reduce_gradients(s, sim, d);
  // Without overlap: reduce-scatter + all-gather move what the all-reduce moves.
  for (int r = 0; r < 4; ++r) EXPECT_DOUBLE_EQ(z_off.per_rank[r].exposed, plain.per_rank[r].exposed) << r;
  d.overlap = true;
  d.buckets = 8;
  const GradReduce z_on = reduce_gradients(s, sim, d);
  // With overlap the all-gather (half the ring) still comes after the step.
  for (int r = 0; r < 4; ++r) {
    EXPECT_GE(z_on.per_rank[r].exposed, ring_time(G, 4, rate) / 2 - 1e-12) << r;
    EXPECT_LT(z_on.per_rank[r].exposed, z_off.per_rank[r].exposed) << r;
  }
}

TEST(DataParallel, ZeroOneDividesTheOptimizerStateOverTheHolders) {
  const double P = 1000, G = 2000, A = 10;
  for (int D : {1, 3}) {
    DataParallel d;
    d.replicas = D;
    d.param_bytes = {P};
    d.grad_bytes = {G};
    d.act_mem_bytes = {A};
    d.rate = 1;
    // DualPipe: two stages a rank, each held by 2D ranks.
    const Schedule dual = generate("dualpipe", Shape{4, 8, 1});
    const SimResult sim = simulate(dual, costs());
    const std::vector<RankMemory> full = rank_memory(dual, d);
    d.zero1 = true;
    const std::vector<RankMemory> z = rank_memory(dual, d);
    for (int r = 0; r < 4; ++r) {
      EXPECT_DOUBLE_EQ(full[r].params, 2 * P);
      EXPECT_DOUBLE_EQ(full[r].grads, 2 * G);
      EXPECT_DOUBLE_EQ(full[r].optimizer, 2 * 2 * P);  // AdamW: two moments of each weight
      EXPECT_DOUBLE_EQ(z[r].optimizer, 2 * 2 * P / (2 * D));
      EXPECT_DOUBLE_EQ(z[r].params, full[r].params);  // ZeRO-1 keeps weights and gradients whole
      EXPECT_DOUBLE_EQ(z[r].grads, full[r].grads);
      EXPECT_DOUBLE_EQ(z[r].activations, A * sim.per_rank[r].peak_held);
    }
    // ZB1P: one stage a rank, D holders.
    const Schedule zb = generate("zb1p", Shape{4, 8, 1});
    for (const RankMemory& m : rank_memory(zb, d)) EXPECT_DOUBLE_EQ(m.optimizer, 2 * P / D);
  }
}

TEST(DataParallel, WeightsDefaultToTheGradientBytes) {
  DataParallel d;
  d.grad_bytes = {7};
  EXPECT_DOUBLE_EQ(d.params(0), 7);
  d.grad_bytes.clear();
  d.param_bytes = {5};
  EXPECT_DOUBLE_EQ(d.grads(0), 5);
  EXPECT_FALSE(d.reduces());  // gradients for memory only: nothing to reduce
  EXPECT_TRUE(d.has_memory());
}

TEST(DataParallel, BadOptionsAreErrors) {
  const Schedule s = generate("1f1b", Shape{4, 4, 1});
  const SimResult sim = simulate(s, costs());
  DataParallel d = dp_of(0, 1, 1, true);
  EXPECT_THROW(reduce_gradients(s, sim, d), Error);
  d = dp_of(2, 1, 0, true);  // bytes and no rate
  EXPECT_THROW(reduce_gradients(s, sim, d), Error);
  d = dp_of(2, -1, 1, true);
  EXPECT_THROW(reduce_gradients(s, sim, d), Error);
  d = dp_of(2, 1, 1, true);
  d.grad_bytes = {1, 2, 3};  // neither one nor four values
  EXPECT_THROW(reduce_gradients(s, sim, d), Error);
  d = dp_of(2, 1, 1, true, 0);
  EXPECT_THROW(reduce_gradients(s, sim, d), Error);
  d = dp_of(2, 1, 1, true, 5000);  // more buckets than any layer count
  EXPECT_THROW(reduce_gradients(s, sim, d), Error);
}

TEST(DataParallel, CompareScalesBytesWithTheCut) {
  const DataParallel d = dp_of(1, 4, 1, true);
  const std::vector<CompareRow> rows = compare(4, 8, costs(), 2, CompareBasis::Devices, d);
  for (const CompareRow& r : rows) {
    ASSERT_TRUE(r.error.empty()) << r.method << ": " << r.error;
    EXPECT_GE(r.step_with_grad_reduce, r.makespan) << r.method;
    // At D = 1 only the methods with two copies of a stage reduce anything.
    if (r.method == "dualpipe" || r.method == "chimera")
      EXPECT_GT(r.exposed_grad_reduce, 0) << r.method;
    else
      EXPECT_DOUBLE_EQ(r.step_with_grad_reduce, r.makespan) << r.method;
    // Weights per device follow params/dev: 4 bytes of weights a PP-stage.
    EXPECT_DOUBLE_EQ(r.peak_memory.params, 4 * r.params_per_device) << r.method;
  }
}

// The command line: options, refusals, and the same numbers as JSON.
using test_support::CliRun;
CliRun run(const std::string& args) { return test_support::run_cli(args, "", 60); }
void expect_error(const std::string& args, const std::string& fragment) { test_support::expect_cli_error(args, fragment); }

TEST(DataParallelCli, BadInputIsOneLine) {
  const std::string sim = "simulate -m dualpipe -p 4 -n 8 ";
  expect_error(sim + "--dp 0 --grad-bytes 1 --dp-rate 1", "--dp must be at least 1 (got 0)");
  expect_error(sim + "--zero 2 --grad-bytes 1 --dp-rate 1", "--zero must be 0 or 1 (got 2)");
  expect_error(sim + "--grad-bytes 1 --dp-rate 0", "--grad-bytes needs --dp-rate above 0");
  expect_error(sim + "--grad-bytes 1", "--grad-bytes needs --dp-rate above 0");
  expect_error(sim + "--grad-bytes 1:2 --dp-rate 1", "--grad-bytes has 2 values");
  expect_error(sim + "--grad-bytes x --dp-rate 1", "--grad-bytes: 'x' is not a finite number");
  expect_error(sim + "--memory-limit 0 --grad-bytes 1 --dp-rate 1", "--memory-limit must be a positive number");
  expect_error("compare -p 4 -n 8 --dp -1 --param-bytes 1", "--dp must be at least 1 (got -1)");
  // Options that do nothing alone.
  expect_error(sim + "--dp-rate 5", "add --grad-bytes");
  expect_error(sim + "--overlap-grad-reduce off", "add --grad-bytes");
  expect_error(sim + "--grad-buckets 4", "add --grad-bytes");
  expect_error(sim + "--dp 4", "--dp changes nothing without --grad-bytes or --param-bytes");
  expect_error(sim + "--zero 1", "--zero 1 changes nothing");
  expect_error("compare -p 4 -n 8 --memory-limit 80", "--memory-limit needs the bytes to count");
}

TEST(DataParallelCli, SimulateReportsReductionAndMemoryAsNumbers) {
  // 1 GiB of gradients a stage, D = 2, ZeRO-1, 2 GiB of activations a micro-batch.
  const std::string args =
      "simulate -m dualpipe -p 4 -n 8 --dp 2 --zero 1 --grad-bytes 1073741824 --dp-rate 1073741824 "
      "--act-mem-bytes 2147483648 --memory-limit 14";
  CliRun r = run(args + " -f json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GE(j["step_with_grad_reduce"].get<double>(), j["makespan"].get<double>());
  EXPECT_DOUBLE_EQ(j["step_with_grad_reduce"].get<double>() - j["makespan"].get<double>(),
                   j["exposed_grad_reduce"].get<double>());
  const double gib = 1073741824.0;
  for (const auto& rank : j["per_rank"]) {
    const auto& m = rank["memory_bytes"];
    EXPECT_DOUBLE_EQ(m["params"].get<double>(), 2 * gib);
    EXPECT_DOUBLE_EQ(m["optimizer"].get<double>(), 2 * 2 * gib / 4);  // two stages, two moments, 4 holders
    // Whole stage activations, at least the ones alive to the end of I.
    const double act = m["activations"].get<double>();
    EXPECT_DOUBLE_EQ(act / (2 * gib), std::floor(act / (2 * gib)));
    EXPECT_GE(act, 2 * gib * rank["peak_activations"].get<double>());
    EXPECT_DOUBLE_EQ(m["total"].get<double>(),
                     m["params"].get<double>() + m["grads"].get<double>() + m["optimizer"].get<double>() + act);
    EXPECT_EQ(m["fits"].get<bool>(), m["total"].get<double>() <= 14 * gib);
    EXPECT_GE(rank["exposed_grad_reduce"].get<double>(), 0);
  }
  EXPECT_EQ(j["data_parallel"]["dp"], 2);
  EXPECT_EQ(j["data_parallel"]["zero"], 1);
  // The text form has the memory table and says which ranks fit.
  CliRun t = run(args);
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_NE(t.out.find("memory per rank in GiB, limit 14 GiB"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("step with gradient reduction"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("  fits"), std::string::npos) << t.out;
}

TEST(DataParallelCli, CompareAddsColumnsOnlyWhenAsked) {
  CliRun plain = run("compare -p 4 -n 8");
  ASSERT_EQ(plain.code, 0) << plain.out;
  EXPECT_EQ(plain.out.find("step+dp"), std::string::npos);
  CliRun r = test_support::run_cli_stdout(
      "compare -p 4 -n 8 --dp 2 --grad-bytes 1 --dp-rate 1 --param-bytes 1e9 --memory-limit 80 -f json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  for (const auto& row : j["rows"]) {
    if (row.contains("error")) continue;
    EXPECT_GE(row["step_with_grad_reduce"].get<double>(), row["makespan"].get<double>()) << row["method"];
    EXPECT_TRUE(row["peak_memory"]["fits"].get<bool>()) << row["method"];
  }
}

}  // namespace
}  // namespace dualpipe
