#include "dualpipe/runtime/grad_reduce.h"

#include <fmt/format.h>

#include <torch/csrc/autograd/utils/lambda_post_hook.h>

#include <algorithm>
#include <set>
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

std::string gather_what(const HolderGroup& g, std::size_t bucket) {
  return fmt::format("the parameter all-gather of stage {}, bucket {} of {}", g.stage, bucket + 1, g.buckets.size());
}

torch::Tensor owned_chunk(const GradBucket& b, const HolderGroup& g) {
  return b.flat.narrow(0, g.index * b.chunk, b.chunk);
}

}  // namespace

GradReducer::GradReducer(const Mesh& mesh, const std::map<int, Stage>& stages,
                         const std::vector<std::vector<int>>& replicas, const std::vector<TiedParameter>& tied,
                         GradReduceOptions options, std::function<void()> replica_sum)
    : opt_(options), replica_sum_(std::move(replica_sum)) {
  if (opt_.bucket_bytes < 1) throw Error(fmt::format("the bucket size must be positive (got {} bytes)", opt_.bucket_bytes));
  if (!mesh.make_group && (mesh.shape.ep > 1 || mesh.shape.dp > 1 || opt_.shard || !tied.empty()))
    throw Error("expert or data parallelism, sharding and parameters shared between stages need a mesh that can "
                "make groups (connect_mesh)");
  std::set<std::pair<int, std::string>> shared;
  for (const TiedParameter& t : tied) shared.insert(t.at.begin(), t.at.end());
  // Every rank walks the same (stage, kind) order, then the tied
  // parameters', and makes the groups it is in, so no two ranks wait for
  // each other's groups in opposite orders.
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
        if (is_expert != expert || shared.count({s, item.key()})) continue;
        g.params.push_back(item.value());
        g.names.emplace_back(s, item.key());
      }
      if (g.params.empty()) continue;
      g.members = stage_holders(mesh, replicas[s], expert);
      add_group(mesh, std::move(g), fmt::format("s{}/{}", s, expert ? "expert" : "dense"));
    }
  }
  for (std::size_t t = 0; t < tied.size(); ++t) add_tied_group(mesh, stages, replicas, tied[t], static_cast<int>(t));
  for (const HolderGroup& g : groups_)
    for (const GradBucket& b : g.buckets)
      if (opt_.shard) owned_params_.push_back(b.values.narrow(0, g.index * b.chunk, b.chunk));
  if (!replica_sum_) add_hooks();
}

// Makes the group's communicator (named `key` and its first member on every
// member) and its buckets: whole parameters per bucket, in order, until the
// next would pass the size.
void GradReducer::add_group(const Mesh& mesh, HolderGroup g, const std::string& key) {
  g.index = static_cast<int>(std::find(g.members.begin(), g.members.end(), mesh.rank) - g.members.begin());
  if (g.holders() > 1 && mesh.make_group) g.comm = mesh.make_group(g.members, fmt::format("{}/{}", key, g.members.front()));
  const int64_t per_bucket = std::max<int64_t>(1, opt_.bucket_bytes / static_cast<int64_t>(g.params[0].element_size()));
  int64_t offset = 0;
  for (std::size_t i = 0; i < g.params.size(); ++i) {
    const int64_t n = g.params[i].numel();
    if (g.buckets.empty() ||
        (g.buckets.back().end > g.buckets.back().begin && g.buckets.back().end - g.buckets.back().begin + n > per_bucket)) {
      GradBucket bucket;
      bucket.first = i;
      bucket.begin = offset;
      bucket.end = offset;
      g.buckets.push_back(bucket);
    }
    g.buckets.back().last = i + 1;
    g.buckets.back().end = offset += n;
    g.bucket_of.push_back(g.buckets.size() - 1);
  }
  g.seen.assign(g.params.size(), 0);
  for (GradBucket& bucket : g.buckets) bucket.chunk = (bucket.end - bucket.begin + g.holders() - 1) / g.holders();
  if (opt_.shard) share_storage(g);
  if (!g.tied()) by_stage_[g.stage].push_back(groups_.size());
  groups_.push_back(std::move(g));
}

// The group of tied parameter `t`: every holder of any stage that has a
// copy; this rank's first copy is the group's parameter, the others its copies.
void GradReducer::add_tied_group(const Mesh& mesh, const std::map<int, Stage>& stages,
                                 const std::vector<std::vector<int>>& replicas, const TiedParameter& t, int index) {
  HolderGroup g;
  g.stage = t.at.empty() ? 0 : t.at.front().first;
  std::vector<torch::Tensor> held;
  for (const auto& [s, name] : t.at) {
    if (s < 0 || s >= static_cast<int>(replicas.size()))
      throw Error(fmt::format("{} is tied to stage {}, which is not among the schedule's {} stages", t.name, s,
                              replicas.size()));
    const std::vector<int> m = stage_holders(mesh, replicas[static_cast<std::size_t>(s)], false);
    g.members.insert(g.members.end(), m.begin(), m.end());
    auto it = stages.find(s);
    if (it == stages.end()) continue;
    const torch::Tensor* p = it->second.module->named_parameters().find(name);
    if (!p) throw Error(fmt::format("{}: stage {} has no parameter {}", t.name, s, name));
    if (!held.empty() && !p->sizes().equals(held.front().sizes()))
      throw Error(fmt::format("{}: stage {}'s {} is not the shape of the first copy", t.name, s, name));
    held.push_back(*p);
  }
  if (held.empty()) return;  // not a holder
  std::sort(g.members.begin(), g.members.end());
  g.members.erase(std::unique(g.members.begin(), g.members.end()), g.members.end());
  g.params = {held.front()};
  g.names = {t.at.front()};
  g.copies = {std::vector<torch::Tensor>(held.begin() + 1, held.end())};
  add_group(mesh, std::move(g), fmt::format("tied{}", index));
}

GradReducer::~GradReducer() { self_.reset(); }

// A hook on every parameter's gradient accumulator reports autograd's
// writes (SplitLinear writes its weights' gradients itself and reports
// through its store). Autograd runs the hook of a SplitLinear weight too,
// with no gradient coming in: that is no write (the weight's gradient may
// still be queued for a wait or a W), so it is not reported.
void GradReducer::add_hooks() {
  self_ = std::make_shared<GradReducer*>(this);
  for (std::size_t gi = 0; gi < groups_.size(); ++gi)
    for (std::size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const torch::Tensor& p = groups_[gi].params[i];
      param_at_[p.unsafeGetTensorImpl()] = {gi, i};
      if (!p.requires_grad()) continue;
      compat::NodePtr acc = torch::autograd::impl::grad_accumulator(p);
      if (!acc) continue;
      std::weak_ptr<GradReducer*> self = self_;
      acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [self, impl = p.unsafeGetTensorImpl()](const torch::autograd::variable_list& outputs,
                                                 const torch::autograd::variable_list& inputs) {
            const bool wrote = !inputs.empty() && inputs[0].defined();
            if (auto r = self.lock(); r && wrote) (*r)->written(impl);
            return outputs;
          }));
      accumulators_.push_back(std::move(acc));
    }
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
      if (i < g.copies.size())
        for (torch::Tensor& c : g.copies[i]) c.set_data(view);
      off += p.numel();
    }
  }
}

std::string GradReducer::what(const HolderGroup& g, std::size_t bucket) const {
  return fmt::format("the gradient reduction of stage {} ({} parameters, bucket {} of {})", g.stage,
                     g.expert ? "expert" : "dense", bucket + 1, g.buckets.size());
}

void GradReducer::post_bucket(HolderGroup& g, std::size_t i) {
  GradBucket& b = g.buckets[i];
  torch::NoGradGuard no_grad;
  b.flat = torch::zeros({b.chunk * g.holders()}, g.params[b.first].options().requires_grad(false));
  int64_t off = 0;
  for (std::size_t k = b.first; k < b.last; ++k) {
    const torch::Tensor& p = g.params[k];
    if (p.grad().defined()) b.flat.narrow(0, off, p.numel()).copy_(p.grad().reshape({-1}));
    if (k < g.copies.size())
      for (const torch::Tensor& c : g.copies[k])
        if (c.grad().defined()) b.flat.narrow(0, off, p.numel()).add_(c.grad().reshape({-1}));
    off += p.numel();
  }
  if (!g.comm) return;
  auto post = [comm = g.comm, flat = b.flat, shard = opt_.shard]() mutable {
    return shard ? comm->ireduce_scatter(flat) : comm->iall_reduce(flat, c10d::ReduceOp::SUM);
  };
  if (opt_.engine)
    b.ticket = opt_.engine->post_background(Half::Backward, CommPoint::GradReduce, *g.comm,
                                            b.flat.numel() * b.flat.element_size(), what(g, i), post);
  else
    b.work = post();
}

// Posts the buckets that are final, from the last one down, stopping at the
// first that is not.
void GradReducer::post_ready(HolderGroup& g) {
  const std::size_t n = g.buckets.size();
  while (g.posted < n) {
    const std::size_t i = n - 1 - g.posted;
    const GradBucket& b = g.buckets[i];
    if (b.written < static_cast<int>(b.last - b.first)) return;
    post_bucket(g, i);
    ++g.posted;
  }
}

void GradReducer::launch(HolderGroup& g) {
  for (GradBucket& b : g.buckets) b.written = static_cast<int>(b.last - b.first);
  post_ready(g);
}

void GradReducer::arm(int stage) {
  if (replica_sum_) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_stage_.find(stage);
  if (it == by_stage_.end()) return;
  for (std::size_t i : it->second) groups_[i].armed = true;
}

void GradReducer::grad_written(const torch::Tensor& param) { written(param.unsafeGetTensorImpl()); }

void GradReducer::written(const c10::TensorImpl* impl) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = param_at_.find(impl);
  if (it == param_at_.end()) return;
  HolderGroup& g = groups_[it->second.first];
  const std::size_t i = it->second.second;
  if (!g.armed || g.seen[i]) return;
  g.seen[i] = 1;
  ++g.buckets[g.bucket_of[i]].written;
  post_ready(g);
}

void GradReducer::start(int stage) {
  if (replica_sum_) return;  // the point-to-point sum runs once, in finish()
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_stage_.find(stage);
  if (it == by_stage_.end()) return;
  for (std::size_t i : it->second) launch(groups_[i]);
}

int GradReducer::buckets_started(int stage) {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  auto it = by_stage_.find(stage);
  if (it != by_stage_.end())
    for (std::size_t i : it->second) n += static_cast<int>(groups_[i].posted);
  return n;
}

void GradReducer::finish() {
  if (replica_sum_) replica_sum_();
  std::lock_guard<std::mutex> lock(mu_);
  for (HolderGroup& g : groups_) launch(g);
  torch::NoGradGuard no_grad;
  for (HolderGroup& g : groups_) {
    for (std::size_t k = g.buckets.size(); k-- > 0;) {  // in posting order
      GradBucket& b = g.buckets[k];
      if (b.ticket)
        opt_.engine->wait(Half::Backward, b.ticket);
      else if (b.work)
        g.comm->wait(b.work, -1, [&] { return what(g, k); });
    }
    // A stage's own group of one already holds the sums; a tied one gathers its copies.
    if (!opt_.shard && (g.comm || g.tied())) write_sums(g);
    for (GradBucket& b : g.buckets) {
      b.work = compat::WorkPtr();
      b.ticket = nullptr;
      b.written = 0;
    }
    std::fill(g.seen.begin(), g.seen.end(), 0);
    g.armed = false;
    g.posted = 0;
  }
}

// Unsharded: the reduced buckets into the parameters' gradients; a tied
// group's copies on this rank receive the same sum.
void GradReducer::write_sums(HolderGroup& g) {
  auto defined = [](torch::Tensor& p) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
  };
  for (const GradBucket& b : g.buckets) {
    std::vector<torch::Tensor> params(g.params.begin() + static_cast<std::ptrdiff_t>(b.first),
                                      g.params.begin() + static_cast<std::ptrdiff_t>(b.last));
    for (torch::Tensor& p : params) defined(p);
    set_flat_grads(params, b.flat.narrow(0, 0, b.end - b.begin));
  }
  for (std::size_t k = 0; k < g.copies.size(); ++k)
    for (torch::Tensor& c : g.copies[k]) {
      defined(c);
      c.mutable_grad().copy_(g.params[k].grad());
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
      for (auto& copies : g.copies)
        for (auto& c : copies)
          if (c.grad().defined()) c.mutable_grad().mul_(factor);
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (HolderGroup& g : groups_)
      if (g.comm)
        for (std::size_t i = 0; i < g.buckets.size(); ++i) {
          GradBucket& b = g.buckets[i];
          auto post = [comm = g.comm, values = b.values]() mutable { return comm->iall_gather(values); };
          if (opt_.engine)
            b.gather = opt_.engine->post_background(
                Half::Forward, CommPoint::GradReduce, *g.comm, b.chunk * b.values.element_size(),
                gather_what(g, i), post);
          else
            b.gather_work = post();
        }
  }
  if (!opt_.defer_gather) wait_params();
}

void GradReducer::wait_gathers(HolderGroup& g) {
  for (std::size_t i = 0; i < g.buckets.size(); ++i) {
    GradBucket& b = g.buckets[i];
    if (b.gather) opt_.engine->wait(Half::Forward, b.gather);
    if (b.gather_work)
      g.comm->wait(b.gather_work, -1, [&] { return gather_what(g, i); });
    b.gather = nullptr;
    b.gather_work = compat::WorkPtr();
  }
}

void GradReducer::wait_params(int stage) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_stage_.find(stage);
  if (it == by_stage_.end()) return;
  for (std::size_t i : it->second) wait_gathers(groups_[i]);
}

void GradReducer::wait_params() {
  std::lock_guard<std::mutex> lock(mu_);
  for (HolderGroup& g : groups_) wait_gathers(g);
}

}  // namespace dualpipe
