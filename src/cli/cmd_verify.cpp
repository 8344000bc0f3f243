// dualpipe verify: one step pipelined across P ranks against the same batch
// unpipelined in one process; exit 0 within tolerance, 1 outside it.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "cli/memory_fit.h"
#include "cli/output_paths.h"
#include "cli/summary_json.h"
#include "cli/torch_common.h"
#include "cli/torch_commands.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/verify.h"

namespace dualpipe::cli {
namespace {

double tolerance(const std::string& dtype) { return dtype == "float64" ? 1e-12 : 1e-5; }

// Losses, gradients and (when compared) the parameters after the step.
bool passed(const VerifyResult& r, double tol) {
  return r.loss_error <= tol && r.grad_error <= tol && r.param_error <= tol;
}

// A parameter's group: its name without the stage and with every number
// as N ("stage 3 block1.moe.expert7.fc.weight": "blockN.moe.expertN.fc.weight").
std::string group_of(const std::string& label) {
  std::string name = label;
  if (name.rfind("stage ", 0) == 0) name = name.substr(std::min(name.size(), name.find(' ', 6) + 1));
  std::string key;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i])))
      key += name[i];
    else if (i == 0 || !std::isdigit(static_cast<unsigned char>(name[i - 1])))
      key += 'N';
  return key;
}

// The differences as one aligned table: every parameter (--all-params), or
// the largest of each group with how many it holds, in first-seen order.
std::string per_param_table(const VerifyResult& r, bool all) {
  struct Row {
    std::string name;
    std::size_t count = 0;
    double largest = 0;
  };
  std::vector<Row> rows;
  for (const auto& [label, e] : r.per_param) {
    const std::string name = all ? label : group_of(label);
    auto it = std::find_if(rows.begin(), rows.end(), [&](const Row& x) { return x.name == name; });
    if (it == rows.end()) it = rows.insert(rows.end(), Row{name});
    ++it->count;
    it->largest = std::max(it->largest, e);
  }
  std::size_t w = all ? 9 : 15;
  for (const Row& x : rows) w = std::max(w, x.name.size());
  std::string t = all ? fmt::format("  {:<{}} {:>10}\n", "parameter", w, "difference")
                      : fmt::format("  {:<{}} {:>10} {:>10}\n", "parameter group", w, "parameters", "largest");
  for (const Row& x : rows)
    t += all ? fmt::format("  {:<{}} {:>10.3g}\n", x.name, w, x.largest)
             : fmt::format("  {:<{}} {:>10} {:>10.3g}\n", x.name, w, x.count, x.largest);
  return t;
}

// How many F&F pairs (pair_forwards) the schedule holds.
int forward_pairs(const Schedule& s) {
  int n = 0;
  for (const auto& list : s.actions)
    for (const Action& a : list) n += a.op == Op::FF;
  return n;
}

std::string report(const Schedule& s, const ModelOptions& m, const RankOptions& ro, const VerifyResult& r,
                   bool all_params) {
  const double tol = tolerance(m.dtype);
  const bool ok = passed(r, tol);
  const std::string model =
      m.stages.empty() ? fmt::format("model {} (hidden {}, seq {}, micro-batch size {})", m.model, m.hidden, m.seq_len,
                                     m.micro_batch_size)
                       : fmt::format("your TorchScript stages (micro-batch size {})", m.micro_batch_size);
  std::string t = fmt::format("verify {}: {} ranks, {} stages, {} micro-batches; {}, {}, {} ranks\n", s.method,
                              s.ranks, s.stages, s.micro_batches, model, m.dtype, ro.threads ? "thread" : "process");
  const int ff = forward_pairs(s);
  if (ro.ep > 1)
    t += fmt::format("expert parallel: {} x {} = {} ranks, {} experts (top {}), {} micro-batches in all; F&B overlap "
                     "{}{}\n",
                     s.ranks, ro.ep, s.ranks * ro.ep, m.experts, m.top_k, s.micro_batches * ro.ep, ro.fb_overlap,
                     ff > 0 ? fmt::format("; {} F&F pairs", ff) : "");
  if (ro.dp > 1 || ro.zero)
    t += fmt::format("data parallel: {} pipeline replicas, {} micro-batches in all (one process: all of them); ZeRO-{}; "
                     "gradient buckets of {:g} MiB, reduction overlapped with the step: {}\n",
                     ro.dp, s.micro_batches * ro.ep * ro.dp, ro.zero, ro.bucket_mb, ro.overlap_grad_reduce);
  const std::string after = r.param_error >= 0 ? fmt::format(", parameters after one AdamW step {:.3g}", r.param_error) : "";
  t += fmt::format("largest relative difference: losses {:.3g}, gradients {:.3g}{} (tolerance {:g}): {}\n",
                   r.loss_error, r.grad_error, after, tol, ok ? "PASS" : "FAIL");
  return t + per_param_table(r, all_params);
}

// --format json: the inputs, the differences as numbers (3 significant
// digits, as the text shows them) and the verdict, side by side.
nlohmann::json report_json(const Schedule& s, const ModelOptions& m, const RankOptions& ro, const ModelConfig& mc,
                           const VerifyResult& r) {
  const double tol = tolerance(m.dtype);
  nlohmann::json per_param = nlohmann::json::object();
  for (const auto& [name, e] : r.per_param) per_param[name] = clean_number(e, 3);
  nlohmann::json j = run_inputs_json(s, m, ro, mc.seed);
  j.update({{"loss_error", clean_number(r.loss_error, 3)},
            {"grad_error", clean_number(r.grad_error, 3)},
            {"tolerance", tol},
            {"param_error", r.param_error >= 0 ? nlohmann::json(clean_number(r.param_error, 3)) : nlohmann::json()},
            {"pass", passed(r, tol)},
            {"per_param", per_param},
            {"threads", threads_json()}});
  return j;
}

struct Opts {
  SourceOptions src;
  ModelOptions model;
  RankOptions ranks;
  std::string format = "text";
  std::string output = "-";
  bool all_params = false;
};

// The command itself, once its options are parsed: returns the exit code.
int verify_command(Opts& o) {
  if (is_lead_process()) require_output_file("--output", o.output);  // once, before any rank starts
  PipedScheduleCopy piped(o.src);  // --from <(cmd): read once, copied for the rank processes
  Schedule s = load_schedule(o.src);
  if (!s.has_comm()) s = lower(s);
  ModelConfig mc = make_model_config(o.model, s, o.ranks.ep);
  if (!o.model.stages.empty()) o.model.dtype = mc.dtype == torch::kFloat64 ? "float64" : "float32";  // the stages'
  require_run_fits(s, mc, o.ranks, false);
  const double tol = tolerance(o.model.dtype);
  // Every rank (own command line in a torchrun-style launch) must run the same check.
  RankSettings settings;
  Identity identity = run_identity(s, mc);
  add_mesh_identity(identity, o.ranks);
  VerifyOptions vo;
  vo.fb_overlap = o.ranks.fb_overlap == "on";
  vo.reduce = reduce_options(o.ranks);
  vo.engine = engine_options(o.ranks);
  // Sharded optimizer state is checked through the parameters after one step.
  vo.optimizer_step = vo.reduce.zero;
  for (const auto& [key, v] : identity.items())
    settings.emplace_back(key, v.is_string() ? v.get<std::string>() : v.dump());
  settings.emplace_back("fb_overlap", o.ranks.fb_overlap);
  settings.emplace_back("pair_forwards", o.src.pair_forwards);
  settings.emplace_back("bucket_mb", fmt::format("{}", o.ranks.bucket_mb));
  settings.emplace_back("overlap_grad_reduce", o.ranks.overlap_grad_reduce);
  return launch_ranks(o.ranks, s.ranks, [&](const Mesh& mesh) {
    if (!o.ranks.threads) check_same_settings(settings, *mesh.world);
    VerifyResult r = verify_step(s, mc, mesh, vo);
    if (mesh.rank == 0)
      write_output(o.output, o.format == "json" ? command_json("verify", report_json(s, o.model, o.ranks, mc, r))
                                                : report(s, o.model, o.ranks, r, o.all_params));
    return passed(r, tol) ? 0 : 1;
  });
}

}  // namespace

void add_verify_command(CLI::App* app, CommandRun& run) {
  auto o = std::make_shared<Opts>();
  o->model.dtype = "float64";
  o->model.hidden = 32;
  o->model.seq_len = 8;
  auto* cmd = app->add_subcommand("verify", std::string(torch_command_summary("verify")));
  add_source_options(cmd, o->src);
  add_model_options(cmd, o->model);
  add_rank_options(cmd, o->ranks);
  cmd->add_option("-f,--format", o->format, "text, or json: one object with the inputs and results (docs/json_output.md)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->add_flag("--all-params", o->all_params,
                "list every parameter's difference (default: the largest of each parameter group)");
  add_output_option(cmd, o->output);
  cmd->callback([o, &run] { run = [o] { return verify_command(*o); }; });
}

}  // namespace dualpipe::cli
