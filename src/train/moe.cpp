#include "dualpipe/train/moe.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <numeric>

#include "dualpipe/runtime/overlap.h"
#include "dualpipe/train/lean_ops.h"
#include "dualpipe/train/recompute.h"

namespace dualpipe {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

int64_t sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

// Where the token counts go: their own group, else the forward group (on the lane).
Comm& counts_comm(const ExpertGroup& g) { return g.counts ? *g.counts : *g.fwd; }

// One all-to-all, a hand-over point of the rank's overlap engine when it has one.
torch::Tensor all_to_all(const ExpertGroup& g, bool backward, const torch::Tensor& x, std::vector<int64_t> out_splits,
                         std::vector<int64_t> in_splits, CommPoint point, int layer) {
  Comm& comm = backward ? *g.bwd : *g.fwd;
  torch::Tensor in = x.contiguous();
  torch::Tensor out = torch::empty({sum(out_splits), x.size(1)}, x.options());
  auto what = [&] { return fmt::format("the MoE {} all-to-all of block {}", comm_point_name(point), layer); };
  if (!g.engine) {
    compat::WorkPtr work = comm.iall_to_all(out, in, out_splits, in_splits);
    comm.wait(work, -1, what);
    return out;
  }
  // Bytes over this rank's link (its own block stays here): what it sends
  // goes up, what it receives comes down, both at the link's rate, so the
  // exchange lasts as long as the larger.
  const auto me = static_cast<std::size_t>(comm.rank);
  const int64_t row = in.size(1) * static_cast<int64_t>(in.element_size());
  const int64_t bytes = std::max(in.size(0) - in_splits[me], out.size(0) - out_splits[me]) * row;
  Comm* c = &comm;
  g.engine->exchange(backward ? Half::Backward : forward_traffic_half(), point, comm, bytes, what(),
                     [c, out, in, out_splits, in_splits]() mutable { return c->iall_to_all(out, in, out_splits, in_splits); });
  return out;
}

// Rows of x to the expert ranks and back, differentiable: the backward is the
// reverse all-to-all of the gradient, on the group kept for backward traffic.
struct AllToAllFn : torch::autograd::Function<AllToAllFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group_addr,
                               std::vector<int64_t> out_splits, std::vector<int64_t> in_splits, int64_t what_layer) {
    auto* group = reinterpret_cast<ExpertGroup*>(group_addr);
    ctx->saved_data["group"] = group_addr;
    ctx->saved_data["out"] = out_splits;
    ctx->saved_data["in"] = in_splits;
    ctx->saved_data["what"] = what_layer;
    const bool combine = what_layer % 2 == 1;
    return all_to_all(*group, false, x, out_splits, in_splits, combine ? CommPoint::Combine : CommPoint::Dispatch,
                      static_cast<int>(what_layer / 2));
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto* group = reinterpret_cast<ExpertGroup*>(ctx->saved_data["group"].toInt());
    const int64_t what_layer = ctx->saved_data["what"].toInt();
    const bool combine = what_layer % 2 == 1;
    torch::Tensor g = all_to_all(*group, true, grads[0], ctx->saved_data["in"].toIntVector(),
                                 ctx->saved_data["out"].toIntVector(),
                                 combine ? CommPoint::CombineGrad : CommPoint::DispatchGrad, static_cast<int>(what_layer / 2));
    return {g, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// y unchanged forward; backward adds d(scale * aux) to the graph of aux, so
// the balance loss trains the router without travelling down the pipeline.
struct AuxInjectFn : torch::autograd::Function<AuxInjectFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& y, const torch::Tensor& aux, double scale) {
    ctx->saved_data["scale"] = scale;
    (void)aux;
    return y.clone();
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const double scale = ctx->saved_data["scale"].toDouble();
    return {grads[0], torch::full({}, scale, grads[0].options()), torch::Tensor()};
  }
};

// Sizes of the [E, L] count matrix as a vector of E row sums.
std::vector<int64_t> row_sums(const torch::Tensor& counts_el) {
  std::vector<int64_t> v;
  auto a = counts_el.accessor<int64_t, 2>();
  for (int64_t s = 0; s < counts_el.size(0); ++s) {
    int64_t t = 0;
    for (int64_t j = 0; j < counts_el.size(1); ++j) t += a[s][j];
    v.push_back(t);
  }
  return v;
}

}  // namespace

ExpertGroup expert_group(const Mesh& mesh, std::shared_ptr<OverlapEngine> engine) {
  return ExpertGroup{mesh.expert, mesh.expert_bwd, mesh.expert_counts, std::move(engine)};
}

void MoeStats::add(int layer, const torch::Tensor& counts, double aux, double cross_host_pairs) {
  std::lock_guard<std::mutex> lock(mu);
  if (tokens.size() != static_cast<std::size_t>(counts.numel())) tokens.assign(counts.numel(), 0.0);
  std::vector<double>& mine = layer_tokens[layer];
  if (mine.size() != tokens.size()) mine.assign(tokens.size(), 0.0);
  auto a = counts.accessor<int64_t, 1>();
  for (int64_t j = 0; j < counts.numel(); ++j) {
    tokens[j] += static_cast<double>(a[j]);
    mine[j] += static_cast<double>(a[j]);
    pairs += static_cast<double>(a[j]);
  }
  cross_host += cross_host_pairs;
  aux_sum += aux;
  ++aux_count;
}

void update_expert_biases(MoeStats& stats, const std::vector<double>& totals, int experts, double speed) {
  torch::NoGradGuard no_grad;
  std::lock_guard<std::mutex> lock(stats.mu);
  for (auto& [layer, bias] : stats.biases) {
    const std::size_t at = static_cast<std::size_t>(layer) * static_cast<std::size_t>(experts);
    if (at + static_cast<std::size_t>(experts) > totals.size()) continue;
    double sum = 0;
    for (int j = 0; j < experts; ++j) sum += totals[at + static_cast<std::size_t>(j)];
    if (sum <= 0) continue;
    const double mean = sum / experts;
    std::vector<double> step(static_cast<std::size_t>(experts));
    for (int j = 0; j < experts; ++j) {
      const double c = totals[at + static_cast<std::size_t>(j)];
      step[static_cast<std::size_t>(j)] = c < mean ? speed : c > mean ? -speed : 0.0;
    }
    bias.add_(torch::tensor(step, torch::kFloat64).to(bias.device(), bias.scalar_type()));
  }
}

bool is_routed_expert_param(const std::string& name) { return name.find("moe.expert") != std::string::npos; }

ExpertMlpImpl::ExpertMlpImpl(int64_t d, int64_t f, torch::Dtype dtype, bool swiglu_)
    : swiglu(swiglu_),
      fc(register_module("fc", SplitLinear(d, swiglu_ ? 2 * f : f, dtype))),
      proj(register_module("proj", SplitLinear(f, d, dtype))),
      act_body([this](const std::vector<torch::Tensor>& in) { return std::vector<torch::Tensor>{swiglu_proj(in[0])}; }) {}

torch::Tensor ExpertMlpImpl::swiglu_proj(const torch::Tensor& h) {
  std::vector<torch::Tensor> parts = h.chunk(2, -1);
  return proj(dualpipe::swiglu(parts[0], parts[1]));
}

torch::Tensor ExpertMlpImpl::activation_and_proj(const torch::Tensor& h) {
  if (!swiglu) return proj(torch::gelu(h));
  return recompute_activation ? recomputed(act_body, {h})[0] : swiglu_proj(h);
}

MoeLayerImpl::MoeLayerImpl(const MoeConfig& c, int layer_index, ExpertGroup g, std::shared_ptr<MoeStats> s)
    : cfg(c),
      layer(layer_index),
      first_local(c.ep_rank * (c.experts / c.ep)),
      local_count(c.experts / c.ep),
      router(register_module("router", SplitLinear(c.hidden, c.experts, c.dtype))),
      group(std::move(g)),
      stats(std::move(s)) {
  for (int j = first_local; j < first_local + local_count; ++j)
    experts.push_back(
        register_module(fmt::format("expert{}", j), ExpertMlp(c.hidden, c.expert_ffn, c.dtype, c.deepseek)));
  for (auto& e : experts) e->recompute_activation = c.recompute_activation;
  if (c.deepseek) {
    if (c.shared_experts > 0)
      shared = register_module("shared", ExpertMlp(c.hidden, c.expert_ffn * c.shared_experts, c.dtype, true));
    if (shared) shared->recompute_activation = c.recompute_activation;
    bias = register_buffer("bias", torch::zeros({c.experts}, torch::dtype(c.dtype)));
    if (stats) {
      std::lock_guard<std::mutex> lock(stats->mu);
      stats->biases[layer] = bias;
    }
  } else if (c.shared_expert) {
    shared = register_module("shared", ExpertMlp(c.hidden, c.expert_ffn, c.dtype));
  }
  if (!group.fwd && local_count != c.experts)
    throw Error(fmt::format("moe: block {} holds {} of {} experts but has no expert group to reach the others", layer,
                            local_count, c.experts));
}

std::vector<SplitLinear> MoeLayerImpl::split_linears() const {
  std::vector<SplitLinear> all{router};
  for (const auto& e : experts) {
    all.push_back(e->fc);
    all.push_back(e->proj);
  }
  if (shared) {
    all.push_back(shared->fc);
    all.push_back(shared->proj);
  }
  return all;
}

void MoeLayerImpl::init_experts(int layers) {
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * layers);
  for (int i = 0; i < local_count; ++i) {
    const int j = first_local + i;
    auto gen = at::detail::createCPUGenerator(cfg.seed * 104729 + static_cast<uint64_t>(layer) * 65536 +
                                              static_cast<uint64_t>(j) + 1);
    experts[i]->fc->weight.normal_(0.0, 0.02, gen);
    experts[i]->proj->weight.normal_(0.0, residual_std, gen);
  }
}

MoeLayerImpl::Routing MoeLayerImpl::route(const torch::Tensor& xs, int64_t sequences) {
  const int X = cfg.experts, K = cfg.top_k;
  const int64_t n = xs.size(0);
  Routing r;
  if (!cfg.deepseek) {
    torch::Tensor probs = torch::softmax(router(xs), -1);  // [n, X]
    std::tie(r.weights, r.idx) = probs.topk(K, -1);        // [n, K] each
    r.counts = torch::bincount(r.idx.reshape({-1}), {}, X);
    torch::Tensor f = r.counts.to(xs.scalar_type()) * (static_cast<double>(X) / (static_cast<double>(K) * static_cast<double>(n)));
    r.aux = cfg.aux_alpha * (f * probs.mean(0)).sum();
    return r;
  }
  torch::Tensor s = torch::sigmoid(router(xs));  // [n, X] affinities
  torch::Tensor choice = s.detach() + bias;       // selection only
  const int H = cfg.hosts, M = cfg.node_limit;
  if (M < H) {
    // Each host's score: the sum of its top max(1, K/M) choice values.
    const int per_host = X / H;
    const int64_t top = std::min<int64_t>(std::max(1, K / M), per_host);
    torch::Tensor host_score = std::get<0>(choice.reshape({n, H, per_host}).topk(top, -1)).sum(-1);  // [n, H]
    torch::Tensor hosts = std::get<1>(host_score.topk(M, -1));                                      // [n, M]
    torch::Tensor allowed = torch::zeros({n, H}, torch::dtype(torch::kBool).device(xs.device())).scatter_(1, hosts, true);
    allowed = allowed.unsqueeze(-1).expand({n, H, per_host}).reshape({n, X});
    choice = choice.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  }
  r.idx = std::get<1>(choice.topk(K, -1));
  torch::Tensor picked = s.gather(1, r.idx);
  r.weights = picked / picked.sum(-1, true);
  r.counts = torch::bincount(r.idx.reshape({-1}), {}, X);
  // The sequence-wise balance loss: per sequence of T tokens, then the mean.
  const int64_t T = n / sequences;
  torch::Tensor p = (s / s.sum(-1, true)).reshape({sequences, T, X}).mean(1);  // [B, X]
  torch::Tensor chosen = torch::zeros({n, X}, xs.options()).scatter_(1, r.idx, 1.0);
  torch::Tensor f = chosen.reshape({sequences, T, X}).sum(1) * (static_cast<double>(X) / (static_cast<double>(K) * static_cast<double>(T)));
  r.aux = cfg.aux_alpha * (f * p).sum(-1).mean();
  return r;
}

void MoeLayerImpl::record_stats(const torch::Tensor& flat, const Routing& routed) {
  // Pairs whose expert lives on another host than this rank's experts.
  const int per_host = cfg.experts / cfg.hosts;
  const int64_t own = first_local / per_host;
  const double cross = cfg.hosts > 1 ? torch::div(flat, per_host, "floor").ne(own).sum().item<double>() : 0.0;
  stats->add(layer, routed.counts.cpu(), routed.aux.item<double>(), cross);
}

// The token-count exchange goes out first, so that it is on the wire while
// this rank sorts its rows and runs the shared expert.
MoeLayerImpl::PendingCounts MoeLayerImpl::post_counts(const torch::Tensor& counts) {
  const int E = cfg.ep, L = local_count;
  PendingCounts pending;
  pending.received = torch::empty({E * L}, torch::kInt64);
  torch::Tensor send_counts = counts.contiguous();
  std::vector<int64_t> equal(E, L);
  Comm* c = &counts_comm(group);
  auto post = [c, recv = pending.received, send_counts, equal]() mutable {
    std::vector<int64_t> in = equal;
    return c->iall_to_all(recv, send_counts, equal, in);
  };
  std::string what = fmt::format("the MoE token-count exchange of block {}", layer);
  if (group.engine && group.counts)  // on its own group: beside the lane's bulk transfer, not behind it
    pending.ticket = group.engine->post_aside(forward_traffic_half(), CommPoint::Counts, *c, 0, std::move(what), post);
  else if (group.engine)
    pending.ticket = group.engine->post(forward_traffic_half(), CommPoint::Counts, *c, 0, std::move(what), post);
  else
    pending.work = post();
  return pending;
}

void MoeLayerImpl::wait_counts(PendingCounts& pending) {
  if (pending.ticket)
    group.engine->wait(forward_traffic_half(), pending.ticket);
  else
    counts_comm(group).wait(pending.work, -1, [&] {
      return fmt::format("the MoE token-count exchange of block {}", layer);
    });
}

// Every expert here: apply each to its block of rows.
torch::Tensor MoeLayerImpl::local_experts(const torch::Tensor& rows, const torch::Tensor& counts) {
  std::vector<torch::Tensor> outs;
  auto c = counts.accessor<int64_t, 1>();
  int64_t off = 0;
  for (int j = 0; j < cfg.experts; ++j) {
    outs.push_back(experts[j](rows.narrow(0, off, c[j])));
    off += c[j];
  }
  return torch::cat(outs);
}

torch::Tensor MoeLayerImpl::remote_experts(const torch::Tensor& rows, const torch::Tensor& counts,
                                           PendingCounts& pending) {
  const int E = cfg.ep, L = local_count;
  // How many rows go to each rank, and, per local expert, how many come from each.
  wait_counts(pending);
  torch::Tensor rc = pending.received.reshape({E, L});
  std::vector<int64_t> send_splits = row_sums(counts.reshape({E, L})), recv_splits = row_sums(rc);
  torch::Tensor recv = AllToAllFn::apply(rows, reinterpret_cast<int64_t>(&group), recv_splits, send_splits,
                                         int64_t{2} * layer);
  // Received rows come per source rank, each source's grouped by local
  // expert: regroup by expert, run the experts, and put the rows back.
  auto a = rc.accessor<int64_t, 2>();
  std::vector<int64_t> perm, block(L, 0);
  std::vector<int64_t> src_off(E, 0);
  for (int s = 1; s < E; ++s) src_off[s] = src_off[s - 1] + recv_splits[s - 1];
  for (int j = 0; j < L; ++j)
    for (int s = 0; s < E; ++s) {
      int64_t start = src_off[s];
      for (int jj = 0; jj < j; ++jj) start += a[s][jj];
      for (int64_t r = 0; r < a[s][j]; ++r) perm.push_back(start + r);
      block[j] += a[s][j];
    }
  torch::Tensor perm_t = torch::tensor(perm, torch::kInt64).to(recv.device());
  torch::Tensor inv = torch::empty_like(perm_t);
  inv.index_put_({perm_t}, torch::arange(static_cast<int64_t>(perm.size()), perm_t.options()));
  torch::Tensor h = recv.index_select(0, perm_t);
  std::vector<torch::Tensor> outs;
  int64_t off = 0;
  for (int j = 0; j < L; ++j) {
    outs.push_back(experts[j](h.narrow(0, off, block[j])));
    off += block[j];
  }
  torch::Tensor out_recv = torch::cat(outs).index_select(0, inv);
  return AllToAllFn::apply(out_recv, reinterpret_cast<int64_t>(&group), send_splits, recv_splits,
                           int64_t{2} * layer + 1);
}

torch::Tensor MoeLayerImpl::forward(const torch::Tensor& x) {
  const int64_t D = x.size(-1);
  const int K = cfg.top_k;
  torch::Tensor xs = x.reshape({-1, D});
  const int64_t n = xs.size(0);
  Routing routed = route(xs, x.size(0));
  torch::Tensor flat = routed.idx.reshape({-1});  // expert of each (token, k) pair
  if (stats) record_stats(flat, routed);
  PendingCounts pending;
  // Tokens per expert on the host (a device's routing counts them there):
  // the split sizes, and the count exchange, which goes through Gloo.
  const torch::Tensor counts = routed.counts.cpu();
  if (group.fwd) pending = post_counts(counts);
  // Dispatch: pairs sorted by expert (stable, so ties keep token order).
  torch::Tensor order = std::get<1>(torch::sort(flat, /*stable=*/true, 0, false));
  torch::Tensor token = torch::div(torch::arange(n * K, order.options()), K, "floor").index_select(0, order);
  torch::Tensor rows = xs.index_select(0, token);  // [n K, d], grouped by expert
  torch::Tensor shared_out = shared ? shared(xs) : torch::Tensor();
  torch::Tensor out_sorted =
      group.fwd ? remote_experts(rows, counts, pending) : local_experts(rows, counts);
  // Combine: back to (token, k) order, weighted sum over the K choices.
  torch::Tensor inv_order = torch::empty_like(order);
  inv_order.index_put_({order}, torch::arange(n * K, order.options()));
  torch::Tensor per_pair = out_sorted.index_select(0, inv_order).reshape({n, K, D});
  torch::Tensor y = (per_pair * routed.weights.unsqueeze(-1)).sum(1);
  if (shared) y = y + shared_out;
  y = AuxInjectFn::apply(y, routed.aux, cfg.aux_grad_scale);
  return y.reshape(x.sizes());
}

}  // namespace dualpipe
