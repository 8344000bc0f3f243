#include "train/verify.h"

#include <fmt/format.h>

#include <map>

#include "runtime/executor.h"
#include "train/trainer.h"

namespace dp {

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
  return ref;
}

VerifyResult verify_step(const Schedule& lowered, const ModelConfig& cfg, const std::shared_ptr<Comm>& comm) {
  return verify_step(lowered, cfg, pipeline_mesh(comm));
}

VerifyResult verify_step(const Schedule& lowered, const ModelConfig& cfg, const Mesh& mesh, bool fb_overlap) {
  const ModelConfig mine = rank_model_config(cfg, lowered, mesh);
  PipelineModel model = make_model(mine, ExpertGroup{mesh.expert, mesh.expert_bwd});
  RankExecutor exec(lowered, mesh.coord.pp, model, mesh.pipeline, rank_executor_options(mesh, fb_overlap));
  StepOutput out = exec.step();
  reduce_grads(exec, mesh);
  // The reference: every expert in one model, every pipeline's micro-batches.
  ModelConfig whole = mine;
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
  torch::Tensor err = torch::zeros({static_cast<int64_t>(labels.size())}, torch::kFloat64);
  for (const auto& [mb, loss] : out.losses) {
    double want = ref.losses[mb];
    double rel = std::abs(loss - want) / std::max(std::abs(want), 1e-300);
    err[0] = std::max(err[0].item<double>(), rel);
  }
  for (const auto& [s, st] : exec.stages()) {
    std::map<std::string, std::size_t> ref_pos;
    for (std::size_t i = 0; i < ref.names[s].size(); ++i) ref_pos[ref.names[s][i]] = i;
    for (auto& item : st.module->named_parameters()) {
      auto it = ref_pos.find(item.key());
      if (it == ref_pos.end())
        throw Error(fmt::format("verify: stage {} parameter {} has no counterpart in the unsharded model", s, item.key()));
      const torch::Tensor& p = item.value();
      torch::Tensor g = p.grad().defined() ? p.grad() : torch::zeros_like(p);
      err[static_cast<int64_t>(index.at({s, item.key()}))] = relative_difference(g, ref.grads[s][it->second]);
    }
  }
  mesh.world->all_reduce(err, c10d::ReduceOp::MAX, "the verify comparison");
  VerifyResult res;
  res.loss_error = err[0].item<double>();
  for (std::size_t k = 1; k < labels.size(); ++k) {
    double e = err[static_cast<int64_t>(k)].item<double>();
    res.per_param.emplace_back(labels[k], e);
    res.grad_error = std::max(res.grad_error, e);
  }
  return res;
}

}  // namespace dp
