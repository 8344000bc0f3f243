// dualpipe profile: per-layer costs of a shipped model measured on this
// machine with LibTorch (forward, input-gradient and weight-gradient time,
// activation bytes), written as JSON that `dualpipe plan --profile` reads in
// place of its formulas, so a plan can be checked against a real run.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <vector>

#include "runtime/stats.h"
#include "cli/common.h"
#include "cli/json_output.h"
#include "cli/output_paths.h"
#include "cli/torch_common.h"
#include "cli/torch_commands.h"
#include "cli/words.h"
#include "dualpipe/runtime/malloc_tuning.h"
#include "dualpipe/runtime/split_linear.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/train/gpt.h"

namespace dualpipe::cli {
namespace {

struct Measured {
  double f = 0, i = 0, w = 0, act_bytes = 0;
};

// One stage on micro-batch 0, `reps` times after one warm-up: the forward,
// the backward with weight gradients deferred (I), then the deferred work
// (W); the heap that the forward leaves alive is its activation.
Measured measure_stage(const PipelineModel& m, int s, int reps) {
  Stage st = m.build(s);
  WeightGradStore store;
  if (st.attach_store) st.attach_store(&store);
  std::vector<double> f, i, w, act;
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  for (int rep = 0; rep <= reps; ++rep) {
    torch::Tensor x = s == 0 ? m.input(0)
                             : torch::randn(m.boundary_shape, torch::TensorOptions().dtype(m.boundary_dtype))
                                   .requires_grad_(true);
    const double heap0 = malloc_in_use_bytes();
    const auto t0 = clock::now();
    torch::Tensor out = st.forward(x);
    const auto t1 = clock::now();
    const double held = malloc_in_use_bytes() - heap0;
    const bool last = s == m.stages - 1;
    torch::Tensor target = last ? m.loss(out, 0) : out;
    torch::Tensor grad = last ? torch::ones_like(target) : torch::randn_like(out);
    store.begin(rep);
    const auto t2 = clock::now();
    torch::autograd::backward({target}, {grad});
    const auto t3 = clock::now();
    store.end();
    store.run(rep);
    const auto t4 = clock::now();
    if (rep == 0) continue;  // warm-up
    f.push_back(secs(t0, t1));
    i.push_back(secs(t2, t3));
    w.push_back(secs(t3, t4));
    act.push_back(held);
  }
  return {median(f), median(i), median(w), median(act)};
}

nlohmann::json part_json(const Measured& p) {
  return {{"f", p.f}, {"i", p.i}, {"w", p.w}, {"act_bytes", p.act_bytes}};
}

// --format text: the per-part costs as a table (the JSON has the same
// numbers, and is what plan --profile reads).
std::string profile_text(const nlohmann::json& j) {
  const nlohmann::json& m = j["model"];
  std::string t = fmt::format("profile {}: hidden {}, {}, micro-batch of {} x {} tokens, {}; median of {}\n",
                              m["name"].get<std::string>(), m["hidden"].get<int>(),
                              count_of(m["layers"].get<int>(), "layer"), j["micro_batch_size"].get<int>(),
                              m["seq_len"].get<int>(), m["dtype"].get<std::string>(),
                              count_of(j["reps"].get<int>(), "repetition"));
  t += fmt::format("{:<11} {:>13} {:>13} {:>13} {:>16}\n", "part", "forward s", "input-grad s", "weight-grad s",
                   "activation bytes");
  for (const char* part : {"layer", "dense_layer", "embedding", "head"}) {
    if (!j.contains(part)) continue;  // dense_layer: deepseek only
    const nlohmann::json& p = j.at(part);
    t += fmt::format("{:<11} {:>13.4g} {:>13.4g} {:>13.4g} {:>16.0f}\n", part, p["f"].get<double>(),
                     p["i"].get<double>(), p["w"].get<double>(), p["act_bytes"].get<double>());
  }
  return t;
}

struct Opts {
  ModelOptions model;
  int reps = 20;
  std::string format = "json";
  std::string output = "-";
};

// The kind of block each stage's one layer is: DeepSeek's first blocks are
// dense, the rest MoE; every other model has one kind.
enum class Block { Layer, Dense };

struct Layout {
  int layers = 4, dense = 0;
  bool ends = false;  // the first and last stages also hold the embedding and the head (not mlp)
  std::vector<Block> kind;  // [stage]
};

// One layer per stage, and every kind of block that a first or last stage
// holds also alone in a middle stage, so that what those stages take beyond
// their block is the embedding and the head. Throws dualpipe::Error.
Layout profile_layout(const Opts& o) {
  const std::string& model = o.model.model;
  if (!o.model.stages.empty())
    throw Error("--stages: profile measures the layers of the shipped models (gpt, mlp, moe, deepseek); time your "
                "own stages with train or bench");
  if (model != "gpt" && model != "mlp" && model != "moe" && model != "deepseek")
    throw Error(fmt::format("--model must be gpt, mlp, moe or deepseek (got '{}')", model));
  Layout l;
  l.ends = model != "mlp";
  // DeepSeek: two dense blocks unless told, so that one is a middle stage.
  const int dense = model != "deepseek" ? 0 : o.model.given("--dense-layers") ? o.model.dense_layers : 2;
  l.dense = dense;
  l.layers = o.model.layers > 0 ? o.model.layers : dense > 0 ? dense + 3 : 4;
  if (l.ends && l.layers < 3)
    throw Error(fmt::format("--layers must be at least 3 to tell the embedding and the head from a block (got {})",
                            l.layers));
  for (int s = 0; s < l.layers; ++s) l.kind.push_back(s < dense ? Block::Dense : Block::Layer);
  if (!l.ends) return l;
  for (Block k : {l.kind.front(), l.kind.back()}) {
    bool alone = false;
    for (int s = 1; s + 1 < l.layers; ++s) alone = alone || l.kind[s] == k;
    if (!alone)
      throw Error(fmt::format("--layers {} with --dense-layers {}: profile needs a middle stage of each kind of block "
                              "the first and last stages hold (dense blocks 0 or at least 2, and at least 2 MoE "
                              "blocks)",
                              l.layers, dense));
  }
  return l;
}

Measured median_of(const std::vector<Measured>& stages, const Layout& l, Block kind) {
  std::vector<double> f, i, w, a;
  for (int s = l.ends ? 1 : 0; s < (l.ends ? l.layers - 1 : l.layers); ++s) {
    if (l.kind[s] != kind) continue;
    f.push_back(stages[s].f);
    i.push_back(stages[s].i);
    w.push_back(stages[s].w);
    a.push_back(stages[s].act_bytes);
  }
  if (f.empty()) return {};
  return {median(f), median(i), median(w), median(a)};
}

// The profile's JSON: the blocks, embedding and head, and the raw stages.
nlohmann::json profile_json(const Opts& o, const Layout& l, const std::vector<Measured>& stages) {
  const Measured block = median_of(stages, l, Block::Layer), dense = median_of(stages, l, Block::Dense);
  auto part = [&](Block k) { return k == Block::Dense ? dense : block; };
  auto beyond = [&](const Measured& st, const Measured& b) {
    return Measured{std::max(0.0, st.f - b.f), std::max(0.0, st.i - b.i), std::max(0.0, st.w - b.w),
                    std::max(0.0, st.act_bytes - b.act_bytes)};
  };
  const bool moe = o.model.model == "moe" || o.model.model == "deepseek";
  nlohmann::json j;
  j["source"] = "dualpipe profile";
  j["model"] = {{"name", o.model.model}, {"hidden", o.model.hidden}, {"layers", l.layers},
                {"heads", o.model.heads},  {"seq_len", o.model.seq_len}, {"dtype", o.model.dtype}};
  if (moe) j["model"]["experts"] = o.model.experts;
  j["micro_batch_size"] = o.model.micro_batch_size;
  j["reps"] = o.reps;
  j["layer"] = part_json(block);
  if (std::count(l.kind.begin(), l.kind.end(), Block::Dense) > 0) j["dense_layer"] = part_json(dense);
  j["embedding"] = part_json(l.ends ? beyond(stages.front(), part(l.kind.front())) : Measured{});
  j["head"] = part_json(l.ends ? beyond(stages.back(), part(l.kind.back())) : Measured{});
  if (moe) j["expert_parallel"] = 1;  // every expert ran here
  nlohmann::json raw = nlohmann::json::array();
  for (const Measured& st : stages) raw.push_back(part_json(st));
  j["stages"] = std::move(raw);
  return j;
}

// The command itself, once its options are parsed: returns the exit code.
int profile_command(Opts& o) {
  require_output_file("--output", o.output);
  if (o.reps < 1 || o.reps > 10000) throw Error(fmt::format("--reps must be in [1, 10000] (got {})", o.reps));
  const Layout l = profile_layout(o);
  Schedule shape;
  shape.ranks = 1;
  shape.stages = l.layers;
  shape.micro_batches = 1;
  ModelOptions mo = o.model;
  mo.layers = o.model.model == "mlp" ? 0 : l.layers;
  if (o.model.model == "deepseek") mo.dense_layers = l.dense;
  const ModelConfig c = make_model_config(mo, shape);
  torch::set_num_threads(1);  // as a rank runs: one intra-op thread
  const PipelineModel m = make_model(c);
  std::vector<Measured> stages;
  for (int s = 0; s < l.layers; ++s) stages.push_back(measure_stage(m, s, o.reps));
  const nlohmann::json j = profile_json(o, l, stages);
  write_output(o.output, o.format == "json" ? command_json("profile", j) : profile_text(j));
  return 0;
}

}  // namespace

void add_profile_command(CLI::App* app, CommandRun& run) {
  auto o = std::make_shared<Opts>();
  o->model.model = "gpt";
  o->model.seq_len = 32;
  o->model.micro_batch_size = 4;
  auto* cmd = app->add_subcommand("profile", std::string(torch_command_summary("profile")));
  add_model_options(cmd, o->model);
  cmd->add_option("--reps", o->reps, "timed repetitions per stage (the median is kept)")->capture_default_str();
  // json by default: the file plan --profile reads.
  cmd->add_option("-f,--format", o->format, "json (what plan --profile reads) or text (a table of the same costs)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  add_output_option(cmd, o->output);
  cmd->callback([o, &run] { run = [o] { return profile_command(*o); }; });
}

}  // namespace dualpipe::cli
