#include "dualpipe/train/trainer.h"

#include <fmt/format.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <numeric>

#include "dualpipe/train/diverged.h"
#include "dualpipe/train/gpt.h"
#include "dualpipe/train/lr_warmup.h"

#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kGatherTag = 1 << 30;  // above every pipeline and replica tag

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

ModelConfig rank_model_config(const ModelConfig& base, const Schedule& lowered, const Mesh& mesh) {
  ModelConfig c = base;
  c.micro_batches = lowered.micro_batches;
  c.ep = mesh.shape.ep;
  c.ep_rank = mesh.coord.ep;
  c.data_shards = mesh.shape.data_shards();
  c.device = mesh.device;
  return c;
}

ExecutorOptions rank_executor_options(const Mesh& mesh, bool fb_overlap, std::shared_ptr<OverlapEngine> engine) {
  ExecutorOptions o;
  o.data_shard = mesh.data_shard();
  o.data_shards = mesh.shape.data_shards();
  o.fb_overlap = fb_overlap;
  o.device = mesh.device;
  o.engine = std::move(engine);
  return o;
}

namespace {

// The engine's calibration averaged over `group` (members hold the same
// pieces: expert peers, data replicas), so that peers emulate alike.
std::map<PieceKey, double> average_over(std::map<PieceKey, double> cal, Comm* group, const char* what) {
  if (!group || group->world < 2 || cal.empty()) return cal;
  torch::Tensor v = torch::empty({static_cast<int64_t>(cal.size())}, torch::kFloat64);
  int64_t i = 0;
  for (const auto& kv : cal) v[i++] = kv.second;
  group->all_reduce(v, c10d::ReduceOp::SUM, fmt::format("the device calibration's average over the {} group", what));
  i = 0;
  for (auto& kv : cal) kv.second = v[i++].item<double>() / group->world;
  return cal;
}

}  // namespace

std::unique_ptr<GradReducer> make_reducer(RankExecutor& exec, const Mesh& mesh, const ReduceOptions& o) {
  GradReduceOptions g;
  g.bucket_bytes = o.bucket_bytes;
  g.shard = o.zero;
  g.engine = exec.options().engine;
  // Sharded and overlapped: the parameters' all-gather after the update runs
  // on into the next step, waited where each stage is first used; a caller
  // that reads the parameters after adamw_step calls wait_params() first.
  g.defer_gather = o.overlap && o.zero && mesh.make_group;
  // A caller's single pipeline group cannot make holder groups: replicas are
  // then summed point to point by the executor.
  std::function<void()> p2p;
  if (!mesh.make_group) p2p = [&exec] { exec.sum_replica_grads(); };
  auto r = std::make_unique<GradReducer>(mesh, exec.stages(), exec.replicas(), exec.model().tied, g, p2p);
  if (o.overlap && mesh.make_group) {
    exec.set_on_grads_done([p = r.get()](int stage) { p->start(stage); });
    exec.set_grad_hooks([p = r.get()](int stage) { p->arm(stage); },
                        [p = r.get()](const torch::Tensor& param) { p->grad_written(param); });
    if (o.zero) exec.set_before_stage_use([p = r.get()](int stage) { p->wait_params(stage); });
  }
  return r;
}

std::unique_ptr<torch::optim::AdamW> make_adamw(GradReducer& reducer, const std::vector<torch::Tensor>& params,
                                               double lr, double weight_decay) {
  const auto options = torch::optim::AdamWOptions(lr).weight_decay(weight_decay);
  if (reducer.sharded()) return std::make_unique<torch::optim::AdamW>(reducer.owned_params(), options);
  return std::make_unique<torch::optim::AdamW>(params, options);
}

void adamw_step(GradReducer& reducer, torch::optim::AdamW& adam, double grad_norm, double clip, double lr) {
  if (clip > 0 && grad_norm > clip) reducer.scale(clip / (grad_norm + 1e-6));
  for (auto& g : adam.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  if (reducer.sharded()) {
    // The same AdamW arithmetic, element by element, on the owned chunks.
    std::vector<torch::Tensor> grads = reducer.owned_grads();
    for (std::size_t i = 0; i < grads.size(); ++i) reducer.owned_params()[i].mutable_grad() = grads[i];
  }
  adam.step();
  if (reducer.sharded()) reducer.write_back_params();
}

double optimizer_state_bytes(const torch::optim::AdamW& adam) {
  double bytes = 0;
  for (const auto& [key, state] : adam.state()) {
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*state);
    for (const torch::Tensor& t : {s.exp_avg(), s.exp_avg_sq(), s.max_exp_avg_sq()})
      if (t.defined()) bytes += static_cast<double>(t.numel() * t.element_size());
  }
  return bytes;
}

namespace {

// One step's MoE statistics of this rank, read and reset.
struct MoeStepCounts {
  std::vector<double> tokens;        // [X], all blocks
  std::vector<double> layer_tokens;  // [L * X], by block
  double aux_sum = 0, aux_count = 0, cross_host = 0, pairs = 0;
};

MoeStepCounts take_moe_counts(MoeStats& stats, const ModelConfig& c) {
  MoeStepCounts m;
  const int X = c.experts;
  m.layer_tokens.assign(static_cast<std::size_t>(gpt_layers(c)) * static_cast<std::size_t>(X), 0.0);
  std::lock_guard<std::mutex> lock(stats.mu);
  m.tokens = stats.tokens;
  for (const auto& [layer, t] : stats.layer_tokens)
    for (int j = 0; j < X && j < static_cast<int>(t.size()); ++j)
      m.layer_tokens[static_cast<std::size_t>(layer) * static_cast<std::size_t>(X) + static_cast<std::size_t>(j)] = t[static_cast<std::size_t>(j)];
  m.aux_sum = stats.aux_sum;
  m.aux_count = stats.aux_count;
  m.cross_host = stats.cross_host;
  m.pairs = stats.pairs;
  std::fill(stats.tokens.begin(), stats.tokens.end(), 0.0);
  stats.layer_tokens.clear();
  stats.aux_sum = stats.cross_host = stats.pairs = 0;
  stats.aux_count = 0;
  return m;
}

}  // namespace

double mean_layer_load(const std::vector<double>& layer_totals, int experts) {
  double sum_ratio = 0;
  int layers = 0;
  for (std::size_t at = 0; at + static_cast<std::size_t>(experts) <= layer_totals.size(); at += static_cast<std::size_t>(experts)) {
    const auto first = layer_totals.begin() + static_cast<std::ptrdiff_t>(at);
    const double total = std::accumulate(first, first + experts, 0.0);
    if (total <= 0) continue;
    sum_ratio += *std::max_element(first, first + experts) / (total / experts);
    ++layers;
  }
  return layers > 0 ? sum_ratio / layers : 0.0;
}

RankRun train_rank(const Schedule& lowered, const TrainOptions& opt, const std::shared_ptr<Comm>& comm,
                   const std::function<void(const StepStats&)>& progress) {
  return train_rank(lowered, opt, pipeline_mesh(comm), progress);
}

DivergedError::DivergedError(int step_, double loss, double grad_norm)
    : Error(fmt::format("the run diverged at step {}: loss {}, gradient norm {} (lower --lr, or clip with --clip); "
                        "stopped before its update, so no checkpoint holds it",
                        step_, loss, grad_norm)),
      step(step_) {}

namespace {

// The step's metrics, summed over every rank in one all-reduce (each
// collective costs a round of messages): named slots of one buffer. A rank
// adds what it owns; per-rank slots are filled by their rank alone.
struct MetricSlots {
  int64_t loss, sq_norm, aux_sum, aux_count, cross_host, pairs, stop;  // one each
  int64_t pipeline_s, reduce_s;  // [world]: each rank's pipeline time and reduction wait
  int64_t expert_tokens;         // [X]: tokens per expert, all blocks
  int64_t layer_tokens;          // [L * X]: tokens per (block, expert)
  int64_t size;
  MetricSlots(int world, int experts, int64_t layer_cells) {
    int64_t at = 0;
    auto take = [&at](int64_t n) {
      const int64_t first = at;
      at += n;
      return first;
    };
    loss = take(1), sq_norm = take(1), aux_sum = take(1), aux_count = take(1);
    cross_host = take(1), pairs = take(1), stop = take(1);
    pipeline_s = take(world), reduce_s = take(world);
    expert_tokens = take(experts), layer_tokens = take(layer_cells);
    size = at;
  }
};

// One rank's training: its model and executor, the gradient reduction over
// the holders of each parameter, and the optimizer. One thread.
class RankTraining {
 public:
  RankTraining(const Schedule& lowered, const TrainOptions& opt, const Mesh& mesh)
      : lowered_(lowered), opt_(opt), mesh_(mesh), comm_(*mesh.world), engine_(std::make_shared<OverlapEngine>(opt.engine)),
        ck_save_(opt.checkpoint) {
    model_ = make_model(rank_model_config(opt.model, lowered, mesh), expert_group(mesh, engine_));
    if (opt.instrument) opt.instrument(model_, ck_save_, lowered, mesh);
    exec_ = std::make_unique<RankExecutor>(lowered, mesh.coord.pp, model_, mesh.pipeline,
                                           rank_executor_options(mesh, opt.fb_overlap, engine_));
    reducer_ = make_reducer(*exec_, mesh, opt.reduce);
    // Sampling the heap after every action (mallinfo2 walks malloc's free
    // lists) costs up to hundreds of microseconds an action: the timed steps
    // run without it, and one extra pipeline step at the end measures memory.
    exec_->track_memory = false;
    for (const auto& [s, st] : exec_->stages())
      for (auto& p : st.module->parameters()) params_.push_back(p);
    if (opt.optimize && !params_.empty()) adam_ = make_adamw(*reducer_, params_, opt.lr, opt.weight_decay);
    // The default generator (dropout, anything that draws from it) starts from
    // the run's seed on every rank; a resume replaces it with the saved state.
    torch::manual_seed(opt.model.seed);
    if (opt.checkpoint.resume_step > 0) load_checkpoint(opt.checkpoint, exec_->stages(), adam_.get(), comm_.rank);
  }

  // Step k (warm-up steps first): the pipeline, the reductions it left, and
  // its metrics over every rank. `stop`: this rank asks to stop after it.
  StepStats step(int k, bool stop, StepOutput& out, double& reduce_s, std::vector<double>& layer_totals) {
    if (model_.begin_step) model_.begin_step(k);
    zero_grads();
    // All ranks start the step together: their clocks line up.
    comm_.barrier(fmt::format("the barrier before step {}", k + 1 - opt_.warmup_steps));
    const auto t0 = Clock::now();
    const bool calibrate = opt_.engine.device_factor > 0 && k == opt_.checkpoint.resume_step;
    if (calibrate) engine_->set_calibrating(true);
    out = exec_->step();
    const auto reduce_t0 = Clock::now();
    reducer_->finish();
    reduce_s = seconds_since(reduce_t0);
    if (calibrate) finish_calibration();
    StepStats st = metrics(k, out, reduce_s, stop, layer_totals);
    stop_agreed_ = stop;
    // A step that diverged is never applied, saved or reported.
    if (adam_ && (!std::isfinite(st.loss) || !std::isfinite(st.grad_norm)))
      throw DivergedError(st.step + 1, st.loss, st.grad_norm);
    // The warm-up's rate is a function of the step: a resumed run continues it.
    if (adam_)
      adamw_step(*reducer_, *adam_, st.grad_norm, opt_.clip, warmup_lr(opt_.lr, k - opt_.warmup_steps, opt_.lr_warmup_steps));
    // deepseek: every holder of a block moves its biases by the same totals.
    if (model_.moe_stats && opt_.model.bias_speed > 0)
      update_expert_biases(*model_.moe_stats, layer_totals, opt_.model.experts, opt_.model.bias_speed);
    st.seconds = seconds_since(t0);
    return st;
  }

  // The ranks agreed to stop after the last step (any of them asked).
  bool stop_agreed() const { return stop_agreed_; }

  // Writes the checkpoint of reported step `done`.
  void save(int done) {
    reducer_->wait_params();  // the file holds the updated parameters
    save_checkpoint(ck_save_, done, exec_->stages(), adam_.get(), comm_);
  }

  // Forward and backward of every micro-batch as in a training step, no
  // optimizer update (the parameters stay those of the last step), with the
  // heap sampled after every action.
  double memory_step(int k) {
    if (model_.begin_step) model_.begin_step(k);
    zero_grads();
    comm_.barrier("the barrier before the memory step");
    exec_->track_memory = true;
    const double peak = exec_->step().peak_heap_bytes;
    reducer_->finish();  // the reductions it started
    exec_->track_memory = false;
    return peak;
  }

  // What the run ends with besides its steps.
  void finish(RankRun& run) {
    reducer_->wait_params();
    if (adam_) run.optimizer_bytes = optimizer_state_bytes(*adam_);
    run.device_overruns = engine_->overruns();
    run.device_overslept_s = engine_->overslept();
    for (const auto& [s, st] : exec_->stages()) {
      std::vector<torch::Tensor> flat;
      for (auto& p : st.module->parameters()) flat.push_back(p.detach().reshape({-1}));
      for (auto& b : st.module->buffers()) flat.push_back(b.reshape({-1}));  // deepseek's selection biases
      if (!flat.empty()) run.final_params[s] = torch::cat(flat).cpu();
    }
  }

  const std::map<PieceKey, double>& calibration() const { return calibration_; }

 private:
  void zero_grads() {
    for (auto& p : params_)
      if (p.grad().defined()) p.mutable_grad().zero_();
  }

  // The first step measured every compute piece: averaged over the expert
  // and data-parallel peers, so that they emulate alike from now on.
  void finish_calibration() {
    engine_->set_calibrating(false);
    std::map<PieceKey, double> cal = average_over(engine_->calibration(), mesh_.expert.get(), "expert");
    calibration_ = average_over(std::move(cal), mesh_.data.get(), "data-parallel");
    for (auto& [key, cost] : calibration_) {
      const auto preset = opt_.preset_calibration.find(key);
      if (preset != opt_.preset_calibration.end()) cost = preset->second;
    }
    engine_->set_calibration(calibration_);
  }

  StepStats metrics(int k, const StepOutput& out, double reduce_s, bool& stop, std::vector<double>& layer_totals) {
    // moe: tokens per expert (per block too) and the balance loss ride along.
    const MoeStepCounts moe = model_.moe_stats ? take_moe_counts(*model_.moe_stats, opt_.model) : MoeStepCounts{};
    const int X = model_.moe_stats ? opt_.model.experts : 0;
    const MetricSlots at(comm_.world, X, static_cast<int64_t>(moe.layer_tokens.size()));
    torch::Tensor red = torch::zeros({at.size}, torch::kFloat64);
    double* v = red.data_ptr<double>();
    for (const auto& l : out.losses) v[at.loss] += l.second;
    v[at.sq_norm] = reducer_->owned_sq_norm();  // each reduced element counts once: every rank adds the chunks it owns
    v[at.pipeline_s + comm_.rank] = out.seconds;
    v[at.reduce_s + comm_.rank] = reduce_s;
    v[at.aux_sum] = moe.aux_sum;
    v[at.aux_count] = moe.aux_count;
    v[at.cross_host] = moe.cross_host;
    v[at.pairs] = moe.pairs;
    v[at.stop] = stop ? 1 : 0;
    for (std::size_t j = 0; j < moe.tokens.size() && static_cast<int>(j) < X; ++j) v[at.expert_tokens + j] = moe.tokens[j];
    std::copy(moe.layer_tokens.begin(), moe.layer_tokens.end(), v + at.layer_tokens);
    comm_.all_reduce(red, c10d::ReduceOp::SUM, fmt::format("the loss all-reduce of step {}", k + 1 - opt_.warmup_steps));
    v = red.data_ptr<double>();
    StepStats st;
    st.step = k - opt_.warmup_steps;
    st.loss = v[at.loss] / (static_cast<double>(lowered_.micro_batches) * mesh_.shape.data_shards());
    st.grad_norm = std::sqrt(v[at.sq_norm]);
    st.pipeline_seconds = *std::max_element(v + at.pipeline_s, v + at.pipeline_s + comm_.world);
    st.reduce_seconds = *std::max_element(v + at.reduce_s, v + at.reduce_s + comm_.world);
    stop = v[at.stop] > 0;
    layer_totals.assign(v + at.layer_tokens, v + at.size);
    if (X > 0) {
      st.aux_loss = v[at.aux_count] > 0 ? v[at.aux_sum] / v[at.aux_count] : 0.0;
      st.expert_tokens.assign(v + at.expert_tokens, v + at.expert_tokens + X);
      st.expert_load = mean_layer_load(layer_totals, X);
      st.cross_host_share = v[at.pairs] > 0 ? v[at.cross_host] / v[at.pairs] : 0.0;
    }
    return st;
  }

  const Schedule& lowered_;
  const TrainOptions& opt_;
  const Mesh& mesh_;
  Comm& comm_;
  std::shared_ptr<OverlapEngine> engine_;
  PipelineModel model_;
  CheckpointOptions ck_save_;  // opt.checkpoint, as the instrument left it
  std::unique_ptr<RankExecutor> exec_;
  std::unique_ptr<GradReducer> reducer_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<torch::optim::AdamW> adam_;
  std::map<PieceKey, double> calibration_;
  bool stop_agreed_ = false;
};

// A reported step's record on this rank.
void record(RankRun& run, const StepStats& st, const StepOutput& out, double reduce_s) {
  run.steps.push_back(st);
  run.last_times = out.times;
  ExposedComm exposed = out.exposed;
  exposed.grad_reduce += reduce_s;
  exposed.by_point[static_cast<int>(CommPoint::GradReduce)] += reduce_s;
  run.exposed.push_back(exposed);
  run.last_exposed = exposed;
  run.last_idle = out.idle;
  run.last_lane = out.lane;
  run.last_start = out.start;
}

}  // namespace

RankRun train_rank(const Schedule& lowered, const TrainOptions& opt, const Mesh& mesh,
                   const std::function<void(const StepStats&)>& progress) {
  // Steps and warm-up steps are counted together in an int.
  if (opt.steps < 0 || opt.warmup_steps < 0 || opt.steps > std::numeric_limits<int>::max() - opt.warmup_steps)
    throw Error(fmt::format("{} steps and {} warm-up steps are not a step count", opt.steps, opt.warmup_steps));
  RankTraining training(lowered, opt, mesh);
  const CheckpointOptions& ck = opt.checkpoint;
  RankRun run;
  const int total = opt.warmup_steps + opt.steps;
  // A resumed run continues with the step after its checkpoint: the data of
  // step k is a function of k, so it is the data the uninterrupted run saw.
  for (int k = ck.resume_step; k < total; ++k) {
    StepOutput out;
    double reduce_s = 0;
    std::vector<double> layer_totals;
    const bool asked = opt.stop_requested && opt.stop_requested();
    const StepStats st = training.step(k, asked, out, reduce_s, layer_totals);
    if (k == ck.resume_step) run.calibration = training.calibration();
    if (k < opt.warmup_steps) continue;
    const int done = k + 1 - opt.warmup_steps;
    const bool stop = training.stop_agreed() && done < opt.steps;
    run.checkpointed = !ck.dir.empty() && ((ck.every > 0 && done % ck.every == 0) || done == opt.steps || stop);
    if (run.checkpointed) training.save(done);
    record(run, st, out, reduce_s);
    if (mesh.world->rank == 0 && progress) progress(st);
    if (stop) {
      run.interrupted = true;
      break;
    }
  }
  if (opt.track_memory && total > ck.resume_step && !run.interrupted) run.peak_heap_bytes = training.memory_step(total - 1);
  training.finish(run);
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
    comm.wait(comm.isend(t, 0, kGatherTag), 0, [] { return std::string("the send of this rank's timings"); });
    return {};
  }
  std::vector<std::vector<ActionTime>> all(lowered.ranks);
  all[0] = mine;
  for (int r = 1; r < lowered.ranks; ++r) {
    torch::Tensor t = torch::empty({static_cast<int64_t>(lowered.actions[r].size()) * 3}, torch::kFloat64);
    comm.wait(comm.irecv(t, r, kGatherTag), r, [] { return std::string("the last step's timings"); });
    auto a = t.accessor<double, 1>();
    all[r].resize(lowered.actions[r].size());
    for (std::size_t i = 0; i < all[r].size(); ++i)
      all[r][i] = {a[static_cast<int64_t>(3 * i)], a[static_cast<int64_t>(3 * i + 1)], a[static_cast<int64_t>(3 * i + 2)]};
  }
  return all;
}

std::vector<std::vector<Span>> gather_a2a_waits(const std::vector<IdleSpan>& mine, Comm& comm) {
  std::vector<double> flat;
  for (const IdleSpan& sp : mine)
    if (is_all_to_all(sp.point)) {
      flat.push_back(sp.start);
      flat.push_back(sp.end);
    }
  // How many each rank has, then the spans themselves to rank 0.
  torch::Tensor counts = torch::zeros({comm.world}, torch::kFloat64);
  counts[comm.rank] = static_cast<double>(flat.size());
  comm.all_reduce(counts, c10d::ReduceOp::SUM, "the gather of all-to-all wait counts");
  if (comm.rank != 0) {
    if (!flat.empty()) {
      torch::Tensor t = torch::tensor(flat, torch::kFloat64);
      comm.wait(comm.isend(t, 0, kGatherTag + 1), 0, [] { return std::string("the send of all-to-all waits"); });
    }
    return {};
  }
  std::vector<std::vector<Span>> all(comm.world);
  for (int r = 0; r < comm.world; ++r) {
    const auto n = static_cast<int64_t>(counts[r].item<double>());
    torch::Tensor t = r == 0 ? torch::tensor(flat, torch::kFloat64) : torch::empty({n}, torch::kFloat64);
    if (r != 0 && n > 0) comm.wait(comm.irecv(t, r, kGatherTag + 1), r, [] { return std::string("all-to-all waits"); });
    for (int64_t i = 0; i + 1 < n; i += 2) all[r].push_back({t[i].item<double>(), t[i + 1].item<double>()});
  }
  return all;
}

std::vector<double> gather_value(double x, Comm& comm) {
  torch::Tensor t = torch::zeros({comm.world}, torch::kFloat64);
  t[comm.rank] = x;
  comm.all_reduce(t, c10d::ReduceOp::SUM, "the gather of per-rank values");
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
  const Op kinds[] = {Op::F, Op::B, Op::I, Op::W};
  // [kind][stage] sums and counts.
  std::vector<std::vector<double>> sum(4, std::vector<double>(lowered.stages, 0.0)), cnt = sum;
  double fb_sum = 0, fb_cnt = 0;
  for (int r = 0; r < lowered.ranks; ++r)
    for (std::size_t p = 0; p < lowered.actions[r].size(); ++p) {
      const Action& a = lowered.actions[r][p];
      const double d = times[r][p].end - times[r][p].start - times[r][p].wait;
      const auto kind = std::find(std::begin(kinds), std::end(kinds), a.op) - std::begin(kinds);
      if (kind < 4) {
        sum[kind][a.stage] += d;
        cnt[kind][a.stage] += 1;
      } else if (a.op == Op::FB) {
        fb_sum += d;
        fb_cnt += 1;
      } else if (a.op == Op::FF) {  // two forwards: half each
        for (const Action& h : halves(a)) {
          sum[0][h.stage] += d / 2;
          cnt[0][h.stage] += 1;
        }
      }
    }
  auto mean = [&](int kind, int s) { return cnt[kind][s] > 0 ? sum[kind][s] / cnt[kind][s] : -1.0; };
  std::vector<StageTimes> per_stage(lowered.stages);
  for (int s = 0; s < lowered.stages; ++s) per_stage[s] = {mean(0, s), mean(1, s), mean(2, s), mean(3, s)};
  Costs c = costs_from_stage_times(per_stage);
  if (fb_cnt > 0) c.FB = fb_sum / fb_cnt;
  return c;
}

}  // namespace dualpipe
