#include "train/trainer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "schedule/error.h"

namespace dp {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kGatherTag = 1 << 30;  // above every pipeline and replica tag

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

RankRun train_rank(const Schedule& lowered, const TrainOptions& opt, const std::shared_ptr<Comm>& comm,
                   const std::function<void(const StepStats&)>& progress) {
  PipelineModel model = make_model(opt.model);
  RankExecutor exec(lowered, comm->rank, model, comm);
  exec.track_memory = opt.track_memory;
  std::vector<torch::Tensor> params;
  // A replicated stage's gradient is counted once in the global norm.
  std::vector<std::pair<torch::Tensor, double>> norm_terms;
  for (const auto& [s, st] : exec.stages())
    for (auto& p : st.module->parameters()) {
      params.push_back(p);
      norm_terms.emplace_back(p, 1.0 / static_cast<double>(exec.replicas()[s].size()));
    }
  std::unique_ptr<torch::optim::AdamW> adam;
  if (opt.optimize && !params.empty())
    adam = std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(opt.lr).weight_decay(opt.weight_decay));

  RankRun run;
  const int total = opt.warmup_steps + opt.steps;
  for (int k = 0; k < total; ++k) {
    if (model.begin_step) model.begin_step(k);
    for (auto& p : params)
      if (p.grad().defined()) p.mutable_grad().zero_();
    comm->barrier();  // all ranks start the step together: their clocks line up
    const auto t0 = Clock::now();
    StepOutput out = exec.step();
    exec.sum_replica_grads();
    // Global loss and gradient norm in one all-reduce.
    double loss_sum = 0, sq = 0;
    for (const auto& l : out.losses) loss_sum += l.second;
    for (const auto& [p, w] : norm_terms)
      if (p.grad().defined()) sq += w * p.grad().pow(2).sum().item<double>();
    torch::Tensor red = torch::tensor({loss_sum, sq, out.seconds}, torch::kFloat64);
    torch::Tensor mx = torch::tensor({out.seconds}, torch::kFloat64);
    comm->all_reduce(red);
    comm->all_reduce(mx, c10d::ReduceOp::MAX);
    StepStats st;
    st.step = k - opt.warmup_steps;
    st.loss = red[0].item<double>() / lowered.micro_batches;
    st.grad_norm = std::sqrt(red[1].item<double>());
    st.pipeline_seconds = mx[0].item<double>();
    if (adam) {
      if (opt.clip > 0 && st.grad_norm > opt.clip) {
        torch::NoGradGuard no_grad;
        const double scale = opt.clip / (st.grad_norm + 1e-6);
        for (auto& p : params)
          if (p.grad().defined()) p.mutable_grad().mul_(scale);
      }
      adam->step();
    }
    st.seconds = seconds_since(t0);
    if (k < opt.warmup_steps) continue;
    run.steps.push_back(st);
    run.last_times = out.times;
    run.peak_heap_bytes = std::max(run.peak_heap_bytes, out.peak_heap_bytes);
    if (comm->rank == 0 && progress) progress(st);
  }
  for (const auto& [s, st] : exec.stages()) {
    std::vector<torch::Tensor> flat;
    for (auto& p : st.module->parameters()) flat.push_back(p.detach().reshape({-1}));
    if (!flat.empty()) run.final_params[s] = torch::cat(flat);
  }
  return run;
}

std::vector<std::vector<ActionTime>> gather_times(const Schedule& lowered, const std::vector<ActionTime>& mine,
                                                  Comm& comm) {
  auto pack = [](const std::vector<ActionTime>& v) {
    torch::Tensor t = torch::empty({static_cast<int64_t>(v.size()) * 3}, torch::kFloat64);
    auto a = t.accessor<double, 1>();
    for (std::size_t i = 0; i < v.size(); ++i) {
      a[static_cast<int64_t>(3 * i)] = v[i].start;
      a[static_cast<int64_t>(3 * i + 1)] = v[i].end;
      a[static_cast<int64_t>(3 * i + 2)] = v[i].wait;
    }
    return t;
  };
  if (comm.rank != 0) {
    torch::Tensor t = pack(mine);
    comm.isend(t, 0, kGatherTag)->wait(comm.timeout);
    return {};
  }
  std::vector<std::vector<ActionTime>> all(lowered.ranks);
  all[0] = mine;
  for (int r = 1; r < lowered.ranks; ++r) {
    torch::Tensor t = torch::empty({static_cast<int64_t>(lowered.actions[r].size()) * 3}, torch::kFloat64);
    comm.irecv(t, r, kGatherTag)->wait(comm.timeout);
    auto a = t.accessor<double, 1>();
    all[r].resize(lowered.actions[r].size());
    for (std::size_t i = 0; i < all[r].size(); ++i)
      all[r][i] = {a[static_cast<int64_t>(3 * i)], a[static_cast<int64_t>(3 * i + 1)], a[static_cast<int64_t>(3 * i + 2)]};
  }
  return all;
}

std::vector<double> gather_value(double x, Comm& comm) {
  torch::Tensor t = torch::zeros({comm.world}, torch::kFloat64);
  t[comm.rank] = x;
  comm.all_reduce(t);
  if (comm.rank != 0) return {};
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + comm.world);
}

SimResult measured_result(const Schedule& lowered, const std::vector<std::vector<ActionTime>>& times) {
  SimResult r;
  r.timeline.resize(lowered.ranks);
  r.per_rank.resize(lowered.ranks);
  for (int k = 0; k < lowered.ranks; ++k) {
    const auto& acts = lowered.actions[k];
    r.timeline[k].resize(acts.size());
    for (std::size_t p = 0; p < acts.size(); ++p) {
      const ActionTime& t = times[k][p];
      // Drawn as compute from when the inputs were there to the end.
      Span sp{t.start + t.wait, t.end};
      if (is_comm(acts[p].op)) sp = {t.start, t.start};
      r.timeline[k][p] = sp;
      r.per_rank[k].busy += sp.end - sp.start;
      r.makespan = std::max(r.makespan, t.end);
    }
  }
  for (auto& st : r.per_rank) {
    st.idle = r.makespan - st.busy;
    r.bubble = std::max(r.bubble, st.idle);
  }
  r.bubble_ratio = r.makespan > 0 ? r.bubble / r.makespan : 0;
  return r;
}

Costs measured_costs(const Schedule& lowered, const std::vector<std::vector<ActionTime>>& times) {
  const int S = lowered.stages;
  // [kind][stage] sums and counts; kind: F, B, I, W.
  std::vector<std::vector<double>> sum(4, std::vector<double>(S, 0.0)), cnt(4, std::vector<double>(S, 0.0));
  double fb_sum = 0, fb_cnt = 0;
  for (int r = 0; r < lowered.ranks; ++r)
    for (std::size_t p = 0; p < lowered.actions[r].size(); ++p) {
      const Action& a = lowered.actions[r][p];
      const double d = times[r][p].end - times[r][p].start - times[r][p].wait;
      int kind = a.op == Op::F ? 0 : a.op == Op::B ? 1 : a.op == Op::I ? 2 : a.op == Op::W ? 3 : -1;
      if (kind >= 0) {
        sum[kind][a.stage] += d;
        cnt[kind][a.stage] += 1;
      } else if (a.op == Op::FB) {
        fb_sum += d;
        fb_cnt += 1;
      }
    }
  auto mean = [&](int kind, int s) { return cnt[kind][s] > 0 ? sum[kind][s] / cnt[kind][s] : -1.0; };
  Costs c;
  c.F.assign(S, 0);
  c.B.assign(S, 0);
  c.W.assign(S, 0);
  for (int s = 0; s < S; ++s) {
    const double f = mean(0, s), b = mean(1, s), i = mean(2, s), w = mean(3, s);
    c.F[s] = std::max(f, 0.0);
    c.W[s] = std::max(w, 0.0);
    // B is the whole backward: measured where the stage ran one, else I + W.
    c.B[s] = b >= 0 ? b : std::max(i, 0.0) + c.W[s];
    c.W[s] = std::min(c.W[s], c.B[s]);
  }
  if (fb_cnt > 0) c.FB = fb_sum / fb_cnt;
  return c;
}

}  // namespace dp
