// dualpipe bench: time pipeline steps (forward and backward of every
// micro-batch, sends, receives, replica gradient sums; no optimizer).
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cli/torch_common.h"
#include "schedule/error.h"
#include "schedule/lower.h"
#include "train/trainer.h"

namespace dp::cli {

void run_bench(CLI::App* app) {
  struct Opts {
    SourceOptions src;
    ModelOptions model;
    RankOptions ranks;
    int steps = 5;
    std::string format = "text";
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app->add_subcommand("bench", "time K pipeline steps after one warm-up step, one thread per rank");
  add_source_options(cmd, o->src);
  add_model_options(cmd, o->model);
  add_rank_options(cmd, o->ranks);
  cmd->add_option("--steps", o->steps, "timed steps K")->capture_default_str();
  cmd->add_option("-f,--format", o->format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->callback([o]() {
    if (o->steps < 1) throw Error(fmt::format("--steps must be at least 1 (got {})", o->steps));
    Schedule s = load_schedule(o->src);
    if (!s.has_comm()) s = lower(s);
    TrainOptions t;
    t.model = make_model_config(o->model, s);
    t.steps = o->steps;
    t.warmup_steps = 1;
    t.optimize = false;
    int code = launch_ranks(o->ranks, s.ranks, [&](std::shared_ptr<Comm> comm) {
      RankRun run = train_rank(s, t, comm);
      if (comm->rank != 0) return 0;
      std::vector<double> steps, pipes;
      for (const StepStats& st : run.steps) {
        steps.push_back(st.seconds);
        pipes.push_back(st.pipeline_seconds);
      }
      std::vector<double> sorted = steps;
      std::sort(sorted.begin(), sorted.end());
      const double med = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                           : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
      if (o->format == "json") {
        nlohmann::json j = {{"method", s.method},         {"ranks", s.ranks},
                            {"stages", s.stages},         {"micro_batches", s.micro_batches},
                            {"model", o->model.model},    {"hidden", o->model.hidden},
                            {"seq_len", o->model.seq_len}, {"micro_batch_size", o->model.micro_batch_size},
                            {"dtype", o->model.dtype},    {"median_step_s", med},
                            {"step_times", steps},        {"pipeline_times", pipes}};
        fmt::print("{}\n", j.dump(1));
      } else {
        fmt::print("bench {}: {} ranks, {} micro-batches, model {} (hidden {}, seq {}, micro-batch size {}), {}: "
                   "median step {:.4f} s over {} steps (min {:.4f}, max {:.4f})\n",
                   s.method, s.ranks, s.micro_batches, o->model.model, o->model.hidden, o->model.seq_len,
                   o->model.micro_batch_size, o->model.dtype, med, steps.size(), sorted.front(), sorted.back());
      }
      return 0;
    });
    if (code != 0) std::exit(code);
  });
}

}  // namespace dp::cli
