#include "dualpipe/sim/compare.h"

#include <fmt/format.h>

#include <algorithm>

#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"

namespace dualpipe {

std::optional<double> published_bubble(const std::string& method, int PP, const Costs& c, int chunks) {
  const Method* m = method_named(method);
  if (!m || !m->published_bubble) return std::nullopt;
  // The formulas assume uniform stages; take stage 0's costs.
  PublishedTerms t;
  t.PP = t.S = PP;
  t.chunks = chunks;
  t.F = c.f(0), t.B = c.b(0), t.W = c.w(0), t.FB = c.fb(0, 0);
  return m->published_bubble(t);
}

namespace {

// The literature's peak activations in units of one PP-stage: sets the
// row's number, range and text. `S`: the stages of the method's own cut
// (DualPipeV's are PP/S of a PP-stage: it holds S + 1 of them).
void published_activations(CompareRow& row, const Method& m, int PP, int S, int N, int v) {
  if (!m.published_activations) {
    row.published_activations = "-";
    return;
  }
  PublishedTerms t;
  t.PP = PP, t.S = S, t.N = N, t.chunks = v;
  const PublishedActivations a = m.published_activations(t);
  row.published_activations_value = a.value;
  if (a.max >= 0) row.published_activations_max = a.max;
  row.published_activations_approx = a.approx;
  if (row.published_activations_max)
    row.published_activations = fmt::format("{:g}..{:g}", *row.published_activations_value, *row.published_activations_max);
  else
    row.published_activations =
        fmt::format("{}{:g}", row.published_activations_approx ? "~" : "", *row.published_activations_value);
}

// Costs and data-parallel sizes of the PP-stage cut mapped onto a cut into
// `stages` stages of the same model: a stage of a finer cut costs
// proportionally less. Per-stage lists map onto the PP-stage cut.
void scale_to_cut(const Costs& c, const DataParallel& dpo, int PP, int stages, Costs& cs, DataParallel& ds) {
  auto scale = [&](const std::vector<double>& per_pp) {
    std::vector<double> out(stages);
    for (int st = 0; st < stages; ++st)
      out[st] = (per_pp.size() == 1 ? per_pp[0] : per_pp[static_cast<std::size_t>(st) * PP / stages]) * PP / stages;
    return out;
  };
  cs.F = scale(c.F);
  cs.B = scale(c.B);
  cs.W = scale(c.W);
  if (c.FB) cs.FB = *c.FB * PP / stages;
  // A finer stage holds fewer MoE layers: fewer phases of the same
  // size where they divide evenly, else as many phases moving less.
  cs.a2a_bytes = scale(c.a2a_bytes);
  if (!c.a2a_bwd_bytes.empty()) cs.a2a_bwd_bytes = scale(c.a2a_bwd_bytes);
  cs.a2a_phases.assign(stages, 0);
  for (int st = 0; st < stages; ++st) {
    const int k = c.a2a_phases.size() == 1 ? c.a2a_phases[0] : c.a2a_phases[static_cast<std::size_t>(st) * PP / stages];
    const long long kp = static_cast<long long>(k) * PP;
    cs.a2a_phases[st] = kp % stages == 0 && kp >= stages ? static_cast<int>(kp / stages) : k;
  }
  // A finer stage holds fewer weights and activations.
  if (!dpo.grad_bytes.empty()) ds.grad_bytes = scale(dpo.grad_bytes);
  if (!dpo.param_bytes.empty()) ds.param_bytes = scale(dpo.param_bytes);
  if (!dpo.act_mem_bytes.empty()) ds.act_mem_bytes = scale(dpo.act_mem_bytes);
}

// The row's simulated figures, per PP-stage where they count stages.
// `reduces`: whether the data-parallel reduction needs the timeline.
void simulate_row(CompareRow& row, const Schedule& s, const Costs& cs, const DataParallel& ds, bool reduces, int PP) {
  SimResult sim = simulate(s, cs, SimOptions{reduces});
  row.makespan = sim.makespan;
  row.bubble = sim.bubble;
  row.bubble_ratio = sim.bubble_ratio;
  int peak = 0, held = 0;
  for (const RankStats& st : sim.per_rank) {
    peak = std::max(peak, st.peak_activations);
    held = std::max(held, st.stages_held);
  }
  row.params_per_device = static_cast<double>(held) * PP / s.stages;
  row.peak_activations = static_cast<double>(peak) * PP / s.stages;
  for (const RankStats& st : sim.per_rank) row.exposed_a2a = std::max(row.exposed_a2a, st.exposed_a2a);
  row.a2a_hidden = sim.a2a_hidden;
  row.step_with_grad_reduce = sim.makespan;
  if (ds.reduces()) {
    const GradReduce g = reduce_gradients(s, sim, ds);
    row.step_with_grad_reduce = g.step;
    for (const RankReduce& rr : g.per_rank) row.exposed_grad_reduce = std::max(row.exposed_grad_reduce, rr.exposed);
  }
  if (ds.has_memory()) {
    const std::vector<RankMemory> mem = rank_memory(s, ds);
    for (std::size_t r = 0; r < mem.size(); ++r)
      if (r == 0 || mem[r].total() > row.peak_memory.total()) {
        row.peak_memory = mem[r];
        row.peak_memory_rank = static_cast<int>(r);
      }
  }
}

}  // namespace

std::vector<CompareRow> compare(int PP, int N, const Costs& c, int chunks, CompareBasis basis,
                                const DataParallel& dpo) {
  if (PP < 1) throw Error(fmt::format("compare needs at least 1 stage (got {})", PP));
  if (N < 1) throw Error(fmt::format("compare needs at least 1 micro-batch (got {})", N));
  // Every row cuts the model into at least PP stages: refuse absurd shapes
  // once, here, rather than as eight "n/a" rows (interleaved-1f1b's chunks
  // are checked in its own row).
  require_feasible_size("compare", Shape{PP, N, 1});
  c.validate(PP);
  dpo.validate(PP);
  std::vector<CompareRow> rows;
  for (const Method& m : methods()) {
    CompareRow row;
    row.method = m.name;
    const int v = m.takes_chunks() ? chunks : 1;
    const bool half = m.v_shaped() && basis == CompareBasis::Stages;
    Shape shape{half ? PP / 2 : PP, N, chunks};
    row.devices = shape.ranks;
    row.published_bubble = published_bubble(row.method, PP, c, chunks);
    published_activations(row, m, PP, PP, N, v);
    try {
      if (half && PP % 2 != 0)
        throw Error(fmt::format("V-shaped schedules need an even stage count (got {})", PP));
      Schedule s = generate(m.name, shape);
      row.stages = s.stages;
      // The model is the same for every row: a finer cut's stages cost less.
      Costs cs = c;
      DataParallel ds = dpo;
      if (s.stages != PP) scale_to_cut(c, dpo, PP, s.stages, cs, ds);
      // A V-shaped cut's formulas are in its own stages (two a device) at
      // its own stage costs; on the stages basis that is PP at c, as above.
      if (m.v_shaped()) {
        row.published_bubble = published_bubble(row.method, s.stages, cs, chunks);
        published_activations(row, m, PP, s.stages, N, v);
      }
      simulate_row(row, s, cs, ds, dpo.reduces(), PP);  // reductions need the timeline
      row.costs = std::move(cs);
      row.data_parallel = std::move(ds);
    } catch (const Error& e) {
      row.error = e.what();
    }
    rows.push_back(row);
  }
  return rows;
}

}  // namespace dualpipe
