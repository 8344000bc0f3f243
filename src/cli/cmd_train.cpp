// dualpipe train: real training across pipeline ranks, with progress, the loss
// curve, and the measured step set against the simulator's prediction.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "schedule/stats.h"
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
#include "schedule/words.h"
#include "dualpipe/train/diverged.h"
#include "dualpipe/train/lr_warmup.h"
#include "dualpipe/train/trainer.h"

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
  std::string checkpoint_dir;
  CLI::Option *trace_opt = nullptr, *svg_opt = nullptr, *checkpoint_opt = nullptr;  // given (maybe as "")
  int checkpoint_every = 100, keep_checkpoints = 2;
  bool resume = false;
  std::string format = "text";
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

// Rank 0's closing report: the loss curve files, the measured last step
// against the simulator, and memory; as text or (--format json) one object.
void report(const Opts& o, const Schedule& s, const TrainOptions& t, const RankRun& run,
            const std::vector<std::vector<ActionTime>>& times, const std::vector<std::vector<Span>>& a2a_waits,
            const std::vector<double>& heap, double tokens_per_step, const EarlierLoss& earlier) {
  std::vector<double> xs, ys, secs;
  std::string csv = kLossCsvHeader;
  for (const StepStats& st : run.steps) {
    xs.push_back(st.step + 1);
    ys.push_back(st.loss);
    secs.push_back(st.seconds);
    csv += loss_csv_row(st);
  }
  if (o.loss_csv == "-") write_output(o.loss_csv, csv);  // a file got its rows step by step
  // The whole run's curve, the steps before a resume included.
  std::vector<double> all_x = earlier.steps, all_y = earlier.losses;
  all_x.insert(all_x.end(), xs.begin(), xs.end());
  all_y.insert(all_y.end(), ys.begin(), ys.end());
  write_output(o.loss_svg, line_chart_svg(fmt::format("{} on {} ranks: training loss", s.method, s.ranks), "step",
                                          "loss (mean over micro-batches)", all_x, all_y));
  const double med = median(secs);
  const StepStats& last = run.steps.back();

  // The simulator fed with what each action really cost.
  SimResult measured = measured_result(s, times);
  // moe across expert ranks: the stretches each rank stood idle waiting for
  // an all-to-all, drawn hatched over its timeline.
  bool any_wait = false;
  for (const auto& w : a2a_waits) any_wait = any_wait || !w.empty();
  if (any_wait) measured.a2a_waits = a2a_waits;
  Costs c = measured_costs(s, times);
  SimResult predicted = simulate(compute_only(s), c);
  const double step = last.pipeline_seconds;
  SvgOptions so;
  so.title = fmt::format("{} P={} N={}: measured step {:.4f} s", s.method, s.ranks, s.micro_batches, step);
  so.subtitle = "real timeline of the last training step (receive waits shown as idle)";
  if (!o.svg.empty()) write_output(o.svg, timeline_svg(s, measured, so));
  if (!o.trace.empty()) write_output(o.trace, chrome_trace(s, measured, 1e6));

  if (o.format == "json") {
    nlohmann::json inputs = run_inputs_json(s, o.model, o.ranks, t.model.seed);
    inputs.update({{"steps", o.steps},
                   {"lr", t.lr},
                   {"warmup_steps", t.lr_warmup_steps},
                   {"weight_decay", t.weight_decay},
                   {"clip", t.clip},
                   {"resume_step", t.checkpoint.resume_step}});
    nlohmann::json j = {{"command", "train"},
                        {"inputs", inputs},
                        {"steps_run", run.steps.size()},
                        {"first_step", run.steps.front().step + 1},
                        {"loss_first", clean_number(ys.front())},
                        {"loss_last", clean_number(ys.back())},
                        {"grad_norm_last", clean_number(last.grad_norm)},
                        {"median_step_s", clean_number(med)},
                        {"tokens_per_step", tokens_per_step},
                        {"tokens_per_s", clean_number(tokens_per_step / med, 4)},
                        {"last_step_pipeline_s", clean_number(step)},
                        {"simulated_pipeline_s", clean_number(predicted.makespan)},
                        {"bubble_s", clean_number(measured.bubble)},
                        {"simulated_bubble_s", clean_number(predicted.bubble)},
                        {"threads", threads_json()}};
    if (!heap.empty()) {
      nlohmann::json per = nlohmann::json::array();
      for (int r = 0; r < s.ranks; ++r)
        per.push_back({{"rank", r},
                       {"peak_heap_bytes", clean_number(heap[r], 4)},
                       {"simulated_peak_activations", predicted.per_rank[r].peak_activations}});
      j["memory"] = per;
    }
    if (!last.expert_tokens.empty()) {
      nlohmann::json tokens = nlohmann::json::array();
      for (double x : last.expert_tokens) tokens.push_back(clean_number(x));
      j["expert_tokens_last_step"] = tokens;
      j["balance_loss_last_step"] = clean_number(last.aux_loss, 4);
      j["expert_load_first_step"] = clean_number(run.steps.front().expert_load, 4);
      j["expert_load_last_step"] = clean_number(last.expert_load, 4);
      j["cross_host_share_last_step"] = clean_number(last.cross_host_share, 4);
    }
    nlohmann::json files = {{"loss_csv", o.loss_csv}, {"loss_svg", o.loss_svg}};
    if (!o.svg.empty()) files["svg"] = o.svg;
    if (!o.trace.empty()) files["trace"] = o.trace;
    j["files"] = files;
    fmt::print("{}\n", j.dump(1));
    return;
  }
  fmt::print("summary: loss {:.4f} -> {:.4f} over {}; median step {:.4f} s, {:.0f} tokens/s\n", ys.front(),
             ys.back(), count_of(static_cast<long long>(ys.size()), "step"), med, tokens_per_step / med);
  if (!last.expert_tokens.empty())
    fmt::print("{}\n{}\n", load_balance_line(last), expert_load_line(run.steps.front(), last));
  fmt::print("last step, pipeline part: measured {:.3f} ms, simulated from measured action costs {:.3f} ms "
             "(measured/simulated {:.3f}); bubble measured {:.3f} ms, simulated {:.3f} ms\n",
             1e3 * step, 1e3 * predicted.makespan, step / predicted.makespan, 1e3 * measured.bubble,
             1e3 * predicted.bubble);
  if (!heap.empty()) {
    std::string per;
    for (int r = 0; r < s.ranks; ++r)
      per += fmt::format("{}rank {}: {:.2f} MiB / {}", r ? "; " : "", r, heap[r] / (1 << 20),
                         count_of(static_cast<long long>(predicted.per_rank[r].peak_activations), "activation"));
    fmt::print("peak activation memory (heap growth during the step) against the simulated peak count: {}\n", per);
  }
  fmt::print("wrote {}, {}{}{}\n", o.loss_csv, o.loss_svg, o.svg.empty() ? "" : ", " + o.svg,
             o.trace.empty() ? "" : ", " + o.trace);
}

// The outputs can be written and none of them is an input.
void check_outputs(const Opts& o) {
  const std::vector<NamedPath> inputs = {{"--data", o.model.data}, {"--from", o.src.from}};
  auto output = [&](const char* option, const std::string& path) {
    require_output_file(option, path);
    require_not_an_input(option, path, inputs);
  };
  output("--loss-csv", o.loss_csv);
  output("--loss-svg", o.loss_svg);
  if (o.trace_opt->count() > 0) output("--trace", o.trace);
  if (o.svg_opt->count() > 0) output("--svg", o.svg);
  if (o.checkpoint_opt->count() > 0) require_output_folder("--checkpoint-dir", o.checkpoint_dir);
}

}  // namespace

void run_train(CLI::App* app) {
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
  o->trace_opt = cmd->add_option("--trace", o->trace, "write the last step's measured timeline as a Chrome trace");
  o->svg_opt = cmd->add_option("--svg", o->svg, "write the last step's measured timeline as SVG");
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
  cmd->add_option("-f,--format", o->format,
                  "text, or json: the closing summary as one object with the inputs and results, and no progress "
                  "lines (docs/json_output.md)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->callback([o]() {
    require_step_count(o->steps);
    if (o->checkpoint_every < 0)
      throw Error(fmt::format("--checkpoint-every must not be negative (got {})", o->checkpoint_every));
    if (o->keep_checkpoints < 1)
      throw Error(fmt::format("--keep-checkpoints must be at least 1 (got {})", o->keep_checkpoints));
    if (o->resume && o->checkpoint_dir.empty()) throw Error("--resume needs --checkpoint-dir");
    if (o->lr <= 0) throw Error(fmt::format("--lr must be positive (got {})", o->lr));
    const bool warmup_given = o->warmup_opt->count() > 0;
    if (warmup_given && o->warmup_steps < 0)
      throw Error(fmt::format("--warmup-steps must not be negative (got {})", o->warmup_steps));
    if (o->weight_decay < 0 || o->clip < 0) throw Error("--weight-decay and --clip must not be negative");
    // This runs in the launcher and again in every rank process; the launcher
    // (or rank 0 of a torchrun-style launch) is the one that prints and writes.
    const auto env = rank_from_env();
    const bool lead_process = !is_spawned_rank() && (!env || env->rank == 0);
    // Every output, before any rank starts (given as "" is refused, not
    // skipped), once: by the process that writes them.
    if (lead_process) check_outputs(*o);
    // The default N follows P: a fixed 8 would run `train -p 8` (DualPipe)
    // below the 2P micro-batches it needs to fill its bubbles.
    if (o->src.from.empty() && o->src.micro_batches_opt->count() == 0 && o->src.ranks > 0 &&
        o->src.ranks <= (1 << 24))  // beyond it generate() refuses P
      o->src.micro_batches = std::max(8, 2 * o->src.ranks);
    Schedule s = load_schedule(o->src);
    if (!s.has_comm()) s = lower(s);
    TrainOptions t = run_options(s, o->model, o->ranks, true);
    t.steps = o->steps;
    t.lr = o->lr;
    t.lr_warmup_steps = warmup_given ? o->warmup_steps : default_lr_warmup_steps(o->steps);
    t.weight_decay = o->weight_decay;
    t.clip = o->clip;
    t.track_memory = !o->ranks.threads;  // the heap is per process
    // Only real rank processes can be killed or stalled without taking the others along.
    if (!o->ranks.threads) t.fault = fault_from_env();
    // Held by the launching process (rank 0 of a torchrun-style launch) until
    // the run ends, before anything in the folder is read or written.
    std::optional<CheckpointLock> lock;
    if (!o->checkpoint_dir.empty() && lead_process) lock.emplace(o->checkpoint_dir);
    if (!o->checkpoint_dir.empty()) {
      CheckpointOptions& ck = t.checkpoint;
      ck.dir = o->checkpoint_dir;
      ck.every = o->checkpoint_every;
      ck.keep = o->keep_checkpoints;
      ck.identity = run_identity(s, t.model);
      add_mesh_identity(ck.identity, o->ranks);
      if (!o->resume) {
        check_no_checkpoint(ck.dir);
      } else if (auto found = find_checkpoint(ck.dir, ck.identity, [&](const std::string& w) {
                   if (lead_process) fmt::print(stderr, "dualpipe: warning: {}\n", w);
                 })) {
        if (found->step >= o->steps) {
          if (lead_process)
            fmt::print("checkpoint {} already has {} steps (--steps {}): nothing to train\n", found->path,
                       found->step, o->steps);
          return;
        }
        ck.resume_step = found->step;
      } else if (lead_process) {
        fmt::print(stderr, "dualpipe: warning: no complete checkpoint in {}: starting at step 1\n", ck.dir);
      }
    }
    const double tokens =
        static_cast<double>(static_cast<int64_t>(s.micro_batches) * o->ranks.ep * o->ranks.dp * o->model.micro_batch_size * o->model.seq_len);
    // What every rank must share: the schedule and model (as a checkpoint
    // names them, the corpus by content) and the training options.
    RankSettings settings;
    auto identity = run_identity(s, t.model);  // a named object: items() refers into it
    add_mesh_identity(identity, o->ranks);
    for (const auto& [key, v] : identity.items())
      settings.emplace_back(key, v.is_string() ? v.get<std::string>() : v.dump());
    for (const auto& [key, v] : {std::pair<std::string, double>{"lr", t.lr}, {"weight_decay", t.weight_decay},
                                 {"clip", t.clip}, {"steps", t.steps}, {"warmup_steps", t.lr_warmup_steps}})
      settings.emplace_back(key, fmt::format("{}", v));
    settings.emplace_back("fb_overlap", o->ranks.fb_overlap);
    if (!identity.contains("bucket_mb")) settings.emplace_back("bucket_mb", fmt::format("{}", o->ranks.bucket_mb));
    settings.emplace_back("overlap_grad_reduce", o->ranks.overlap_grad_reduce);
    int code = launch_ranks(o->ranks, s.ranks, [&](const Mesh& mesh) {
      if (!o->ranks.threads) check_same_settings(settings, *mesh.world);
      const bool lead = mesh.rank == 0;
      const bool text = o->format == "text";  // json: the summary alone on stdout
      if (lead && text)
        fmt::print("train {}: {}, {}, {} of {} x {} tokens; model {} (hidden {}, {}); {}\n", s.method,
                   count_of(s.ranks, "rank"), count_of(s.stages, "stage"), count_of(s.micro_batches, "micro-batch"),
                   o->model.micro_batch_size, o->model.seq_len, o->model.model, o->model.hidden, o->model.dtype,
                   count_of(o->steps, "step"));
      if (lead && text && t.checkpoint.resume_step > 0)
        fmt::print("resuming from {} after step {}\n", checkpoint_path(t.checkpoint.dir, t.checkpoint.resume_step),
                   t.checkpoint.resume_step);
      double elapsed = 0;
      const int every = std::max(1, o->steps / 25);
      const bool stream_csv = lead && o->loss_csv != "-";
      const EarlierLoss earlier = lead ? earlier_loss(o->loss_csv, t.checkpoint.resume_step) : EarlierLoss{};
      if (stream_csv) write_output(o->loss_csv, kLossCsvHeader + earlier.rows);
      RankRun run;
      try {
        run = train_rank(s, t, mesh, [&](const StepStats& st) {
        elapsed += st.seconds;
        if (stream_csv) append_output(o->loss_csv, loss_csv_row(st));
        const int done = st.step + 1, first = t.checkpoint.resume_step + 1;
        if (!text || (done % every && done != o->steps && done != first)) return;
        fmt::print("step {:>5}/{}  loss {:.4f}  grad-norm {:.3f}  {:>8.0f} tokens/s  step {:.3f} s  ETA {}{}\n", done,
                   o->steps, st.loss, st.grad_norm, tokens / st.seconds, st.seconds,
                   duration(elapsed / (done - first + 1) * (o->steps - done)),
                   st.expert_tokens.empty() ? std::string() : fmt::format("  expert load {:.2f}", st.expert_load));
        std::fflush(stdout);
        });
      } catch (const DivergedError& e) {
        // Every rank stops here together; rank 0 says why, once.
        if (lead) fmt::print(stderr, "dualpipe: error: {}\n", e.what());
        std::fflush(stdout);
        return kDivergedExitCode;
      }
      // The first pipeline's timeline (its ranks are ranks 0..P-1) and every rank's heap.
      auto times = gather_times(s, run.last_times, *mesh.pipeline);
      auto a2a_waits = gather_a2a_waits(run.last_idle, *mesh.pipeline);
      auto heap = gather_value(run.peak_heap_bytes, *mesh.world);
      auto optimizer = gather_value(run.optimizer_bytes, *mesh.world);
      if (lead) report(*o, s, t, run, times, a2a_waits, t.track_memory ? heap : std::vector<double>{}, tokens,
                        earlier);
      if (lead && text && !run.steps.empty()) {
        std::vector<double> waits;
        for (const StepStats& st : run.steps) waits.push_back(st.reduce_seconds);
        fmt::print("gradient reduction after the pipeline (not hidden): median {:.4f} s a step (slowest rank; "
                   "overlap with the step: {})\n",
                   median(waits), o->ranks.overlap_grad_reduce);
      }
      if (lead && text && !optimizer.empty())
        fmt::print("optimizer state (AdamW moments) per rank: {:.1f} KiB on rank 0, {:.1f} KiB the most (ZeRO-{})\n",
                   optimizer[0] / 1024, *std::max_element(optimizer.begin(), optimizer.end()) / 1024, o->ranks.zero);
      return 0;
    });
    if (code != 0) std::exit(code);
  });
}

}  // namespace dualpipe::cli
