#include "train/verify.h"

#include <fmt/format.h>

#include <map>

#include "runtime/executor.h"

namespace dp {

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  double scale = b.abs().max().item<double>();
  double diff = (a - b).abs().max().item<double>();
  if (scale == 0) return diff == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return diff / scale;
}

Reference unpipelined_step(const PipelineModel& m, int N, int64_t mbs) {
  std::vector<Stage> stages;
  for (int s = 0; s < m.stages; ++s) stages.push_back(m.build(s));
  std::vector<torch::Tensor> inputs;
  for (int mb = 0; mb < N; ++mb) inputs.push_back(m.input(mb));
  torch::Tensor x = torch::cat(inputs, 0);
  for (auto& st : stages) x = st.forward(x);
  Reference ref;
  torch::Tensor total = torch::zeros({}, x.options());
  for (int mb = 0; mb < N; ++mb) {
    torch::Tensor l = m.loss(x.narrow(0, mb * mbs, mbs), mb);
    ref.losses.push_back(l.item<double>());
    total = total + l;
  }
  (total / static_cast<double>(N)).backward();
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
  PipelineModel model = make_model(cfg);
  RankExecutor exec(lowered, comm->rank, model, comm);
  StepOutput out = exec.step();
  exec.sum_replica_grads();
  Reference ref = unpipelined_step(model, lowered.micro_batches, cfg.micro_batch_size);

  // One slot per quantity compared; each rank fills what it holds and the
  // all-reduce takes the maximum, so every rank ends with the global figures.
  std::vector<std::string> labels{"losses"};
  std::map<std::pair<int, int>, std::size_t> index;
  for (int s = 0; s < lowered.stages; ++s)
    for (std::size_t i = 0; i < ref.names[s].size(); ++i) {
      index[{s, static_cast<int>(i)}] = labels.size();
      labels.push_back(fmt::format("stage {} {}", s, ref.names[s][i]));
    }
  torch::Tensor err = torch::zeros({static_cast<int64_t>(labels.size())}, torch::kFloat64);
  for (const auto& [mb, loss] : out.losses) {
    double want = ref.losses[mb];
    double rel = std::abs(loss - want) / std::max(std::abs(want), 1e-300);
    err[0] = std::max(err[0].item<double>(), rel);
  }
  for (const auto& [s, st] : exec.stages()) {
    auto params = st.module->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      torch::Tensor g = params[i].grad().defined() ? params[i].grad() : torch::zeros_like(params[i]);
      err[static_cast<int64_t>(index.at({s, static_cast<int>(i)}))] = relative_difference(g, ref.grads[s][i]);
    }
  }
  comm->all_reduce(err, c10d::ReduceOp::MAX);
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
