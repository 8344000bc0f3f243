// dualpipe train: real training across pipeline ranks, with progress, the loss
// curve, and the measured step set against the simulator's prediction.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "runtime/stats.h"
#include "schedule/text_file.h"
#include "cli/output_paths.h"
#include "cli/summary_json.h"
#include "cli/torch_common.h"
#include "cli/torch_commands.h"
#include "dualpipe/pictures/plot.h"
#include "dualpipe/pictures/svg.h"
#include "dualpipe/pictures/trace.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/lower.h"
#include "cli/words.h"
#include "dualpipe/train/diverged.h"
#include "dualpipe/train/lr_warmup.h"
#include "dualpipe/train/trainer.h"
#include "train/fault.h"

namespace dualpipe::cli {
namespace {

std::string duration(double s) {
  int t = static_cast<int>(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60) : fmt::format("{}:{:02}", t / 60, t % 60);
}

// "load balance (last step): tokens per expert 130 121 ... (max/mean 1.08); balance loss 0.0101"
std::string load_balance_line(const StepStats& st) {
  double sum = 0, mx = 0;
  std::string list;
  for (double t : st.expert_tokens) {
    sum += t;
    mx = std::max(mx, t);
    list += fmt::format(" {:.0f}", t);
  }
  const double mean = sum / static_cast<double>(st.expert_tokens.size());
  return fmt::format("load balance (last step, all blocks): tokens per expert{} (max/mean {:.2f}); balance loss {:.4f}",
                     list, mean > 0 ? mx / mean : 0.0, st.aux_loss);
}

// "expert load (max/mean tokens per expert, mean over MoE blocks): 1.92 in step 1 -> 1.21 in step 50; (token,
// expert) pairs to another host: 12.5% in the last step"
std::string expert_load_line(const StepStats& first, const StepStats& last) {
  return fmt::format("expert load (max/mean tokens per expert, mean over MoE blocks): {:.2f} in step {} -> {:.2f} in "
                     "step {}; (token, expert) pairs sent to another host: {:.1f}% in the last step",
                     first.expert_load, first.step + 1, last.expert_load, last.step + 1, 100 * last.cross_host_share);
}


struct Opts {
  SourceOptions src;
  ModelOptions model;
  RankOptions ranks;
  int steps = 400;
  double lr = 3e-3, weight_decay = 0.01, clip = 1.0;
  int warmup_steps = -1;  // not given: default_lr_warmup_steps(steps)
  CLI::Option* warmup_opt = nullptr;
  std::string loss_csv = "train_loss.csv", loss_svg = "train_loss.svg";
  std::string trace, svg;
  std::string load_svg;  // models with experts: the expert load per step (empty: none)
  double svg_width = 0;
  std::string checkpoint_dir;
  CLI::Option *trace_opt = nullptr, *svg_opt = nullptr, *checkpoint_opt = nullptr;  // given (maybe as "")
  int checkpoint_every = 100, keep_checkpoints = 2;
  bool resume = false;
  std::string format = "text";
  std::string output = "-";
};

// The loss curve as CSV: the header, then one row per step, written as the
// steps end (a run that fails later keeps the rows of the steps it made).
constexpr const char* kLossCsvHeader = "step,loss,grad_norm,step_seconds,pipeline_seconds\n";
std::string loss_csv_row(const StepStats& st) {
  return fmt::format("{},{:.6f},{:.6f},{:.6f},{:.6f}\n", st.step + 1, st.loss, st.grad_norm, st.seconds,
                     st.pipeline_seconds);
}

// The loss curve of the steps before a resume: rows 1..resume_step of the
// loss CSV the earlier run wrote, so that a resumed run appends to it and its
// SVG shows the whole run. Rows of steps after the checkpoint (made by the
// earlier run after it, and made again now) are left out; a file that is
// missing or not such a CSV gives none.
struct EarlierLoss {
  std::string rows;  // CSV rows, without the header
  std::vector<double> steps, losses;
};

EarlierLoss earlier_loss(const std::string& path, int resume_step) {
  EarlierLoss e;
  if (resume_step <= 0 || path == "-") return e;
  std::string text;
  try {
    text = read_text_file(path, std::uint64_t{1} << 30, "loss CSV");
  } catch (const Error&) {
    return e;
  }
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line + "\n" != kLossCsvHeader) return e;
  while (std::getline(in, line) && static_cast<int>(e.steps.size()) < resume_step) {
    const std::size_t want = e.steps.size() + 1, comma = line.find(',');
    if (comma == std::string::npos || line.substr(0, comma) != std::to_string(want)) break;
    e.steps.push_back(static_cast<double>(want));
    e.losses.push_back(std::strtod(line.c_str() + comma + 1, nullptr));
    e.rows += line + "\n";
  }
  return e;
}

// What rank 0 reports at the end: the steps, every rank's figures gathered.
struct RunReport {
  std::vector<StepStats> steps;
  std::vector<std::vector<ActionTime>> times;  // the first pipeline's last step
  std::vector<std::vector<Span>> a2a_waits;
  std::vector<double> heap, optimizer;  // per rank (heap: empty without memory tracking)
  double tokens_per_step = 0;
  EarlierLoss earlier;
};

// The loss curve as files: the CSV (to stdout at the end when "-"; a file
// got its rows step by step) and the SVG of the whole run, the steps before
// a resume included.
void write_loss_outputs(const Opts& o, const Schedule& s, const RunReport& rr) {
  std::string csv = kLossCsvHeader;
  std::vector<double> all_x = rr.earlier.steps, all_y = rr.earlier.losses;
  for (const StepStats& st : rr.steps) {
    all_x.push_back(st.step + 1);
    all_y.push_back(st.loss);
    csv += loss_csv_row(st);
  }
  if (o.loss_csv == "-") write_output(o.loss_csv, csv);
  write_output(o.loss_svg, line_chart_svg(fmt::format("{} on {} ranks: training loss", s.method, s.ranks), "step",
                                          "loss (mean over micro-batches)", all_x, all_y));
  if (o.load_svg.empty()) return;
  std::vector<double> steps, loads;
  for (const StepStats& st : rr.steps) {
    steps.push_back(st.step + 1);
    loads.push_back(st.expert_load);
  }
  write_output(o.load_svg, line_chart_svg(fmt::format("{} on {} ranks: expert load", s.method, s.ranks), "step",
                                          "max/mean tokens per expert (mean over MoE blocks)", steps, loads));
}

// The measured last step, and the simulator fed with what each action of it cost.
struct StepCheck {
  SimResult measured, predicted;
  double median_step = 0, last_pipeline = 0;
};

StepCheck check_last_step(const Opts& o, const Schedule& s, const RunReport& rr) {
  StepCheck c;
  std::vector<double> secs;
  for (const StepStats& st : rr.steps) secs.push_back(st.seconds);
  c.median_step = median(secs);
  c.last_pipeline = rr.steps.back().pipeline_seconds;
  c.measured = measured_result(s, rr.times);
  // moe across expert ranks: the stretches each rank stood idle waiting for
  // an all-to-all, drawn hatched over its timeline.
  bool any_wait = false;
  for (const auto& w : rr.a2a_waits) any_wait = any_wait || !w.empty();
  if (any_wait) c.measured.a2a_waits = rr.a2a_waits;
  c.predicted = simulate(compute_only(s), measured_costs(s, rr.times));
  SvgOptions so;
  so.title = fmt::format("{} P={} N={}: measured step {:.4f} s", s.method, s.ranks, s.micro_batches, c.last_pipeline);
  so.subtitle = "real timeline of the last training step (receive waits shown as idle)";
  so.width = o.svg_width;
  if (!o.svg.empty()) write_output(o.svg, timeline_svg(s, c.measured, so));
  if (!o.trace.empty()) write_output(o.trace, chrome_trace(s, c.measured, 1e6));
  return c;
}

nlohmann::json summary_json(const Opts& o, const Schedule& s, const TrainOptions& t, const RunReport& rr,
                            const StepCheck& c) {
  nlohmann::json j = run_inputs_json(s, o.model, o.ranks, t.model.seed);
  j.update({{"steps", o.steps},
            {"lr", t.lr},
            {"warmup_steps", t.lr_warmup_steps},
            {"weight_decay", t.weight_decay},
            {"clip", t.clip},
            {"resume_step", t.checkpoint.resume_step}});
  const StepStats &first = rr.steps.front(), &last = rr.steps.back();
  j.update({{"steps_run", rr.steps.size()},
            {"first_step", first.step + 1},
            {"loss_first", clean_number(first.loss)},
            {"loss_last", clean_number(last.loss)},
            {"grad_norm_last", clean_number(last.grad_norm)},
            {"median_step_s", clean_number(c.median_step)},
            {"tokens_per_step", std::llround(rr.tokens_per_step)},  // a count of tokens
            {"tokens_per_s", clean_number(rr.tokens_per_step / c.median_step, 4)},
            {"last_step_pipeline_s", clean_number(c.last_pipeline)},
            {"simulated_pipeline_s", clean_number(c.predicted.makespan)},
            {"bubble_s", clean_number(c.measured.bubble)},
            {"simulated_bubble_s", clean_number(c.predicted.bubble)},
            {"threads", threads_json()}});
  if (!rr.heap.empty()) {
    nlohmann::json per = nlohmann::json::array();
    for (int r = 0; r < s.ranks; ++r)
      per.push_back({{"rank", r},
                     {"peak_heap_bytes", clean_number(rr.heap[r], 4)},
                     {"simulated_peak_activations", c.predicted.per_rank[r].peak_activations}});
    j["memory"] = per;
  }
  if (!last.expert_tokens.empty()) {
    nlohmann::json tokens = nlohmann::json::array();
    for (double x : last.expert_tokens) tokens.push_back(clean_number(x));
    j["expert_tokens_last_step"] = tokens;
    j["balance_loss_last_step"] = clean_number(last.aux_loss, 4);
    j["expert_load_first_step"] = clean_number(first.expert_load, 4);
    j["expert_load_last_step"] = clean_number(last.expert_load, 4);
    j["cross_host_share_last_step"] = clean_number(last.cross_host_share, 4);
  }
  nlohmann::json files = {{"loss_csv", o.loss_csv}, {"loss_svg", o.loss_svg}};
  if (!o.svg.empty()) files["svg"] = o.svg;
  if (!o.load_svg.empty()) files["load_svg"] = o.load_svg;
  if (!o.trace.empty()) files["trace"] = o.trace;
  j["files"] = files;
  return j;
}

std::string summary_text(const Opts& o, const Schedule& s, const RunReport& rr, const StepCheck& c) {
  const StepStats &first = rr.steps.front(), &last = rr.steps.back();
  std::string t;
  t += fmt::format("summary: loss {:.4f} -> {:.4f} over {}; median step {:.4f} s, {:.0f} tokens/s\n", first.loss,
                   last.loss, count_of(static_cast<long long>(rr.steps.size()), "step"), c.median_step,
                   rr.tokens_per_step / c.median_step);
  if (!last.expert_tokens.empty())
    t += fmt::format("{}\n{}\n", load_balance_line(last), expert_load_line(first, last));
  t += fmt::format("last step, pipeline part: measured {:.3f} ms, simulated from measured action costs {:.3f} ms "
                   "(measured/simulated {:.3f}); bubble measured {:.3f} ms, simulated {:.3f} ms\n",
                   1e3 * c.last_pipeline, 1e3 * c.predicted.makespan, c.last_pipeline / c.predicted.makespan,
                   1e3 * c.measured.bubble, 1e3 * c.predicted.bubble);
  if (!rr.heap.empty()) {
    std::string per;
    for (int r = 0; r < s.ranks; ++r)
      per += fmt::format("{}rank {}: {:.2f} MiB / {}", r ? "; " : "", r, rr.heap[r] / (1 << 20),
                         count_of(static_cast<long long>(c.predicted.per_rank[r].peak_activations), "activation"));
    t += fmt::format("peak activation memory (heap growth during the step) against the simulated peak count: {}\n",
                     per);
  }
  t += fmt::format("wrote {}, {}{}{}{}\n", o.loss_csv, o.loss_svg, o.load_svg.empty() ? "" : ", " + o.load_svg,
                   o.svg.empty() ? "" : ", " + o.svg, o.trace.empty() ? "" : ", " + o.trace);
  std::vector<double> waits;
  for (const StepStats& st : rr.steps) waits.push_back(st.reduce_seconds);
  t += fmt::format("gradient reduction after the pipeline (not hidden): median {:.4f} s a step (slowest rank; "
                   "overlap with the step: {})\n",
                   median(waits), o.ranks.overlap_grad_reduce);
  if (!rr.optimizer.empty())
    t += fmt::format("optimizer state (AdamW moments) per rank: {:.1f} KiB on rank 0, {:.1f} KiB the most (ZeRO-{})\n",
                     rr.optimizer[0] / 1024, *std::max_element(rr.optimizer.begin(), rr.optimizer.end()) / 1024,
                     o.ranks.zero);
  return t;
}

// Rank 0's closing report: the loss curve files, the measured last step
// against the simulator, and memory; as text or (--format json) one object.
void report(const Opts& o, const Schedule& s, const TrainOptions& t, const RunReport& rr) {
  write_loss_outputs(o, s, rr);
  const StepCheck c = check_last_step(o, s, rr);
  write_output(o.output, o.format == "json" ? command_json("train", summary_json(o, s, t, rr, c))
                                            : summary_text(o, s, rr, c));
}

// The outputs can be written and none of them is an input.
void check_outputs(const Opts& o) {
  std::vector<NamedPath> inputs = {{"--data", o.model.data}, {"--from", o.src.from}, {"--loss", o.model.loss}};
  for (const std::string& f : o.model.stages) inputs.push_back({"--stages", f});
  auto output = [&](const char* option, const std::string& path) {
    require_output_file(option, path);
    require_not_an_input(option, path, inputs);
  };
  output("--output", o.output);
  output("--loss-csv", o.loss_csv);
  output("--loss-svg", o.loss_svg);
  if (o.trace_opt->count() > 0) output("--trace", o.trace);
  if (o.svg_opt->count() > 0) output("--svg", o.svg);
  if (!o.load_svg.empty()) output("--load-svg", o.load_svg);
  require_distinct_outputs({{"--output", o.output}, {"--loss-csv", o.loss_csv}, {"--loss-svg", o.loss_svg},
                            {"--trace", o.trace}, {"--svg", o.svg}, {"--load-svg", o.load_svg}});
  if (o.checkpoint_opt->count() > 0) require_output_folder("--checkpoint-dir", o.checkpoint_dir);
}


// Option values no run can take; throws dualpipe::Error naming the option.
void validate(const Opts& o) {
  require_step_count(o.steps);
  if (o.checkpoint_every < 0)
    throw Error(fmt::format("--checkpoint-every must not be negative (got {})", o.checkpoint_every));
  if (o.keep_checkpoints < 1)
    throw Error(fmt::format("--keep-checkpoints must be at least 1 (got {})", o.keep_checkpoints));
  if (o.resume && o.checkpoint_dir.empty()) throw Error("--resume needs --checkpoint-dir");

  if (o.lr <= 0) throw Error(fmt::format("--lr must be positive (got {})", o.lr));
  if (o.warmup_opt->count() > 0 && o.warmup_steps < 0)
    throw Error(fmt::format("--warmup-steps must not be negative (got {})", o.warmup_steps));
  if (o.warmup_opt->count() > 0 && o.warmup_steps > o.steps)
    throw Error(fmt::format("--warmup-steps {} is more than --steps {}: the rate would never reach --lr",
                            o.warmup_steps, o.steps));
  if (o.weight_decay < 0 || o.clip < 0) throw Error("--weight-decay and --clip must not be negative");
  if (!o.load_svg.empty() && !has_experts(o.model.model))
    throw Error(fmt::format("--load-svg draws the expert load: it needs a model with experts (moe, deepseek; got {})",
                            o.model.model));
  if (o.svg_width != 0 && o.svg_opt->count() == 0)
    throw Error("--svg-width shapes the --svg picture: add --svg FILE (see dualpipe train --help)");
  check_svg_width(o.svg_width);
}

// The run as every rank makes it: the schedule, the training options, and
// what the ranks must share.
struct TrainPlan {
  Schedule schedule;
  TrainOptions t;
  RankSettings settings;
  double tokens_per_step = 0;
  bool nothing_to_train = false;  // the checkpoint to resume already has --steps steps
};

// --checkpoint-dir: where to resume (the lead process warns), or a refusal
// when a fresh run would mix with an earlier one's checkpoints.
void plan_checkpoints(const Opts& o, const Schedule& s, TrainPlan& p, bool lead) {
  CheckpointOptions& ck = p.t.checkpoint;
  ck.dir = o.checkpoint_dir;
  ck.every = o.checkpoint_every;
  ck.keep = o.keep_checkpoints;
  ck.identity = run_identity(s, p.t.model);
  add_mesh_identity(ck.identity, o.ranks);
  // A restarted run (--max-restarts, or an outside launcher's restart) goes on from its newest checkpoint.
  if (!o.resume && restart_count() == 0) {
    check_no_checkpoint(ck.dir);
    return;
  }
  auto warn = [&](const std::string& w) {
    if (lead) fmt::print(stderr, "dualpipe: warning: {}\n", w);
  };
  if (auto found = find_checkpoint(ck.dir, ck.identity, warn)) {
    if (found->step >= o.steps) {
      if (lead)
        fmt::print("checkpoint {} already has {} steps (--steps {}): nothing to train\n", found->path, found->step,
                   o.steps);
      p.nothing_to_train = true;
    }
    ck.resume_step = found->step;
  } else {
    warn(fmt::format("no complete checkpoint in {}: starting at step 1", ck.dir));
  }
}

// What every rank must share: the schedule and model (as a checkpoint names
// them, the corpus by content) and the training options.
RankSettings shared_settings(const Opts& o, const Schedule& s, const TrainOptions& t) {
  RankSettings settings;
  auto identity = run_identity(s, t.model);  // a named object: items() refers into it
  add_mesh_identity(identity, o.ranks);
  for (const auto& [key, v] : identity.items())
    settings.emplace_back(key, v.is_string() ? v.get<std::string>() : v.dump());
  for (const auto& [key, v] : {std::pair<std::string, double>{"lr", t.lr}, {"weight_decay", t.weight_decay},
                               {"clip", t.clip}, {"steps", t.steps}, {"warmup_steps", t.lr_warmup_steps}})
    settings.emplace_back(key, fmt::format("{}", v));
  settings.emplace_back("fb_overlap", o.ranks.fb_overlap);
  settings.emplace_back("pair_forwards", o.src.pair_forwards);
  if (!identity.contains("bucket_mb")) settings.emplace_back("bucket_mb", fmt::format("{}", o.ranks.bucket_mb));
  settings.emplace_back("overlap_grad_reduce", o.ranks.overlap_grad_reduce);
  return settings;
}

TrainPlan build_plan(Opts& o, bool lead) {
  // The default N follows P: a fixed 8 would run `train -p 8` (DualPipe)
  // below the 2P micro-batches it needs to fill its bubbles.
  if (o.src.from.empty() && o.src.micro_batches_opt->count() == 0 && o.src.ranks > 0 &&
      o.src.ranks <= (1 << 24))  // beyond it generate() refuses P
    o.src.micro_batches = std::max(8, 2 * o.src.ranks);
  TrainPlan p;
  p.schedule = load_schedule(o.src);
  if (!p.schedule.has_comm()) p.schedule = lower(p.schedule);
  const Schedule& s = p.schedule;
  TrainOptions& t = p.t;
  t = run_options(s, o.model, o.ranks, true);
  t.steps = o.steps;
  t.lr = o.lr;
  t.lr_warmup_steps = o.warmup_opt->count() > 0 ? o.warmup_steps : default_lr_warmup_steps(o.steps);
  t.weight_decay = o.weight_decay;
  t.clip = o.clip;
  t.track_memory = !o.ranks.threads;  // the heap is per process
  // Only real rank processes can be killed or stalled without taking the others along.
  if (!o.ranks.threads) t.instrument = fault_hook(fault_from_env());
  // Ctrl-C: the ranks finish the step, keep a checkpoint and the outputs, and stop together.
  t.stop_requested = interrupt_requested;
  if (!o.checkpoint_dir.empty()) plan_checkpoints(o, s, p, lead);
  p.tokens_per_step = static_cast<double>(static_cast<int64_t>(s.micro_batches) * o.ranks.ep * o.ranks.dp *
                                          o.model.micro_batch_size * t.model.seq_len);
  p.settings = shared_settings(o, s, t);
  return p;
}

// Prints one progress line every few steps (text only), and streams the loss CSV.
class Progress {
 public:
  Progress(const Opts& o, const TrainOptions& t, double tokens, bool lead)
      : o_(o), t_(t), tokens_(tokens), text_(lead && o.format == "text"), stream_csv_(lead && o.loss_csv != "-"),
        every_(std::max(1, o.steps / 25)) {}
  void operator()(const StepStats& st) {
    elapsed_ += st.seconds;
    if (stream_csv_) append_output(o_.loss_csv, loss_csv_row(st));
    const int done = st.step + 1, first = t_.checkpoint.resume_step + 1;
    if (!text_ || (done % every_ && done != o_.steps && done != first)) return;
    fmt::print("step {:>5}/{}  loss {:.4f}  grad-norm {:.3f}  {:>8.0f} tokens/s  step {:.3f} s  ETA {}{}\n", done,
               o_.steps, st.loss, st.grad_norm, tokens_ / st.seconds, st.seconds,
               duration(elapsed_ / (done - first + 1) * (o_.steps - done)),
               st.expert_tokens.empty() ? std::string() : fmt::format("  expert load {:.2f}", st.expert_load));
    std::fflush(stdout);
  }

 private:
  const Opts& o_;
  const TrainOptions& t_;
  double tokens_, elapsed_ = 0;
  bool text_, stream_csv_;
  int every_;
};

// After a Ctrl-C: one line on what the run kept and how to go on.
void say_what_was_kept(const Opts& o, const TrainOptions& t, const RankRun& run) {
  const int done = run.steps.back().step + 1;
  std::string kept = fmt::format("the loss curve ({}, {})", o.loss_csv, o.loss_svg);
  if (run.checkpointed)
    kept = fmt::format("checkpoint {} and {}; go on with the same command and --resume",
                       checkpoint_path(t.checkpoint.dir, done), kept);
  else
    kept += "; no --checkpoint-dir, so the parameters are not kept";
  std::fflush(stdout);
  fmt::print(stderr, "dualpipe: interrupted: stopped after step {} of {}; kept {}\n", done, o.steps, kept);
}

// One rank's run: the header, the steps with progress, then rank 0's report.
int train_on_rank(const Opts& o, const TrainPlan& p, const Mesh& mesh) {
  const Schedule& s = p.schedule;
  const TrainOptions& t = p.t;
  if (!o.ranks.threads) check_same_settings(p.settings, *mesh.world);
  const bool lead = mesh.rank == 0, text = lead && o.format == "text";  // json: the summary alone on stdout
  if (text)
    fmt::print("train {}: {}, {}, {} of {} x {} tokens; {}; {}\n", s.method, count_of(s.ranks, "rank"),
               count_of(s.stages, "stage"), count_of(s.micro_batches, "micro-batch"), o.model.micro_batch_size,
               t.model.seq_len,
               o.model.stages.empty()
                   ? fmt::format("model {} (hidden {}, {})", o.model.model, o.model.hidden, o.model.dtype)
                   : fmt::format("your TorchScript stages ({})", t.model.dtype == torch::kFloat64 ? "float64" : "float32"),
               count_of(o.steps, "step"));
  if (lead && restart_count() > 0 && o.checkpoint_dir.empty())
    fmt::print(stderr, "dualpipe: warning: restarted without --checkpoint-dir: starting again at step 1\n");
  if (text && t.checkpoint.resume_step > 0)
    fmt::print("resuming from {} after step {}\n", checkpoint_path(t.checkpoint.dir, t.checkpoint.resume_step),
               t.checkpoint.resume_step);
  RunReport rr;
  rr.tokens_per_step = p.tokens_per_step;
  if (lead) rr.earlier = earlier_loss(o.loss_csv, t.checkpoint.resume_step);
  if (lead && o.loss_csv != "-") write_output(o.loss_csv, kLossCsvHeader + rr.earlier.rows);
  RankRun run;
  try {
    run = train_rank(s, t, mesh, Progress(o, t, p.tokens_per_step, lead));
  } catch (const DivergedError& e) {
    // Every rank stops here together; rank 0 says why, once.
    if (lead) fmt::print(stderr, "dualpipe: error: {}\n", e.what());
    std::fflush(stdout);
    return kDivergedExitCode;
  }
  // The first pipeline's timeline (its ranks are ranks 0..P-1) and every rank's heap.
  rr.steps = run.steps;
  rr.times = gather_times(s, run.last_times, *mesh.pipeline);
  rr.a2a_waits = gather_a2a_waits(run.last_idle, *mesh.pipeline);
  rr.heap = gather_value(run.peak_heap_bytes, *mesh.world);
  rr.optimizer = gather_value(run.optimizer_bytes, *mesh.world);
  if (!t.track_memory) rr.heap.clear();
  if (lead && !rr.steps.empty()) report(o, s, t, rr);
  if (!run.interrupted) return 0;
  if (lead) say_what_was_kept(o, t, run);
  return kInterruptedExitCode;
}

// The command itself, once its options are parsed: returns the exit code.
int train_command(Opts& o) {
  validate(o);
  catch_interrupts();  // the first Ctrl-C asks the ranks to stop after their step
  PipedScheduleCopy piped(o.src);  // --from <(cmd): read once, copied for the rank processes
  const bool lead = is_lead_process();
  // Every output, before any rank starts (given as "" is refused, not
  // skipped), once: by the process that writes them.
  if (lead) check_outputs(o);
  // Held by the lead process until the run ends, before anything in the folder is read or written.
  std::optional<CheckpointLock> lock;
  if (!o.checkpoint_dir.empty() && lead) lock.emplace(o.checkpoint_dir);
  const TrainPlan p = build_plan(o, lead);
  if (p.nothing_to_train) return 0;
  return launch_ranks(o.ranks, p.schedule.ranks, [&](const Mesh& mesh) { return train_on_rank(o, p, mesh); });
}

}  // namespace

void add_train_command(CLI::App* app, CommandRun& run) {
  auto o = std::make_shared<Opts>();
  o->src.method = "dualpipe";
  o->src.ranks = 2;
  o->src.micro_batches = 8;
  o->model.model = "gpt";
  // About a minute on a 2-core machine, long enough for the loss to fall clearly.
  o->model.seq_len = 32;
  o->model.micro_batch_size = 4;
  auto* cmd = app->add_subcommand("train", std::string(torch_command_summary("train")));
  add_source_options(cmd, o->src);
  o->src.micro_batches_opt->description(
      "micro-batches N per training step (default: 8, or 2P when that is more: DualPipe overlaps fully from N = 2P)");
  add_model_options(cmd, o->model);
  add_rank_options(cmd, o->ranks);
  cmd->add_option("--steps", o->steps, "training steps")->capture_default_str();
  cmd->add_option("--lr", o->lr, "AdamW learning rate")->capture_default_str();
  o->warmup_opt = cmd->add_option("--warmup-steps", o->warmup_steps,
                  "learning-rate warm-up: the rate rises linearly to --lr over the first W steps (default: a tenth "
                  "of --steps, at most 50; 0: off)");
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--clip", o->clip, "clip the global gradient norm to this (0: off)")->capture_default_str();
  cmd->add_option("--loss-csv", o->loss_csv, "write the loss curve as CSV")->capture_default_str();
  cmd->add_option("--loss-svg", o->loss_svg, "write the loss curve as SVG")->capture_default_str();
  cmd->add_option("--load-svg", o->load_svg,
                  "models with experts: write the expert load per step (max/mean tokens per expert, mean over MoE "
                  "blocks) as SVG (default: none)");
  o->trace_opt = cmd->add_option("--trace", o->trace, "write the last step's measured timeline as a Chrome trace");
  o->svg_opt = cmd->add_option("--svg", o->svg, "write the last step's measured timeline as SVG");
  add_svg_width_option(cmd, o->svg_width);
  o->checkpoint_opt = cmd->add_option("--checkpoint-dir", o->checkpoint_dir,
                  "write checkpoints (parameters, AdamW state, step, RNG state) to DIR/step-NNNNNN/");
  cmd->add_option("--checkpoint-every", o->checkpoint_every,
                  "with --checkpoint-dir: a checkpoint every K steps and after the last (0: after the last only)")
      ->capture_default_str();
  cmd->add_option("--keep-checkpoints", o->keep_checkpoints, "complete checkpoints to keep; older ones are deleted")
      ->capture_default_str();
  cmd->add_flag("--resume", o->resume,
                "continue from the newest complete checkpoint in --checkpoint-dir (incomplete or corrupt ones are "
                "skipped; none: start from scratch); --steps counts from the start of the run");
  cmd->add_option("--max-restarts", o->ranks.max_restarts,
                  "when a rank process fails, stop the others and start them all again, from the newest checkpoint "
                  "in --checkpoint-dir (from step 1 without one), at most this many times (0..100)")
      ->capture_default_str();
  cmd->add_option("-f,--format", o->format,
                  "text, or json: the closing summary as one object with the inputs and results, and no progress "
                  "lines (docs/json_output.md)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  add_output_option(cmd, o->output);
  cmd->callback([o, &run] { run = [o] { return train_command(*o); }; });
}

}  // namespace dualpipe::cli
