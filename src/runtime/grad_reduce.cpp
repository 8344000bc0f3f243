#include "dualpipe/runtime/grad_reduce.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "dualpipe/runtime/flat_params.h"

namespace dualpipe {

std::vector<int> stage_holders(const Mesh& mesh, const std::vector<int>& replicas, bool expert) {
  std::vector<int> members;
  for (int d = 0; d < mesh.shape.dp; ++d)
    for (int e = 0; e < mesh.shape.ep; ++e) {
      if (expert && e != mesh.coord.ep) continue;
      for (int r : replicas) members.push_back(mesh_rank(mesh.shape, MeshCoord{r, e, d}));
    }
  std::sort(members.begin(), members.end());
  return members;
}

namespace {

torch::Tensor owned_chunk(const GradBucket& b, const HolderGroup& g) {
  return b.flat.narrow(0, g.index * b.chunk, b.chunk);
}

}  // namespace

GradReducer::GradReducer(const Mesh& mesh, const std::map<int, Stage>& stages,
                         const std::vector<std::vector<int>>& replicas, GradReduceOptions options,
                         std::function<void()> replica_sum)
    : opt_(options), replica_sum_(std::move(replica_sum)) {
  if (opt_.bucket_bytes < 1) throw Error(fmt::format("the bucket size must be positive (got {} bytes)", opt_.bucket_bytes));
  if (!mesh.make_group && (mesh.shape.ep > 1 || mesh.shape.dp > 1 || opt_.shard))
    throw Error("expert or data parallelism and sharding need a mesh that can make groups (connect_mesh)");
  // Every rank walks the same (stage, kind) order and makes the groups it is
  // in, so no two ranks wait for each other's groups in opposite orders.
  for (int s = 0; s < static_cast<int>(replicas.size()); ++s) {
    auto it = stages.find(s);
    if (it == stages.end()) continue;
    const Stage& st = it->second;
    for (bool expert : {false, true}) {
      HolderGroup g;
      g.stage = s;
      g.expert = expert;
      for (auto& item : st.module->named_parameters()) {
        const bool is_expert = st.is_expert_param && st.is_expert_param(item.key());
        if (is_expert == expert) g.params.push_back(item.value());
      }
      if (g.params.empty()) continue;
      g.members = stage_holders(mesh, replicas[s], expert);
      g.index = static_cast<int>(std::find(g.members.begin(), g.members.end(), mesh.rank) - g.members.begin());
      if (g.holders() > 1 && mesh.make_group)
        g.comm = mesh.make_group(g.members, fmt::format("s{}/{}/{}", s, expert ? "expert" : "dense", g.members.front()));
      // Whole parameters per bucket, in order, until the next would pass the size.
      const int64_t per_bucket = std::max<int64_t>(1, opt_.bucket_bytes / static_cast<int64_t>(g.params[0].element_size()));
      int64_t offset = 0;
      for (std::size_t i = 0; i < g.params.size(); ++i) {
        const int64_t n = g.params[i].numel();
        if (g.buckets.empty() || (g.buckets.back().end > g.buckets.back().begin &&
                                  g.buckets.back().end - g.buckets.back().begin + n > per_bucket)) {
          GradBucket bucket;
          bucket.first = i;
          bucket.begin = offset;
          bucket.end = offset;
          g.buckets.push_back(bucket);
        }
        g.buckets.back().last = i + 1;
        g.buckets.back().end = offset += n;
      }
      for (GradBucket& bucket : g.buckets) bucket.chunk = (bucket.end - bucket.begin + g.holders() - 1) / g.holders();
      if (opt_.shard) share_storage(g);
      by_stage_[s].push_back(groups_.size());
      groups_.push_back(std::move(g));
    }
  }
  for (const HolderGroup& g : groups_)
    for (const GradBucket& b : g.buckets)
      if (opt_.shard) owned_params_.push_back(b.values.narrow(0, g.index * b.chunk, b.chunk));
}

void GradReducer::share_storage(HolderGroup& g) {
  torch::NoGradGuard no_grad;
  for (GradBucket& b : g.buckets) {
    b.values = torch::zeros({b.chunk * g.holders()}, g.params[b.first].options().requires_grad(false));
    int64_t off = 0;
    for (std::size_t i = b.first; i < b.last; ++i) {
      torch::Tensor& p = g.params[i];
      torch::Tensor view = b.values.narrow(0, off, p.numel()).view_as(p);
      view.copy_(p.detach());
      p.set_data(view);
      off += p.numel();
    }
  }
}

std::string GradReducer::what(const HolderGroup& g, std::size_t bucket) const {
  return fmt::format("the gradient reduction of stage {} ({} parameters, bucket {} of {})", g.stage,
                     g.expert ? "expert" : "dense", bucket + 1, g.buckets.size());
}

void GradReducer::launch(HolderGroup& g) {
  if (g.started) return;
  g.started = true;
  torch::NoGradGuard no_grad;
  for (GradBucket& b : g.buckets) {
    b.flat = torch::zeros({b.chunk * g.holders()}, g.params[b.first].options().requires_grad(false));
    int64_t off = 0;
    for (std::size_t i = b.first; i < b.last; ++i) {
      const torch::Tensor& p = g.params[i];
      if (p.grad().defined()) b.flat.narrow(0, off, p.numel()).copy_(p.grad().reshape({-1}));
      off += p.numel();
    }
    if (g.comm) b.work = opt_.shard ? g.comm->ireduce_scatter(b.flat) : g.comm->iall_reduce(b.flat, c10d::ReduceOp::SUM);
  }
}

void GradReducer::start(int stage) {
  if (replica_sum_) return;  // the point-to-point sum runs once, in finish()
  auto it = by_stage_.find(stage);
  if (it == by_stage_.end()) return;
  for (std::size_t i : it->second) launch(groups_[i]);
}

void GradReducer::finish() {
  if (replica_sum_) replica_sum_();
  for (HolderGroup& g : groups_) launch(g);
  torch::NoGradGuard no_grad;
  for (HolderGroup& g : groups_) {
    for (std::size_t i = 0; i < g.buckets.size(); ++i)
      if (g.buckets[i].work) g.comm->wait(g.buckets[i].work, -1, [&] { return what(g, i); });
    if (!opt_.shard && g.comm)  // without a group the gradients are already the sums
      for (const GradBucket& b : g.buckets) {
        std::vector<torch::Tensor> params(g.params.begin() + static_cast<std::ptrdiff_t>(b.first),
                                          g.params.begin() + static_cast<std::ptrdiff_t>(b.last));
        set_flat_grads(params, b.flat.narrow(0, 0, b.end - b.begin));
      }
    for (GradBucket& b : g.buckets) b.work = compat::WorkPtr();
    g.started = false;
  }
}

double GradReducer::owned_sq_norm() const {
  double sq = 0;
  for (const HolderGroup& g : groups_)
    for (const GradBucket& b : g.buckets)
      if (b.flat.defined()) sq += owned_chunk(b, g).pow(2).sum().item<double>();
  return sq;
}

void GradReducer::scale(double factor) {
  torch::NoGradGuard no_grad;
  for (HolderGroup& g : groups_) {
    if (opt_.shard) {
      for (GradBucket& b : g.buckets) owned_chunk(b, g).mul_(factor);
    } else {
      for (auto& p : g.params)
        if (p.grad().defined()) p.mutable_grad().mul_(factor);
    }
  }
}

std::vector<torch::Tensor> GradReducer::owned_grads() const {
  std::vector<torch::Tensor> out;
  for (const HolderGroup& g : groups_)
    for (const GradBucket& b : g.buckets) out.push_back(owned_chunk(b, g));
  return out;
}

void GradReducer::write_back_params() {
  // The owned chunks are views of the storage: gather every holder's in place.
  std::vector<std::pair<HolderGroup*, std::size_t>> pending;
  for (HolderGroup& g : groups_)
    if (g.comm)
      for (std::size_t i = 0; i < g.buckets.size(); ++i) {
        g.buckets[i].work = g.comm->iall_gather(g.buckets[i].values);
        pending.emplace_back(&g, i);
      }
  for (auto& [g, i] : pending) {
    g->comm->wait(g->buckets[i].work, -1, [&, g_ = g, i_ = i] {
      return fmt::format("the parameter all-gather of stage {}, bucket {} of {}", g_->stage, i_ + 1, g_->buckets.size());
    });
    g->buckets[i].work = compat::WorkPtr();
  }
}

}  // namespace dualpipe
