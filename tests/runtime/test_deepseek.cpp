// The small DeepSeek-V3 (`deepseek`): exact gradients against the unsharded,
// unpipelined model with node-limited routing active, the routing rules
// themselves, auxiliary-loss-free balancing in training, bit-identical
// resume with the biases, and its bad settings.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cli_run.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/plan/cost_model.h"
#include "dualpipe/runtime/malloc_tuning.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/deepseek.h"
#include "dualpipe/train/gpt.h"
#include "dualpipe/train/lean_ops.h"
#include "dualpipe/train/perf.h"
#include "dualpipe/train/trainer.h"
#include "dualpipe/train/verify.h"
#include "thread_ranks.h"

namespace dualpipe {
namespace {

// Two hosts (one per expert rank), each token's experts on one of them
// (M = 1 < H = 2), one dense block then MoE blocks, MTP on.
ModelConfig small_deepseek(const Schedule& s) {
  ModelConfig c;
  c.name = "deepseek";
  c.stages = s.stages;
  c.micro_batches = s.micro_batches;
  c.hidden = 16;
  c.heads = 2;
  c.seq_len = 6;
  c.micro_batch_size = 2;
  c.layers = std::max(2, s.stages);
  c.experts = 8;
  c.top_k = 3;
  c.node_limit = 1;
  c.dense_layers = 1;
  c.dtype = torch::kFloat64;
  return c;
}

struct MethodCase {
  std::string method;
  int ranks, micro_batches, dp;
};

class DeepSeekVerify : public ::testing::TestWithParam<MethodCase> {};

// Every gradient (MLA's projections, routed and shared experts, routers, the
// MTP module) equals the one-process model's on all micro-batches.
TEST_P(DeepSeekVerify, ExactAgainstUnshardedUnpipelined) {
  at::set_num_threads(1);
  const MethodCase& mc = GetParam();
  Schedule s = generate(mc.method, Shape{mc.ranks, mc.micro_batches, 2});
  ModelConfig c = small_deepseek(s);
  MeshShape shape;
  shape.ep = 2;
  shape.dp = mc.dp;
  VerifyOptions o;
  o.reduce.zero = mc.dp > 1;
  o.optimizer_step = mc.dp > 1;  // ZeRO-1's gradients are compared through the step
  VerifyResult r = test_support::verify_mesh(s, c, shape, o);
  std::cout << fmt::format("[ deepseek ] {} P={} E=2 D={}: loss error {:.3g}, gradient error {:.3g}{}\n", mc.method,
                           mc.ranks, mc.dp, r.loss_error, r.grad_error,
                           o.optimizer_step ? fmt::format(", parameter error {:.3g}", r.param_error) : "");
  EXPECT_LE(r.loss_error, 1e-12);
  EXPECT_LE(r.grad_error, 1e-12);
  if (o.optimizer_step) {
    EXPECT_LE(r.param_error, 1e-12);
  }
  if (mc.dp > 1) return;  // sharded: compared by chunks, not by name
  std::set<std::string> seen;
  for (const auto& [name, e] : r.per_param)
    for (const char* part : {"attn.wuk", "attn.wqr", "attn.wkr", "moe.expert7.fc", "moe.router", "moe.shared",
                             "block0.mlp", "mtp_block", "mtp_tok"})
      if (name.find(part) != std::string::npos) seen.insert(part);
  EXPECT_EQ(seen.size(), 9u) << "the comparison covers every part";
}

INSTANTIATE_TEST_SUITE_P(Methods, DeepSeekVerify,
                         ::testing::Values(MethodCase{"dualpipe", 2, 4, 1}, MethodCase{"dualpipev", 2, 4, 1},
                                           MethodCase{"1f1b", 2, 4, 1}, MethodCase{"gpipe", 2, 4, 1},
                                           MethodCase{"zb1p", 2, 4, 1}, MethodCase{"zbv", 2, 4, 1},
                                           MethodCase{"interleaved-1f1b", 2, 4, 1}, MethodCase{"chimera", 2, 4, 1},
                                           MethodCase{"combined-1f1b", 2, 8, 1}, MethodCase{"dualpipe", 2, 4, 2}),
                         [](const auto& param_info) {
                           const MethodCase& c = param_info.param;
                           return test_support::case_name(c.method, "D" + std::to_string(c.dp));
                         });

// Recomputation changes what is kept, not what is computed: the gradients
// of the one-process model equal those of the model that keeps everything,
// and the pipelined, expert-parallel step (split backward, F&B overlap)
// still verifies.
TEST(DeepSeekRecompute, GradientsEqualKeepingEverything) {
  at::set_num_threads(1);
  Schedule s = lower(one_f_one_b(Shape{2, 2}));
  ModelConfig c = small_deepseek(s);
  Reference kept = unpipelined_step(make_model(c), 2);
  for (const char* mode : {"selective", "full"}) {
    c.recompute = mode;
    Reference r = unpipelined_step(make_model(c), 2);
    EXPECT_EQ(r.losses, kept.losses) << mode;
    for (std::size_t st = 0; st < r.grads.size(); ++st)
      for (std::size_t i = 0; i < r.grads[st].size(); ++i)
        EXPECT_LE(relative_difference(r.grads[st][i], kept.grads[st][i]), 1e-12) << mode << " " << r.names[st][i];
  }
  for (const char* method : {"zb1p", "dualpipe"}) {
    Schedule p = generate(method, Shape{2, 4, 2});
    ModelConfig rc = small_deepseek(p);
    rc.recompute = "selective";
    MeshShape shape;
    shape.ep = 2;
    VerifyResult v = test_support::verify_mesh(p, rc, shape, VerifyOptions{});
    EXPECT_LE(v.grad_error, 1e-12) << method;
    EXPECT_LE(v.loss_error, 1e-12) << method;
  }
}

// The norm and the SwiGLU with backwards of their own give the gradients of
// autograd's composition of the same formulas, and keep less (only their
// inputs and one 1/rms per row) for the backward.
TEST(LeanOps, GradientsEqualTheCompositionAndKeepLess) {
  at::set_num_threads(1);
  torch::manual_seed(3);
  auto leaf = [](at::IntArrayRef shape) { return torch::randn(shape, torch::kFloat64).requires_grad_(true); };
  const torch::Tensor x = leaf({3, 5, 16}), w = leaf({16}), a = leaf({3, 5, 16}), b = leaf({3, 5, 16});
  const torch::Tensor g = torch::randn({3, 5, 16}, torch::kFloat64);
  auto grads = [&](const torch::Tensor& y, std::vector<torch::Tensor> of) {
    return torch::autograd::grad({y}, of, {g});
  };
  const auto lean_norm = grads(rms_norm(x, w), {x, w});
  const auto plain_norm = grads(x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * w, {x, w});
  const auto lean_glu = grads(swiglu(a, b), {a, b});
  const auto plain_glu = grads(torch::silu(a) * b, {a, b});
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_LE(relative_difference(lean_norm[i], plain_norm[i]), 1e-13) << "rms_norm input " << i;
    EXPECT_LE(relative_difference(lean_glu[i], plain_glu[i]), 1e-13) << "swiglu input " << i;
  }
  EXPECT_TRUE(torch::allclose(rms_norm(x, w), x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * w, 0, 0));
  // Held after the forward, beyond inputs and output: nothing of the
  // element-wise intermediates (autograd's composition keeps x * r, silu(a)).
  auto held = [](auto&& f) {
    f();  // the first call makes any one-time buffers
    const double before = malloc_in_use_bytes();
    torch::Tensor y = f();
    return malloc_in_use_bytes() - before - static_cast<double>(y.numel() * y.element_size());
  };
  const torch::Tensor big = leaf({64, 256}), big_w = leaf({256}), big_b = leaf({64, 256});
  const double row = 64 * 256 * 8;
  EXPECT_LT(held([&] { return rms_norm(big, big_w); }), 0.5 * row);
  EXPECT_GT(held([&] { return big * torch::rsqrt(big.pow(2).mean(-1, true) + 1e-6) * big_w; }), 0.9 * row);
  EXPECT_LT(held([&] { return swiglu(big, big_b); }), 0.5 * row);
  EXPECT_GT(held([&] { return torch::silu(big) * big_b; }), 0.9 * row);
}

// The planner's description of a runtime deepseek model: the same sizes,
// float64, and an attention that keeps its softmax (not fused).
plan::ModelSpec planner_spec(const ModelConfig& c) {
  plan::ModelSpec m;
  m.name = "deepseek";
  m.layers = gpt_layers(c);
  m.hidden = c.hidden;
  m.heads = m.kv_heads = c.heads;
  m.head_dim = c.hidden / c.heads;
  m.ffn = moe_expert_ffn(c) * (c.top_k + c.shared_experts);
  m.vocab = 64;
  m.seq_len = c.seq_len;
  m.dtype = "fp64";
  m.dtype_bytes = 8;
  m.flash_attention = false;
  m.mla = {q_latent(c), kv_latent(c), c.hidden / c.heads, c.rope_dim, c.hidden / c.heads};
  m.moe.experts = c.experts;
  m.moe.top_k = c.top_k;
  m.moe.shared_experts = c.shared_experts;
  m.moe.expert_ffn = moe_expert_ffn(c);
  for (int l = 0; l < m.layers; ++l) m.moe.is_moe.push_back(l >= c.dense_layers);
  return m;
}

// Bytes block 1 keeps for its backward under `recompute`: measured (the
// heap its forward leaves held) and as the planner predicts it.
std::pair<double, double> kept_bytes(ModelConfig c, const std::string& recompute) {
  c.recompute = recompute;
  plan::ClusterSpec one;
  one.devices = one.devices_per_node = 1;
  one.memory_gib = 80;
  one.matmul_tflops = 100;
  one.intra_node_gbps = one.inter_node_gbps = 10;
  plan::Parallel par;
  par.micro_batch_size = static_cast<int>(c.micro_batch_size);
  par.recompute = recompute == "none" ? plan::Recompute::None : plan::Recompute::Selective;
  double measured = 1e300;  // the least of three: the heap only grows by what is held
  for (int i = 0; i < 3; ++i) measured = std::min(measured, activation_unit_bytes(c));
  return {measured, plan::model_costs(planner_spec(c), one, par).layers[1].act_bytes};
}

// Selective recomputation saves what the planner predicts for it: the bytes
// a middle stage's one block keeps for its backward, with recompute none
// and selective, measured on the heap against plan::model_costs for the same
// block (a dense block and a MoE block, all experts local).
TEST(DeepSeekRecompute, MemorySavedIsWhatThePlannerPredicts) {
  at::set_num_threads(1);
  ModelConfig c;
  c.name = "deepseek";
  c.stages = 3;
  c.layers = 3;  // stage 1 holds block 1 alone
  c.micro_batches = 1;
  c.heads = 4;
  c.micro_batch_size = 2;
  c.experts = 8;
  c.top_k = 2;
  c.node_limit = 1;
  c.expert_hosts = 1;
  c.mtp_weight = 0;
  c.dtype = torch::kFloat64;
  // Attention-heavy (the s x s softmax is most of what selective drops) and
  // projection-heavy (wider: the projections' outputs are); a dense and a MoE
  // block each. 128 tokens a micro-batch: with fewer, autograd's own
  // bookkeeping (a few hundred bytes per saved tensor) is no longer small
  // beside the tensors.
  for (auto [hidden, seq, dense_layers] : std::vector<std::tuple<int64_t, int64_t, int>>{
           {64, 64, 2}, {64, 64, 1}, {128, 64, 2}, {128, 64, 1}}) {
    c.hidden = hidden;
    c.seq_len = seq;
    c.dense_layers = dense_layers;
    const auto none = kept_bytes(c, "none"), selective = kept_bytes(c, "selective");
    const double measured = none.first - selective.first, predicted = none.second - selective.second;
    std::cout << fmt::format("[ recompute ] {} block, hidden {} seq {}: kept {:.0f} -> {:.0f} KB measured, "
                             "{:.0f} -> {:.0f} KB predicted; saved {:.0f} KB measured, {:.0f} KB predicted "
                             "({:+.1f}%)\n",
                             dense_layers == 2 ? "dense" : "MoE", c.hidden, c.seq_len, none.first / 1e3,
                             selective.first / 1e3, none.second / 1e3, selective.second / 1e3, measured / 1e3,
                             predicted / 1e3, 100 * (measured / predicted - 1));
    EXPECT_NEAR(measured / predicted, 1.0, 0.15);
  }
}

MoeConfig routing_config(int node_limit) {
  MoeConfig m;
  m.hidden = 16;
  m.expert_ffn = 8;
  m.experts = 12;  // 3 on each of 4 hosts: K = 3 fits on one
  m.top_k = 3;
  m.deepseek = true;
  m.hosts = 4;
  m.node_limit = node_limit;
  return m;
}

// Node-limited routing: every token's K experts lie on at most M hosts, and
// without the limit some tokens would have used more (the test can fail).
TEST(DeepSeekRouting, EachTokenStaysWithinMHosts) {
  torch::manual_seed(7);
  torch::Tensor x = torch::randn({4, 16, 16}, torch::kFloat64);
  auto hosts_per_token = [&](int m) {
    MoeLayer layer(routing_config(m), 0, ExpertGroup{}, nullptr);
    torch::NoGradGuard no_grad;
    layer->router->weight.normal_(0.0, 1.0);
    MoeLayerImpl::Routing r = layer->route(x.reshape({-1, 16}), 4);
    torch::Tensor host = torch::div(r.idx, 3, "floor");
    int most = 0;
    for (int64_t t = 0; t < host.size(0); ++t) {
      std::set<int64_t> h;
      for (int64_t k = 0; k < host.size(1); ++k) h.insert(host[t][k].item<int64_t>());
      most = std::max(most, static_cast<int>(h.size()));
    }
    // Gates: the selected affinities, normalised.
    EXPECT_TRUE(torch::allclose(r.weights.sum(-1), torch::ones({r.weights.size(0)}, torch::kFloat64)));
    return most;
  };
  EXPECT_EQ(hosts_per_token(1), 1);
  EXPECT_LE(hosts_per_token(2), 2);
  EXPECT_EQ(hosts_per_token(4), 3);  // unconstrained, some token spreads over three hosts
}

// The bias steers selection only: a large bias on one expert makes every
// token pick it, and its gate still comes from the affinities alone.
TEST(DeepSeekRouting, BiasSelectsButDoesNotWeigh) {
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({2, 8, 16}, torch::kFloat64);
  MoeLayer layer(routing_config(4), 0, ExpertGroup{}, nullptr);
  torch::NoGradGuard no_grad;
  MoeLayerImpl::Routing before = layer->route(x.reshape({-1, 16}), 2);
  layer->bias[5] = 10.0;
  MoeLayerImpl::Routing after = layer->route(x.reshape({-1, 16}), 2);
  EXPECT_EQ(after.counts[5].item<int64_t>(), 16);
  torch::Tensor s = torch::sigmoid(layer->router(x.reshape({-1, 16})));
  torch::Tensor picked = s.gather(1, after.idx);
  EXPECT_TRUE(torch::allclose(after.weights, picked / picked.sum(-1, true)));
  EXPECT_FALSE(torch::equal(before.idx, after.idx));
}

TEST(DeepSeekBalance, BiasesMoveTowardBalance) {
  MoeStats stats;
  stats.biases[1] = torch::zeros({4}, torch::kFloat64);
  // Block 0 has no tokens (dense), block 1 is skewed toward expert 0.
  update_expert_biases(stats, {0, 0, 0, 0, 10, 2, 2, 2}, 4, 0.01);
  EXPECT_TRUE(torch::equal(stats.biases[1], torch::tensor({-0.01, 0.01, 0.01, 0.01}, torch::kFloat64)));
  EXPECT_DOUBLE_EQ(mean_layer_load({0, 0, 0, 0, 10, 2, 2, 2}, 4), 2.5);
}

TrainOptions deepseek_train(const Schedule& s, int steps) {
  TrainOptions t;
  t.model = small_deepseek(s);
  t.model.dtype = torch::kFloat32;
  t.model.hidden = 32;
  t.model.seq_len = 16;
  t.model.layers = 4;
  // The affinities of this small router lie close together (its weights are
  // drawn with standard deviation 0.02), so a larger step flips whole groups
  // of tokens between experts each step and the load oscillates above the
  // unbalanced run's (it did at 0.01 with this seed); at 0.003 it stays below.
  t.model.bias_speed = 0.003;
  t.steps = steps;
  t.lr = 1e-2;
  return t;
}

std::vector<RankRun> train_mesh(const Schedule& s, const TrainOptions& t, MeshShape shape) {
  shape.pp = s.ranks;
  std::vector<RankRun> runs(shape.size());
  run_mesh_threads(shape, [&](const Mesh& m) { runs[m.rank] = train_rank(s, t, m); });
  return runs;
}

// DualPipe over P=2 x E=2 thread ranks: the loss falls, tokens cross
// hosts, and the biases bring the expert load down: below the same run's
// without bias updates. Every holder of a block ends with the same biases.
TEST(DeepSeekTrain, DualPipeLossFallsAndBiasesBalanceTheExperts) {
  at::set_num_threads(1);
  Schedule s = lower(dualpipe(Shape{2, 4}));
  MeshShape shape;
  shape.ep = 2;
  TrainOptions t = deepseek_train(s, 40);
  std::vector<RankRun> runs = train_mesh(s, t, shape);
  TrainOptions fixed = t;
  fixed.model.bias_speed = 0;
  std::vector<RankRun> unbalanced = train_mesh(s, fixed, shape);
  const auto &st = runs[0].steps, &st0 = unbalanced[0].steps;
  ASSERT_EQ(st.size(), 40u);
  auto mean_of = [](const std::vector<StepStats>& v, std::size_t from, std::size_t to, auto get) {
    double sum = 0;
    for (std::size_t k = from; k < to; ++k) sum += get(v[k]);
    return sum / static_cast<double>(to - from);
  };
  auto loss = [](const StepStats& x) { return x.loss; };
  auto load = [](const StepStats& x) { return x.expert_load; };
  std::string curve, curve0;
  for (std::size_t k = 0; k < st.size(); ++k) {
    curve += fmt::format(" {:.2f}", st[k].expert_load);
    curve0 += fmt::format(" {:.2f}", st0[k].expert_load);
  }
  std::cout << "[ deepseek ] loss " << st.front().loss << " -> " << st.back().loss
            << "; expert load (max/mean) per step with bias updates:" << curve << "\n[ deepseek ] without:" << curve0
            << "\n[ deepseek ] (token, expert) pairs to another host in the last step: " << st.back().cross_host_share
            << fmt::format("\n[ deepseek ] mean expert load over steps 21-40: {:.3f} with bias updates, {:.3f} without\n",
                           mean_of(st, 20, 40, load), mean_of(st0, 20, 40, load));
  EXPECT_LT(mean_of(st, 35, 40, loss), mean_of(st, 0, 5, loss) - 0.3);
  EXPECT_LT(mean_of(st, 20, 40, load), mean_of(st0, 20, 40, load));
  EXPECT_GT(st.back().cross_host_share, 0.0);
  EXPECT_LT(st.back().cross_host_share, 1.0);
  // Biases are the last elements of a stage's flattened state; expert peers
  // (rank r and r + 2) hold the same ones, and they moved.
  for (const auto& [stage, flat] : runs[0].final_params) {
    const torch::Tensor& peer = runs[2].final_params.at(stage);
    EXPECT_TRUE(torch::equal(flat.narrow(0, flat.numel() - 8, 8), peer.narrow(0, peer.numel() - 8, 8)))
        << "stage " << stage;
    EXPECT_GT(flat.narrow(0, flat.numel() - 8, 8).abs().sum().item<double>(), 0.0) << "stage " << stage;
  }
}

// The MTP module embeds with stage 0's embedding: the last stage's copy
// starts equal, is declared tied, and stays equal through training, whether
// the two copies live on two ranks (1F1B) or one rank holds both (ZBV,
// DualPipe), and it moves (it gets the gradients of both uses).
TEST(DeepSeekMtp, TheMtpEmbeddingIsStageZerosAndStaysSo) {
  at::set_num_threads(1);
  for (const char* method : {"1f1b", "zbv", "dualpipe"}) {
    Schedule s = lower(generate(method, Shape{2, 4}));
    TrainOptions t = deepseek_train(s, 3);
    const int last = s.stages - 1;
    PipelineModel m = make_model(t.model);
    ASSERT_EQ(m.tied.size(), 1u) << method;
    EXPECT_EQ(m.tied[0].at, (std::vector<std::pair<int, std::string>>{{0, "tok.weight"}, {last, "mtp_tok.weight"}}));
    // Where a named parameter lies in a stage's flattened parameters.
    auto slice = [&](const torch::Tensor& flat, int stage, const std::string& name) {
      int64_t offset = 0;
      for (auto& item : m.build(stage).module->named_parameters()) {
        if (item.key() == name) return flat.narrow(0, offset, item.value().numel());
        offset += item.value().numel();
      }
      ADD_FAILURE() << "stage " << stage << " has no " << name;
      return torch::Tensor();
    };
    const torch::Tensor initial = m.build(0).module->named_parameters()["tok.weight"].detach().reshape({-1});
    EXPECT_TRUE(torch::equal(initial, m.build(last).module->named_parameters()["mtp_tok.weight"].detach().reshape({-1})));
    MeshShape shape;
    shape.ep = 1;
    std::vector<RankRun> runs = train_mesh(s, t, shape);
    std::vector<torch::Tensor> copies;
    for (const RankRun& r : runs)
      for (const auto& [stage, flat] : r.final_params) {
        if (stage == 0) copies.push_back(slice(flat, 0, "tok.weight"));
        if (stage == last) copies.push_back(slice(flat, last, "mtp_tok.weight"));
      }
    ASSERT_GE(copies.size(), 2u) << method;
    for (const torch::Tensor& c : copies) EXPECT_TRUE(torch::equal(c, copies[0])) << method;
    EXPECT_FALSE(torch::equal(copies[0], initial)) << method;
  }
}

// A resumed run equals the uninterrupted one bit for bit: the biases travel
// in the checkpoint (without them routing, and so the losses, would differ).
TEST(DeepSeekTrain, ResumeIsBitIdenticalWithBiases) {
  at::set_num_threads(1);
  Schedule s = lower(dualpipe(Shape{2, 4}));
  namespace fs = std::filesystem;
  const std::string dir = (fs::path(::testing::TempDir()) / fmt::format("dp_deepseek_{}", getpid())).string();
  fs::remove_all(dir);
  TrainOptions straight = deepseek_train(s, 6);
  straight.model.bias_speed = 0.05;
  MeshShape shape;
  shape.ep = 2;
  auto a = train_mesh(s, straight, shape);
  TrainOptions first = straight;
  first.steps = 3;
  first.checkpoint.dir = dir;
  first.checkpoint.identity = run_identity(s, first.model);
  train_mesh(s, first, shape);
  TrainOptions second = straight;
  second.checkpoint = first.checkpoint;
  second.checkpoint.resume_step = 3;
  auto b = train_mesh(s, second, shape);
  ASSERT_EQ(b[0].steps.size(), 3u);
  for (int k = 3; k < 6; ++k) EXPECT_EQ(a[0].steps[static_cast<std::size_t>(k)].loss, b[0].steps[static_cast<std::size_t>(k - 3)].loss);
  for (std::size_t r = 0; r < a.size(); ++r)
    for (const auto& [stage, flat] : a[r].final_params)
      EXPECT_TRUE(torch::equal(flat, b[r].final_params.at(stage))) << "rank " << r << " stage " << stage;
  fs::remove_all(dir);
}

TEST(DeepSeekCli, BadInputIsOneLineWithCode2) {
  const std::string base = "verify -m 1f1b -p 2 -n 4 --model deepseek --hidden 16 --heads 2 --seq-len 6 ";
  for (const auto& [args, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"--kv-latent 17", "--kv-latent (17) and --q-latent (0) must be in 0..16"},
           {"--q-latent 32", "must be in 0..16"},
           {"--ep 2 --node-limit 3", "--node-limit must be in 1..2 (the hosts; got 3)"},
           {"--ep 2 --node-limit 0", "--node-limit must be in 1..2"},
           {"--ep 2 --experts 4 --top-k 3", "--top-k 3 is more than the 2 experts on --node-limit 1 of 2 hosts"},
           {"--bias-speed -1", "--bias-speed must be a finite number >= 0 (got -1)"},
           {"--bias-speed nan", "--bias-speed: 'nan' is not a finite number"},
           {"--bias-speed inf", "--bias-speed: 'inf' is not a finite number"},
           {"--recompute some", "--recompute must be none, selective or full (got 'some')"},
           {"--dense-layers 5", "--dense-layers 5 is more than the model's 4 blocks (--layers)"},
       }) {
    test_support::CliRun r = test_support::run_cli(base + args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(fragment), std::string::npos) << args << "\n" << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << "\n" << r.out;
  }
}

TEST(DeepSeekCli, VerifyWithProcessRanksPasses) {
  test_support::CliRun r = test_support::run_cli(
      "verify -m dualpipe -p 2 -n 4 --model deepseek --ep 2 --hidden 16 --seq-len 6 --heads 2 --experts 8 --top-k 3");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
}

// --load-svg draws the expert load of every step; a model without experts
// has none to draw and is refused in one line.
TEST(DeepSeekCli, TrainDrawsTheExpertLoad) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / fmt::format("dp_load_{}", getpid());
  fs::create_directories(dir);
  const std::string svg = (dir / "load.svg").string(), files = " --loss-csv " + (dir / "l.csv").string() +
                                                            " --loss-svg " + (dir / "l.svg").string();
  test_support::CliRun r = test_support::run_cli(
      "train -m 1f1b -p 2 -n 4 --threads --model deepseek --hidden 16 --seq-len 6 --heads 2 --steps 3 --load-svg " +
      svg + files);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string picture = test_support::read_text(svg);
  EXPECT_NE(picture.find("<svg"), std::string::npos);
  EXPECT_NE(picture.find("expert load"), std::string::npos);
  EXPECT_NE(r.out.find(svg), std::string::npos) << "the summary names the file\n" << r.out;
  test_support::CliRun gpt = test_support::run_cli("train -m 1f1b -p 2 -n 4 --threads --model gpt --steps 1 --load-svg " +
                                                   svg + files);
  EXPECT_EQ(gpt.code, 2) << gpt.out;
  EXPECT_NE(gpt.out.find("--load-svg draws the expert load: it needs a model with experts (moe, deepseek; got gpt)"),
            std::string::npos)
      << gpt.out;
  fs::remove_all(dir);
}

// bench runs the model too: its yardsticks feed random boundaries to a
// stage, whose token channel (multi-token prediction) must still be valid.
TEST(DeepSeekCli, BenchRuns) {
  test_support::CliRun r = test_support::run_command(
      std::string("(timeout -k 5 300 ") + DUALPIPE_BINARY +
      " bench -m dualpipe -p 2 -n 4 --model deepseek --ep 2 --hidden 16 --seq-len 6 --heads 2 --layers 2 --steps 2 "
      "--threads --format json 2>/dev/null)");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);  // stdout is the JSON alone
  EXPECT_EQ(j["per_rank"].size(), 2u) << r.out;  // the first pipeline's ranks
}

}  // namespace
}  // namespace dualpipe
