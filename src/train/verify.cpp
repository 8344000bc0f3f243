#include "dualpipe/train/verify.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "dualpipe/runtime/executor.h"
#include "dualpipe/train/gpt.h"
#include "dualpipe/runtime/flat_params.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe {

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  double scale = b.abs().max().item<double>();
  double diff = (a.to(b.device()) - b).abs().max().item<double>();
  if (scale == 0) return diff == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return diff / scale;
}

Reference unpipelined_step(const PipelineModel& m, int N, int64_t /*micro_batch_size*/) {
  std::vector<Stage> stages;
  for (int s = 0; s < m.stages; ++s) stages.push_back(m.build(s));
  Reference ref;
  for (int mb = 0; mb < N; ++mb) {
    torch::Tensor x = m.input(mb);
    for (auto& st : stages) x = st.forward(x);
    torch::Tensor l = m.loss(x, mb);
    ref.losses.push_back(l.item<double>());
    (l / static_cast<double>(N)).backward();
  }
  // A tied parameter is one tensor used by several stages: its gradient is
  // the sum of what each use contributed, and every copy holds it.
  for (const TiedParameter& t : m.tied) {
    std::vector<torch::Tensor> copies;
    torch::Tensor sum;
    for (const auto& [s, name] : t.at) {
      copies.push_back(stages[static_cast<std::size_t>(s)].module->named_parameters()[name]);
      const torch::Tensor g = copies.back().grad().defined() ? copies.back().grad() : torch::zeros_like(copies.back());
      sum = sum.defined() ? sum + g : g.clone();
      if (copies.size() > 1) ref.tied_copies.insert({s, name});
    }
    for (torch::Tensor& c : copies) c.mutable_grad() = sum.clone();
  }
  for (auto& st : stages) {
    std::vector<torch::Tensor> g;
    std::vector<std::string> n;
    for (auto& item : st.module->named_parameters()) {
      g.push_back(item.value().grad().defined() ? item.value().grad() : torch::zeros_like(item.value()));
      n.push_back(item.key());
    }
    ref.grads.push_back(g);
    ref.names.push_back(n);
  }
  ref.stages = std::move(stages);
  return ref;
}

VerifyResult verify_step(const Schedule& lowered, const ModelConfig& cfg, const std::shared_ptr<Comm>& comm) {
  return verify_step(lowered, cfg, pipeline_mesh(comm));
}

VerifyResult verify_step(const Schedule& lowered, const ModelConfig& cfg, const Mesh& mesh, bool fb_overlap) {
  VerifyOptions o;
  o.fb_overlap = fb_overlap;
  return verify_step(lowered, cfg, mesh, o);
}

namespace {

// One AdamW step of the whole model, as training takes it: clipped to
// `clip` with the global norm, every gradient defined (zero where none).
void reference_adamw_step(Reference& ref, const VerifyOptions& o) {
  std::vector<torch::Tensor> params;
  double sq = 0;
  for (std::size_t s = 0; s < ref.stages.size(); ++s)
    for (auto& item : ref.stages[s].module->named_parameters()) {
      torch::Tensor& p = item.value();
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      if (!ref.tied_copies.count({static_cast<int>(s), item.key()})) sq += p.grad().pow(2).sum().item<double>();
      params.push_back(p);
    }
  const double norm = std::sqrt(sq);
  torch::NoGradGuard no_grad;
  if (o.clip > 0 && norm > o.clip)
    for (auto& p : params) p.mutable_grad().mul_(o.clip / (norm + 1e-6));
  torch::optim::AdamW adam(params, torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  adam.step();
}

}  // namespace

namespace {

// One pipelined step of this rank, as verify compares it: the losses and the
// gradients as reduced (sharded: each rank holds only its chunks of them),
// kept before the optimizer step; the parameters after it.
struct PipelinedStep {
  std::unique_ptr<RankExecutor> exec;
  std::unique_ptr<GradReducer> reducer;
  StepOutput out;
  std::map<std::pair<int, std::string>, torch::Tensor> grads;  // unsharded: (stage, name) -> gradient
  std::vector<torch::Tensor> owned;                            // sharded: bucket by bucket, group by group
};

PipelinedStep pipelined_step(const Schedule& lowered, const ModelConfig& mine, const Mesh& mesh,
                             const VerifyOptions& o) {
  PipelinedStep p;
  auto engine = std::make_shared<OverlapEngine>(o.engine);
  PipelineModel model = make_model(mine, expert_group(mesh, engine));
  p.exec = std::make_unique<RankExecutor>(lowered, mesh.coord.pp, model, mesh.pipeline,
                                          rank_executor_options(mesh, o.fb_overlap, engine));
  p.reducer = make_reducer(*p.exec, mesh, o.reduce);
  std::vector<torch::Tensor> params;
  for (const auto& [s, st] : p.exec->stages())
    for (auto& prm : st.module->parameters()) params.push_back(prm);
  p.out = p.exec->step();
  p.reducer->finish();
  if (p.reducer->sharded())
    for (const torch::Tensor& t : p.reducer->owned_grads()) p.owned.push_back(t.clone());
  else
    for (const auto& [s, st] : p.exec->stages())
      for (auto& item : st.module->named_parameters())
        p.grads[{s, item.key()}] =
            item.value().grad().defined() ? item.value().grad().clone() : torch::zeros_like(item.value());
  if (o.optimizer_step && !params.empty()) {
    auto adam = make_adamw(*p.reducer, params, o.lr, o.weight_decay);
    torch::Tensor sq = torch::tensor({p.reducer->owned_sq_norm()}, torch::kFloat64);
    mesh.world->all_reduce(sq, c10d::ReduceOp::SUM, "the gradient norm");
    adamw_step(*p.reducer, *adam, std::sqrt(sq.item<double>()), o.clip, o.lr);
    p.reducer->wait_params();  // an overlapped ZeRO-1 all-gather runs on past the update
  }
  return p;
}

// One slot per quantity compared; each rank fills what it holds and the
// all-reduce takes the maximum, so every rank ends with the global figures.
struct Slots {
  std::vector<std::string> labels{"losses"};
  std::map<std::pair<int, std::string>, std::size_t> grad, param;  // (stage, name) -> slot
  std::size_t grad_end = 0;    // slots [1, grad_end): gradients
  std::size_t chunk_base = 0;  // sharded: slot of stage s's gradient chunks is chunk_base + s
};

Slots make_slots(const Schedule& lowered, const Reference& ref, bool optimizer_step, bool sharded) {
  Slots sl;
  for (int s = 0; s < lowered.stages; ++s)
    for (const std::string& name : ref.names[s]) {
      sl.grad[{s, name}] = sl.labels.size();
      sl.labels.push_back(fmt::format("stage {} {}", s, name));
    }
  sl.grad_end = sl.labels.size();
  // With an optimizer step, the parameters after it: one more slot each.
  if (optimizer_step)
    for (int s = 0; s < lowered.stages; ++s)
      for (const std::string& name : ref.names[s]) {
        sl.param[{s, name}] = sl.labels.size();
        sl.labels.push_back(fmt::format("stage {} {} after the step", s, name));
      }
  // Sharded: each rank holds only its chunks of the reduced gradients; they
  // are compared with the same elements of the reference, a slot per stage.
  sl.chunk_base = sl.labels.size();
  if (sharded)
    for (int s = 0; s < lowered.stages; ++s) sl.labels.push_back(fmt::format("stage {} gradient chunks (sharded)", s));
  return sl;
}

void compare_grads(const PipelinedStep& p, const Reference& ref, const Slots& sl, torch::Tensor& err) {
  for (const auto& [s, st] : p.exec->stages()) {
    std::map<std::string, std::size_t> ref_pos;
    for (std::size_t i = 0; i < ref.names[s].size(); ++i) ref_pos[ref.names[s][i]] = i;
    for (auto& item : st.module->named_parameters()) {
      auto it = ref_pos.find(item.key());
      if (it == ref_pos.end())
        throw Error(fmt::format("verify: stage {} parameter {} has no counterpart in the unsharded model", s, item.key()));
      err[static_cast<int64_t>(sl.grad.at({s, item.key()}))] =
          relative_difference(p.grads.at({s, item.key()}), ref.grads[s][it->second]);
    }
  }
}

void compare_chunks(const PipelinedStep& p, const Reference& ref, const Slots& sl, torch::Tensor& err) {
  std::size_t k = 0;
  for (const HolderGroup& g : p.reducer->groups()) {
    std::vector<torch::Tensor> want;
    for (const auto& [s, name] : g.names) {
      const std::vector<std::string>& names = ref.names[static_cast<std::size_t>(s)];
      want.push_back(ref.grads[static_cast<std::size_t>(s)][static_cast<std::size_t>(
          std::find(names.begin(), names.end(), name) - names.begin())]);
    }
    const torch::Tensor flat = flatten(want);
    const double scale = std::max(flat.abs().max().item<double>(), 1e-300);
    for (const GradBucket& b : g.buckets) {
      const int64_t from = b.begin + g.index * b.chunk, n = std::min(b.end, from + b.chunk) - from;
      const torch::Tensor chunk = p.owned[k++].cpu();
      // Elements past the bucket's end are padding: they must stay zero.
      const int64_t real = std::max<int64_t>(n, 0);
      double diff = 0;
      if (real > 0) diff = (chunk.narrow(0, 0, real) - flat.narrow(0, from, real)).abs().max().item<double>();
      if (chunk.numel() > real) diff = std::max(diff, chunk.narrow(0, real, chunk.numel() - real).abs().max().item<double>());
      auto slot = err[static_cast<int64_t>(sl.chunk_base + static_cast<std::size_t>(g.stage))];
      slot.fill_(std::max(slot.item<double>(), diff / scale));
    }
  }
}

void compare_params(const PipelinedStep& p, Reference& ref, const VerifyOptions& o, const Slots& sl,
                    torch::Tensor& err) {
  reference_adamw_step(ref, o);
  for (const auto& [s, st] : p.exec->stages()) {
    std::map<std::string, torch::Tensor> ref_params;
    for (auto& item : ref.stages[static_cast<std::size_t>(s)].module->named_parameters())
      ref_params[item.key()] = item.value();
    for (auto& item : st.module->named_parameters())
      err[static_cast<int64_t>(sl.param.at({s, item.key()}))] =
          relative_difference(item.value().detach(), ref_params.at(item.key()).detach());
  }
}

VerifyResult result_of(const torch::Tensor& err, const Slots& sl, bool optimizer_step, bool sharded) {
  VerifyResult res;
  res.loss_error = err[0].item<double>();
  if (optimizer_step) res.param_error = 0;
  for (std::size_t k = 1; k < sl.labels.size(); ++k) {
    const double e = err[static_cast<int64_t>(k)].item<double>();
    const bool grad = k < sl.grad_end || k >= sl.chunk_base;
    if (k < sl.grad_end && sharded) continue;  // compared by chunks instead
    res.per_param.emplace_back(sl.labels[k], e);
    (grad ? res.grad_error : res.param_error) = std::max(grad ? res.grad_error : res.param_error, e);
  }
  return res;
}

}  // namespace

VerifyResult verify_step(const Schedule& lowered, const ModelConfig& cfg, const Mesh& mesh, const VerifyOptions& o) {
  const ModelConfig mine = rank_model_config(cfg, lowered, mesh);
  const PipelinedStep p = pipelined_step(lowered, mine, mesh, o);
  // The reference: every expert in one model, every pipeline's micro-batches,
  // on the CPU whatever device the pipelined step ran on.
  ModelConfig whole = mine;
  whole.device = torch::kCPU;
  whole.expert_hosts = expert_hosts(mine);  // the same hosts, now all in one process
  whole.ep = 1;
  whole.ep_rank = 0;
  Reference ref = unpipelined_step(make_model(whole), lowered.micro_batches * mesh.shape.data_shards());
  const bool sharded = p.reducer->sharded();
  const Slots sl = make_slots(lowered, ref, o.optimizer_step, sharded);
  torch::Tensor err = torch::zeros({static_cast<int64_t>(sl.labels.size())}, torch::kFloat64);
  for (const auto& [mb, loss] : p.out.losses) {
    const double want = ref.losses[mb];
    err[0] = std::max(err[0].item<double>(), std::abs(loss - want) / std::max(std::abs(want), 1e-300));
  }
  // Sharded gradients are compared chunk by chunk, and through the parameters after the step.
  if (sharded)
    compare_chunks(p, ref, sl, err);
  else
    compare_grads(p, ref, sl, err);
  if (o.optimizer_step) compare_params(p, ref, o, sl, err);
  mesh.world->all_reduce(err, c10d::ReduceOp::MAX, "the verify comparison");
  return result_of(err, sl, o.optimizer_step, sharded);
}

}  // namespace dualpipe
