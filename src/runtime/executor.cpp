#include "dualpipe/runtime/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include <chrono>

#include "dualpipe/runtime/flat_params.h"
#include "dualpipe/runtime/malloc_tuning.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/placement.h"

namespace dualpipe {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Identifies one transfer: which stage produced it, for which micro-batch,
// and whether it is an activation or a gradient. Both ends compute the same.
int transfer_tag(bool grad, int producer_stage, int mb, int N) {
  return static_cast<int>((static_cast<long>(producer_stage) * N + mb) * 2 + (grad ? 1 : 0));
}

long recv_key(Op op, int stage, int mb, int N) {
  return (static_cast<long>(stage) * N + mb) * 2 + (op == Op::RECV_B ? 1 : 0);
}

}  // namespace

RankExecutor::RankExecutor(const Schedule& lowered, int rank, PipelineModel model, std::shared_ptr<Comm> comm,
                           ExecutorOptions options)
    : RankExecutor(std::make_shared<const Schedule>(lowered), std::move(model),
                   comm ? std::move(comm) : throw SetupError(SetupError::GroupSize, "the executor needs a process group (got none)"),
                   options) {
  if (rank != rank_)
    throw SetupError(SetupError::GroupSize,
                     fmt::format("rank {} was asked for, but the process group's rank is {}", rank, rank_));
}

RankExecutor::RankExecutor(std::shared_ptr<const Schedule> lowered, PipelineModel model, std::shared_ptr<Comm> comm,
                           ExecutorOptions options)
    : sched_(std::move(lowered)), rank_(comm ? comm->rank : -1), model_(std::move(model)), comm_(std::move(comm)),
      opt_(options) {
  check_setup();
  if (!opt_.engine) opt_.engine = std::make_shared<OverlapEngine>();
  {
    Placement placement = placement_of(*sched_);  // the one definition of where each cell runs
    where_ = std::move(placement.rank_of_cell);
    replicas_ = std::move(placement.replicas);
  }
  index_transfers();
  index_stage_events();
  store_.on_written = opt_.on_grad_written;
  for (const Action& a : sched_->actions[rank_])
    for (const Action& h : halves(a)) {
      if (h.op != Op::F || stages_.count(h.stage)) continue;
      Stage st = model_.build(h.stage);
      if (st.attach_store) st.attach_store(&store_);
      stages_.emplace(h.stage, std::move(st));
    }
}

void RankExecutor::check_setup() const {
  if (!sched_) throw SetupError(SetupError::NotLowered, "the executor needs a schedule (got none)");
  if (!comm_) throw SetupError(SetupError::GroupSize, "the executor needs a process group (got none)");
  const Schedule& sc = *sched_;
  if (comm_->world != sc.ranks)
    throw SetupError(SetupError::GroupSize, fmt::format("the pipeline process group has {} ranks but the schedule {}",
                                                        comm_->world, sc.ranks));
  if (model_.stages != sc.stages)
    throw SetupError(SetupError::StageCount,
                     fmt::format("the model has {} stages but the schedule {}", model_.stages, sc.stages));
  if (sc.ranks > 1 && !sc.has_comm())
    throw SetupError(SetupError::NotLowered,
                     "the schedule is not lowered: it has no SEND/RECV actions (call dualpipe::lower on it first)");
  if (opt_.data_shards < 1 || opt_.data_shard < 0 || opt_.data_shard >= opt_.data_shards)
    throw SetupError(SetupError::BadOption, fmt::format("data shard {} of {} is not a valid share of the batch",
                                                        opt_.data_shard, opt_.data_shards));
}

// Where every transfer is sent and where its receiver consumes it (the
// compute action that waits for it), as positions in those ranks' lists;
// see release_sends().
void RankExecutor::index_transfers() {
  const Schedule& sc = *sched_;
  const int N = sc.micro_batches;
  const std::size_t transfers = static_cast<std::size_t>(sc.stages) * N * 2;
  send_pos_.assign(transfers, -1);
  consume_pos_.assign(transfers, -1);
  // Indexed by transfer_tag, which numbers the transfers densely.
  auto transfer = [N](bool grad, int producer, int mb) {
    return static_cast<std::size_t>(transfer_tag(grad, producer, mb, N));
  };
  for (int r = 0; r < sc.ranks; ++r) {
    const auto& list = sc.actions[r];
    for (std::size_t p = 0; p < list.size(); ++p) {
      const Action& a = list[p];
      const int pos = static_cast<int>(p);
      auto consumes_fwd = [&](int stage, int mb) {
        if (stage > 0 && where(stage - 1, mb) != r) consume_pos_[transfer(false, stage - 1, mb)] = pos;
      };
      auto consumes_bwd = [&](int stage, int mb) {
        if (stage + 1 < sc.stages && where(stage + 1, mb) != r) consume_pos_[transfer(true, stage + 1, mb)] = pos;
      };
      switch (a.op) {
        case Op::SEND_F: send_pos_[transfer(false, a.stage, a.mb)] = pos; break;
        case Op::SEND_B: send_pos_[transfer(true, a.stage, a.mb)] = pos; break;
        case Op::F:
        case Op::B:
        case Op::I:
        case Op::FB:
        case Op::FF:
          for (const Action& h : halves(a)) h.op == Op::F ? consumes_fwd(h.stage, h.mb) : consumes_bwd(h.stage, h.mb);
          break;
        default: break;
      }
    }
  }
}

void RankExecutor::index_stage_events() {
  const auto& mine = sched_->actions[rank_];
  std::map<int, std::size_t> last;  // stage -> position of its last gradient work here
  for (std::size_t p = 0; p < mine.size(); ++p) {
    const Action& a = mine[p];
    if (a.op == Op::B || a.op == Op::I || a.op == Op::W) last[a.stage] = p;
    if (a.op == Op::FB) last[a.stage2] = p;
  }
  grads_done_at_.assign(mine.size(), {});
  for (const auto& [stage, p] : last) grads_done_at_[p].push_back(stage);
  first_use_at_.assign(mine.size(), {});
  std::set<int> used;
  for (std::size_t p = 0; p < mine.size(); ++p)
    for (const Action& h : halves(mine[p]))
      if (h.op == Op::F && used.insert(h.stage).second) first_use_at_[p].push_back(h.stage);
}

RankExecutor::Slot& RankExecutor::slot(int stage, int mb) {
  return slots_[static_cast<long>(stage) * sched_->micro_batches + mb];
}

void RankExecutor::post_recv(const Action& a, std::size_t pos) {
  const int N = sched_->micro_batches;
  const long key = recv_key(a.op, a.stage, a.mb, N);
  if (recvs_.count(key)) return;
  const bool grad = a.op == Op::RECV_B;
  const int producer = grad ? a.stage + 1 : a.stage - 1;
  const int peer = where(producer, a.mb);
  PendingRecv pr;
  pr.buffer = torch::empty(model_.boundary_shape, torch::dtype(model_.boundary_dtype).device(opt_.device));
  pr.work = comm_->irecv(pr.buffer, peer, transfer_tag(grad, producer, a.mb, N));
  pr.peer = peer;
  pr.pos = static_cast<int>(pos);
  recvs_.emplace(key, std::move(pr));
}

torch::Tensor RankExecutor::take_recv(Op op, int stage, int mb, Half h) {
  const long key = recv_key(op, stage, mb, sched_->micro_batches);
  auto it = recvs_.find(key);
  if (it == recvs_.end())
    throw Error(fmt::format("rank {}: no receive was posted for {}", rank_, to_string(Action::make(op, stage, mb))));
  // Copies: while this task waits, the other half of an F&B pair may post
  // or take other receives.
  const compat::WorkPtr work = it->second.work;
  const int peer = it->second.peer, pos = it->second.pos;
  opt_.engine->wait_work(h, *comm_, work, CommPoint::Pipeline, peer, [&] {
    return fmt::format("{} of stage {}, micro-batch {}, at position {}", op_name(op), stage, mb, pos);
  });
  it = recvs_.find(key);
  torch::Tensor t = std::move(it->second.buffer);
  recvs_.erase(it);
  const bool grad = op == Op::RECV_B;
  release_sends(peer, send_pos_[transfer_tag(grad, grad ? stage + 1 : stage - 1, mb, sched_->micro_batches)]);
  return t;
}

// c10d's Gloo send keeps its tensor until the send is waited on, and has no
// way to ask whether it is done without waiting. Waiting blindly could
// deadlock (the receiver may need something from us first), and never
// waiting until the end of the step keeps every activation and gradient sent
// alive. The schedule tells when a wait cannot block: we just received data
// that `peer` sent at position `peer_pos` of its list; every send of ours
// that `peer` consumed before that position has arrived there, so its wait
// returns at once, and its tensor can go.
void RankExecutor::release_sends(int peer, int peer_pos) {
  auto done = [&](const PendingSend& ps) { return ps.peer == peer && ps.consume_pos < peer_pos; };
  for (const PendingSend& ps : sends_)
    if (done(ps))
      comm_->wait(ps.work, ps.peer, [&] {
        return fmt::format("{} of stage {}, micro-batch {}, already received there", op_name(ps.action.op),
                           ps.action.stage, ps.action.mb);
      });
  sends_.erase(std::remove_if(sends_.begin(), sends_.end(), done), sends_.end());
}

void RankExecutor::send(const Action& a) {
  const int N = sched_->micro_batches;
  const bool grad = a.op == Op::SEND_B;
  torch::Tensor t = grad ? slot(a.stage, a.mb).input.grad().contiguous() : slot(a.stage, a.mb).output.detach().contiguous();
  const int peer = where(grad ? a.stage - 1 : a.stage + 1, a.mb);
  const int tag = transfer_tag(grad, a.stage, a.mb, N);
  std::lock_guard<std::mutex> lock(send_mu_);
  sends_.push_back({t, comm_->isend(t, peer, tag), peer, a, consume_pos_[tag]});
  if (grad) slots_.erase(static_cast<long>(a.stage) * N + a.mb);  // the send holds the tensor now
}

void RankExecutor::send_early(std::size_t pos, Op op, int stage, int mb) {
  const auto& list = sched_->actions[rank_];
  for (std::size_t q = pos + 1; q < list.size() && is_comm(list[q].op); ++q)
    if (list[q].op == op && list[q].stage == stage && list[q].mb == mb) {
      send(list[q]);
      std::lock_guard<std::mutex> lock(send_mu_);
      sent_early_[q] = 1;
      return;
    }
}

torch::Tensor RankExecutor::forward_input(int stage, int mb, Half h) {
  if (stage == 0) return model_.input(opt_.data_shard * sched_->micro_batches + mb);
  if (where(stage - 1, mb) == rank_) return slot(stage - 1, mb).output.detach();  // the previous stage runs here
  return take_recv(Op::RECV_F, stage, mb, h);
}

void RankExecutor::forward(int stage, int mb, Half h, torch::Tensor in) {
  const int model_mb = opt_.data_shard * sched_->micro_batches + mb;
  // Each stage's input is a leaf of its own graph, so that its backward
  // stops there and leaves the gradient to pass on in input.grad.
  if (stage > 0) in = in.detach().requires_grad_(true);
  opt_.engine->begin_chunk(h, Op::F, stage);
  torch::Tensor out = stages_.at(stage).forward(in);
  torch::Tensor loss;
  if (stage == sched_->stages - 1) loss = model_.loss(out, model_mb);
  opt_.engine->end_chunk(h);
  Slot& sl = slot(stage, mb);
  sl.input = in;
  sl.output = out;
  if (loss.defined()) {
    sl.loss = loss;
    std::lock_guard<std::mutex> lock(loss_mu_);
    losses_.emplace_back(model_mb, loss.item<double>());
  }
}

torch::Tensor RankExecutor::output_grad(int stage, int mb, Half h) {
  if (stage + 1 >= sched_->stages) return {};
  if (where(stage + 1, mb) == rank_) return slot(stage + 1, mb).input.grad();
  return take_recv(Op::RECV_B, stage, mb, h);
}

void RankExecutor::backward(int stage, int mb, bool defer_weights, Half h, torch::Tensor grad, bool w_follows) {
  const int N = sched_->micro_batches;
  const bool next_here = stage + 1 < sched_->stages && where(stage + 1, mb) == rank_;
  torch::Tensor output, loss;
  {
    Slot& sl = slot(stage, mb);
    output = sl.output;
    loss = sl.loss;
  }
  opt_.engine->begin_chunk(h, defer_weights ? Op::I : Op::B, stage);
  // The root of this stage's backward: the scaled loss, or the output with its gradient.
  const bool last = stage == sched_->stages - 1;
  torch::Tensor root = last ? loss / (static_cast<double>(N) * opt_.data_shards) : output;
  std::vector<torch::Tensor> root_grad;
  if (!last) root_grad.push_back(grad);
  const long key = static_cast<long>(stage) * N + mb;
  const bool fill = opt_.engine->options().fill_waits && opt_.engine->has_exchanged();
  if (defer_weights || fill) store_.begin(key);
  // A full B queues its weight gradients too, for its all-to-all waits
  // (finish_fill() runs the rest once its input gradient is sent); an I
  // whose W comes next fills its waits with that W's work (the W runs the rest).
  if (fill && (!defer_weights || w_follows)) {
    fill_stage_ = stage;
    fill_key_ = key;
  }
  if (defer_weights && stages_.at(stage).autograd_split)
    split_backward(stage, mb, root, root_grad);
  else
    torch::autograd::backward({root}, root_grad);
  store_.end();
  if (defer_weights) fill_key_ = -1;  // the rest is its W's
  opt_.engine->end_chunk(h);
  // Looked up again: the other half of an F&B pair may have added slots
  // meanwhile (std::map keeps references valid, but say so plainly).
  Slot& sl = slot(stage, mb);
  sl.output = torch::Tensor();
  sl.loss = torch::Tensor();
  if (next_here) slots_.erase(static_cast<long>(stage + 1) * N + mb);  // its input gradient is consumed
  if (stage == 0) slots_.erase(static_cast<long>(stage) * N + mb);
}

void RankExecutor::split_backward(int stage, int mb, const torch::Tensor& root, const std::vector<torch::Tensor>& root_grad) {
  const Stage& st = stages_.at(stage);
  std::vector<torch::Tensor> params;
  for (const torch::Tensor& p : st.module->parameters())
    if (p.requires_grad()) params.push_back(p);
  // I: the input's gradient only (stage 0's input, token ids or data, has none).
  torch::Tensor in = slot(stage, mb).input;
  if (in.defined() && in.requires_grad()) {
    auto g = torch::autograd::grad({root}, {in}, root_grad, /*retain_graph=*/!params.empty(), false,
                                   /*allow_unused=*/true);
    in.mutable_grad() = g[0].defined() ? g[0] : torch::zeros_like(in);
  }
  if (params.empty()) return;
  // W: the parameters' gradients from the kept graph, added as backward adds them.
  store_.defer([root, root_grad, params]() mutable {
    auto g = torch::autograd::grad({root}, params, root_grad, /*retain_graph=*/false, false, /*allow_unused=*/true);
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!g[i].defined()) continue;
      if (params[i].grad().defined())
        params[i].mutable_grad().add_(g[i]);
      else
        params[i].mutable_grad() = g[i];
    }
  });
}

bool RankExecutor::run_weight_piece(Half h, int stage, long key) {
  const int index = store_.next_index(key);
  if (index < 0) return false;
  opt_.engine->run_piece(h, Op::W, stage, index, [&] { store_.run_one(key); });
  return true;
}

bool RankExecutor::fill_one(Half h) {
  const long key = fill_key_;
  return key >= 0 && run_weight_piece(h, fill_stage_, key);
}

void RankExecutor::finish_fill(Half h) {
  const long key = fill_key_;
  if (key < 0) return;
  while (run_weight_piece(h, fill_stage_, key)) {
  }
  store_.run(key);
  fill_key_ = -1;
}

void RankExecutor::run_pair(const Action& a, std::size_t pos) {
  const bool fb = a.op == Op::FB;
  const Action second = a.second_half();
  // Both halves' pipeline inputs first, so that no half waits for a
  // pipeline transfer inside the pair.
  torch::Tensor in = forward_input(a.stage, a.mb, Half::Forward);
  torch::Tensor in2 = fb ? output_grad(second.stage, second.mb, Half::Backward)
                         : forward_input(second.stage, second.mb, Half::Backward);
  auto fwd = [&] {
    forward(a.stage, a.mb, Half::Forward, in);
    send_early(pos, Op::SEND_F, a.stage, a.mb);
  };
  // The pair's second task (the engine's Backward half): the backward of an
  // F&B pair, the second forward of an F&F pair.
  auto bwd = [&] {
    if (!fb) {
      ForwardTrafficHalf traffic(Half::Backward);
      forward(second.stage, second.mb, Half::Backward, in2);
      send_early(pos, Op::SEND_F, second.stage, second.mb);
      return;
    }
    backward(second.stage, second.mb, false, Half::Backward, in2);
    send_early(pos, Op::SEND_B, second.stage, second.mb);
    finish_fill(Half::Backward);
  };
  const Stage& st = stages_.at(a.stage);
  if (fb && st.overlapped) {
    st.overlapped(fwd, bwd);
  } else if (opt_.fb_overlap && opt_.engine->has_exchanged()) {
    // Two tasks only where there are all-to-alls to hide: elsewhere the
    // hand-overs would cost two thread wake-ups a pair for nothing.
    opt_.engine->run_pair(fwd, bwd);
  } else {
    fwd();
    bwd();
  }
}

// Receives are posted ahead of their position: up to the second compute
// action after the current one, so the data can arrive while we compute.
// Compute actions are counted from the current one, so the frontier stays
// kLookahead ahead (counting from the last frontier would let it run away
// and post every receive of the step early, each with its buffer).
void RankExecutor::post_ahead(std::size_t from) {
  constexpr int kLookahead = 2;
  const auto& list = sched_->actions[rank_];
  int computes = 0;
  std::size_t q = from;
  for (; q < list.size(); ++q) {
    if (is_compute(list[q].op) && ++computes > kLookahead + 1) break;
    if (q >= recv_frontier_ && (list[q].op == Op::RECV_F || list[q].op == Op::RECV_B)) post_recv(list[q], q);
  }
  recv_frontier_ = std::max(recv_frontier_, q);
}

void RankExecutor::run_action(const Action& a, std::size_t p) {
  if (opt_.before_stage_use)
    for (int stage : first_use_at_[p]) opt_.before_stage_use(stage);
  if (opt_.before_last_grads)
    for (int stage : grads_done_at_[p]) opt_.before_last_grads(stage);
  switch (a.op) {
    case Op::RECV_F:
    case Op::RECV_B: post_recv(a, p); break;
    case Op::SEND_F:
    case Op::SEND_B:
      if (!sent_early_[p]) send(a);
      break;
    case Op::F:
      post_ahead(p);
      forward(a.stage, a.mb, Half::Forward, forward_input(a.stage, a.mb, Half::Forward));
      break;
    case Op::B:
    case Op::I:
      post_ahead(p);
      backward(a.stage, a.mb, a.op == Op::I, Half::Backward, output_grad(a.stage, a.mb, Half::Backward),
               w_comes_next(sched_->actions[rank_], p));
      if (a.op == Op::B && fill_key_ >= 0) {  // its input gradient goes first, then its weights' work
        send_early(p, Op::SEND_B, a.stage, a.mb);
        finish_fill(Half::Backward);
      }
      break;
    case Op::W: {
      // One piece per closure: the same pieces a backward runs in its waits.
      const long key = static_cast<long>(a.stage) * sched_->micro_batches + a.mb;
      while (run_weight_piece(Half::Backward, a.stage, key)) {
      }
      store_.run(key);
      break;
    }
    case Op::FB:
    case Op::FF:
      post_ahead(p);
      run_pair(a, p);
      break;
    default: break;  // actions with no work for this runtime
  }
}

StepOutput RankExecutor::step() {
  const auto& list = sched_->actions[rank_];
  StepOutput out;
  out.times.resize(list.size());
  losses_.clear();
  recv_frontier_ = 0;
  const double heap0 = track_memory ? malloc_in_use_bytes() : 0;
  OverlapEngine& engine = *opt_.engine;
  const ExposedComm exposed0 = engine.exposed();
  engine.take_idle_spans();
  engine.take_lane_records();
  sent_early_.assign(list.size(), 0);
  fill_key_ = -1;
  // The engine may outlive this executor (the model's layers share it): the
  // filler is set for the step only.
  struct FillerGuard {
    OverlapEngine& e;
    ~FillerGuard() { e.set_filler(nullptr); }
  } guard{engine};
  if (engine.options().fill_waits) engine.set_filler([this](Half h) { return fill_one(h); });
  const auto t0 = Clock::now();
  for (std::size_t p = 0; p < list.size(); ++p) {
    out.times[p].start = since(t0);
    const ExposedComm before = engine.exposed();
    run_action(list[p], p);
    const ExposedComm delta = engine.exposed() - before;
    out.times[p].end = since(t0);
    out.times[p].wait = delta.total();
    out.times[p].a2a = delta.all_to_all + delta.peer_wait;
    if (track_memory) out.peak_heap_bytes = std::max(out.peak_heap_bytes, malloc_in_use_bytes() - heap0);
    if (opt_.on_grads_done)
      for (int stage : grads_done_at_[p]) opt_.on_grads_done(stage);
  }
  end_step(out, std::chrono::duration<double>(t0.time_since_epoch()).count(), exposed0);
  return out;
}

void RankExecutor::end_step(StepOutput& out, double epoch, const ExposedComm& exposed0) {
  for (const PendingSend& ps : sends_)
    comm_->wait(ps.work, ps.peer, [&] {
      return fmt::format("{} of stage {}, micro-batch {}, in the end-of-step wait on sends", op_name(ps.action.op),
                         ps.action.stage, ps.action.mb);
    });
  sends_.clear();
  if (!recvs_.empty() || store_.pending())
    throw Error(fmt::format("rank {}: step ended with {} unused receives and {} deferred weight gradients", rank_,
                            recvs_.size(), store_.pending()));
  slots_.clear();
  out.seconds = std::chrono::duration<double>(Clock::now().time_since_epoch()).count() - epoch;
  out.start = epoch;
  OverlapEngine& engine = *opt_.engine;
  out.exposed = engine.exposed() - exposed0;
  for (IdleSpan sp : engine.take_idle_spans()) {
    sp.start -= epoch;
    sp.end -= epoch;
    out.idle.push_back(sp);
  }
  for (LaneRecord r : engine.take_lane_records()) {
    r.posted -= epoch;
    r.started -= epoch;
    r.done -= epoch;
    r.wait_from -= epoch;
    r.wait_to -= epoch;
    out.lane.push_back(std::move(r));
  }
  out.losses = losses_;
  std::sort(out.losses.begin(), out.losses.end());
}

void RankExecutor::sum_replica_grads() {
  const int base = 2 * sched_->stages * sched_->micro_batches;  // above every pipeline transfer tag
  // Two phases, so that the exchanges of all replicated stages are in flight
  // together (DualPipe replicates every stage a rank holds): post every
  // send and receive, then wait, add and write back stage by stage.
  struct Exchange {
    int stage;
    Stage* st;
    std::vector<torch::Tensor> parts;  // partial sums in replica (rank) order
    std::vector<std::pair<compat::WorkPtr, int>> works;  // with the peer, for the error
  };
  std::vector<Exchange> exchanges;
  for (auto& [s, st] : stages_) {
    const auto& reps = replicas_[s];
    // Every replica of a stage has the same parameter list, so all of them
    // skip a stage without parameters (e.g. a GPT stage with no blocks) together.
    if (reps.size() < 2 || st.module->parameters().empty()) continue;
    std::vector<torch::Tensor> params = st.module->parameters();
    Exchange ex{s, &st, std::vector<torch::Tensor>(reps.size()), {}};
    torch::Tensor mine = flat_grads(params);
    for (std::size_t i = 0; i < reps.size(); ++i) {
      if (reps[i] == rank_) {
        ex.parts[i] = mine;
        continue;
      }
      ex.parts[i] = torch::empty_like(mine);
      ex.works.emplace_back(comm_->isend(mine, reps[i], base + s), reps[i]);
      ex.works.emplace_back(comm_->irecv(ex.parts[i], reps[i], base + s), reps[i]);
    }
    exchanges.push_back(std::move(ex));
  }
  torch::NoGradGuard no_grad;
  for (Exchange& ex : exchanges) {
    for (auto& [w, peer] : ex.works)
      comm_->wait(w, peer, [&, st_ = ex.stage] { return fmt::format("the gradient sum of stage {}'s replicas", st_); });
    // Every replica adds all partial sums in rank order, so all replicas
    // end with bit-identical gradients.
    // (parts[0] + parts[1] is one pass where clone-then-add is two.)
    torch::Tensor total = ex.parts[0] + ex.parts[1];
    for (std::size_t i = 2; i < ex.parts.size(); ++i) total.add_(ex.parts[i]);
    std::vector<torch::Tensor> params = ex.st->module->parameters();
    set_flat_grads(params, total);
  }
}

}  // namespace dualpipe
