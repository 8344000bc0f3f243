#include "dualpipe/train/verify.h"

#include <fmt/format.h>

#include <map>

#include "dualpipe/runtime/executor.h"
#include "dualpipe/train/gpt.h"
#include "dualpipe/runtime/flat_params.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe {

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  double scale = b.abs().max().item<double>();
  double diff = (a - b).abs().max().item<double>();
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
  for (auto& st : ref.stages)
    for (auto& p : st.module->parameters()) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      sq += p.grad().pow(2).sum().item<double>();
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

VerifyResult verify_step(const Schedule& lowered, const ModelConfig& cfg, const Mesh& mesh, const VerifyOptions& o) {
  const ModelConfig mine = rank_model_config(cfg, lowered, mesh);
  auto engine = std::make_shared<OverlapEngine>(o.engine);
  PipelineModel model = make_model(mine, ExpertGroup{mesh.expert, mesh.expert_bwd, engine});
  RankExecutor exec(lowered, mesh.coord.pp, model, mesh.pipeline, rank_executor_options(mesh, o.fb_overlap, engine));
  std::unique_ptr<GradReducer> reducer = make_reducer(exec, mesh, o.reduce);
  std::vector<torch::Tensor> params;
  for (const auto& [s, st] : exec.stages())
    for (auto& p : st.module->parameters()) params.push_back(p);
  StepOutput out = exec.step();
  reducer->finish();
  // The gradients as reduced (sharded: each rank holds only its chunks of
  // them): kept before the optimizer step, compared below.
  std::map<std::pair<int, std::string>, torch::Tensor> grads;
  std::vector<torch::Tensor> owned;  // sharded: bucket by bucket, group by group
  for (const torch::Tensor& t : reducer->sharded() ? reducer->owned_grads() : std::vector<torch::Tensor>{})
    owned.push_back(t.clone());
  if (!reducer->sharded())
    for (const auto& [s, st] : exec.stages())
      for (auto& item : st.module->named_parameters())
        grads[{s, item.key()}] = item.value().grad().defined() ? item.value().grad().clone() : torch::zeros_like(item.value());
  if (o.optimizer_step && !params.empty()) {
    auto adam = make_adamw(*reducer, params, o.lr, o.weight_decay);
    torch::Tensor sq = torch::tensor({reducer->owned_sq_norm()}, torch::kFloat64);
    mesh.world->all_reduce(sq, c10d::ReduceOp::SUM, "the gradient norm");
    adamw_step(*reducer, *adam, std::sqrt(sq.item<double>()), o.clip, o.lr);
    reducer->wait_params();  // an overlapped ZeRO-1 all-gather runs on past the update
  }
  // The reference: every expert in one model, every pipeline's micro-batches.
  ModelConfig whole = mine;
  whole.expert_hosts = expert_hosts(mine);  // the same hosts, now all in one process
  whole.ep = 1;
  whole.ep_rank = 0;
  const int shards = mesh.shape.data_shards();
  Reference ref = unpipelined_step(make_model(whole), lowered.micro_batches * shards);

  // One slot per quantity compared; each rank fills what it holds and the
  // all-reduce takes the maximum, so every rank ends with the global figures.
  std::vector<std::string> labels{"losses"};
  std::map<std::pair<int, std::string>, std::size_t> index;
  for (int s = 0; s < lowered.stages; ++s)
    for (std::size_t i = 0; i < ref.names[s].size(); ++i) {
      index[{s, ref.names[s][i]}] = labels.size();
      labels.push_back(fmt::format("stage {} {}", s, ref.names[s][i]));
    }
  // With an optimizer step, the parameters after it: one more slot each.
  std::map<std::pair<int, std::string>, std::size_t> param_index;
  if (o.optimizer_step)
    for (int s = 0; s < lowered.stages; ++s)
      for (std::size_t i = 0; i < ref.names[s].size(); ++i) {
        param_index[{s, ref.names[s][i]}] = labels.size();
        labels.push_back(fmt::format("stage {} {} after the step", s, ref.names[s][i]));
      }
  const std::size_t grad_slots = labels.size() - param_index.size();
  // Sharded: each rank holds only its chunks of the reduced gradients; they
  // are compared with the same elements of the reference, a slot per stage.
  const std::size_t chunk_slots = labels.size();
  if (reducer->sharded())
    for (int s = 0; s < lowered.stages; ++s) labels.push_back(fmt::format("stage {} gradient chunks (sharded)", s));
  torch::Tensor err = torch::zeros({static_cast<int64_t>(labels.size())}, torch::kFloat64);
  for (const auto& [mb, loss] : out.losses) {
    double want = ref.losses[mb];
    double rel = std::abs(loss - want) / std::max(std::abs(want), 1e-300);
    err[0] = std::max(err[0].item<double>(), rel);
  }
  // Sharded gradients are compared through the parameters after the step.
  if (!reducer->sharded())
    for (const auto& [s, st] : exec.stages()) {
      std::map<std::string, std::size_t> ref_pos;
      for (std::size_t i = 0; i < ref.names[s].size(); ++i) ref_pos[ref.names[s][i]] = i;
      for (auto& item : st.module->named_parameters()) {
        auto it = ref_pos.find(item.key());
        if (it == ref_pos.end())
          throw Error(fmt::format("verify: stage {} parameter {} has no counterpart in the unsharded model", s, item.key()));
        err[static_cast<int64_t>(index.at({s, item.key()}))] =
            relative_difference(grads.at({s, item.key()}), ref.grads[s][it->second]);
      }
    }
  if (reducer->sharded()) {
    std::size_t k = 0;
    for (const HolderGroup& g : reducer->groups()) {
      std::map<std::string, std::size_t> ref_pos;
      for (std::size_t i = 0; i < ref.names[g.stage].size(); ++i) ref_pos[ref.names[g.stage][i]] = i;
      std::vector<torch::Tensor> want;
      for (auto& item : exec.stages().at(g.stage).module->named_parameters()) {
        const bool expert = exec.stages().at(g.stage).is_expert_param && exec.stages().at(g.stage).is_expert_param(item.key());
        if (expert == g.expert) want.push_back(ref.grads[g.stage][ref_pos.at(item.key())]);
      }
      const torch::Tensor flat = flatten(want);
      const double scale = std::max(flat.abs().max().item<double>(), 1e-300);
      for (const GradBucket& b : g.buckets) {
        const int64_t from = b.begin + g.index * b.chunk, n = std::min(b.end, from + b.chunk) - from;
        const torch::Tensor& chunk = owned[k++];
        // Elements past the bucket's end are padding: they must stay zero.
        const int64_t real = std::max<int64_t>(n, 0);
        double diff = 0;
        if (real > 0) diff = (chunk.narrow(0, 0, real) - flat.narrow(0, from, real)).abs().max().item<double>();
        if (chunk.numel() > real) diff = std::max(diff, chunk.narrow(0, real, chunk.numel() - real).abs().max().item<double>());
        auto slot = err[static_cast<int64_t>(chunk_slots + static_cast<std::size_t>(g.stage))];
        slot.fill_(std::max(slot.item<double>(), diff / scale));
      }
    }
  }
  if (o.optimizer_step) {
    reference_adamw_step(ref, o);
    for (const auto& [s, st] : exec.stages()) {
      std::map<std::string, torch::Tensor> ref_params;
      for (auto& item : ref.stages[static_cast<std::size_t>(s)].module->named_parameters())
        ref_params[item.key()] = item.value();
      for (auto& item : st.module->named_parameters())
        err[static_cast<int64_t>(param_index.at({s, item.key()}))] =
            relative_difference(item.value().detach(), ref_params.at(item.key()).detach());
    }
  }
  mesh.world->all_reduce(err, c10d::ReduceOp::MAX, "the verify comparison");
  VerifyResult res;
  res.loss_error = err[0].item<double>();
  if (o.optimizer_step) res.param_error = 0;
  for (std::size_t k = 1; k < labels.size(); ++k) {
    const double e = err[static_cast<int64_t>(k)].item<double>();
    const bool grad = k < grad_slots || k >= chunk_slots;
    if (k < grad_slots && reducer->sharded()) continue;  // compared by chunks instead
    res.per_param.emplace_back(labels[k], e);
    (grad ? res.grad_error : res.param_error) = std::max(grad ? res.grad_error : res.param_error, e);
  }
  return res;
}

}  // namespace dualpipe
