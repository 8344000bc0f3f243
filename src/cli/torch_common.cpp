#include "cli/torch_common.h"

#include <fmt/format.h>

#include <cmath>

#include <algorithm>
#include <filesystem>
#include <thread>
#include <limits>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <list>

#include <sys/stat.h>
#include <unistd.h>

#include "cli/memory_fit.h"
#include "cli/words.h"
#include "dualpipe/cluster/emulated_cluster.h"
#include "dualpipe/runtime/backend.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/runtime/malloc_tuning.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe::cli {

void add_model_options(CLI::App* app, ModelOptions& o) {
  o.app = app;
  app->add_option("--model", o.model, "model: mlp, gpt, moe or deepseek")->capture_default_str();
  app->add_option("--dtype", o.dtype, "float32 or float64")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->capture_default_str();
  app->add_option("--hidden", o.hidden, "hidden size h (model width)")->capture_default_str();
  app->add_option("--ffn", o.ffn, "mlp: inner width of a stage (0: 4 x hidden)")->capture_default_str();
  app->add_option("--seq-len", o.seq_len, "sequence length")->capture_default_str();
  app->add_option("--micro-batch-size", o.micro_batch_size, "samples per micro-batch")->capture_default_str();
  app->add_option("--seed", o.seed_text, "seed of parameters, data and LibTorch's default generator (0..2^64-1)")
      ->default_str(std::to_string(o.seed));
  app->add_option("--layers", o.layers, "gpt: transformer blocks, spread evenly over the stages (0: max(stages, 4))")
      ->capture_default_str();
  app->add_option("--heads", o.heads, "gpt: attention heads (must divide --hidden)")->capture_default_str();
  app->add_option("--data", o.data,
                  "gpt, moe, deepseek: train on this text file, character by character (default: the built-in "
                  "corpus); with --stages: a .pt or .bin data file");
  app->add_option("--experts", o.experts, "moe: routed experts per block (a multiple of --ep)")->capture_default_str();
  app->add_option("--top-k", o.top_k, "moe: experts each token is sent to")->capture_default_str();
  app->add_option("--shared-expert", o.shared_expert, "moe: add a shared expert every token goes through (true/false)")
      ->capture_default_str();
  app->add_option("--expert-ffn", o.expert_ffn, "moe: inner width of an expert (0: 2 x hidden)")->capture_default_str();
  app->add_option("--stages", o.stages,
                  "your own model: one TorchScript file per pipeline stage, comma-separated, in stage order "
                  "(replaces --model; --data then names a torch.save file of inputs and targets)")
      ->delimiter(',');
  app->add_option("--loss", o.loss,
                  "with --stages: a TorchScript module whose forward(output, target) returns the loss (default: "
                  "cross-entropy for integer targets, mean squared error for floating ones)");
  app->add_option("--aux-alpha", o.aux_alpha, "moe: weight of the load-balancing loss (deepseek: the sequence-wise one)")
      ->capture_default_str();
  app->add_option("--kv-latent", o.kv_latent, "deepseek: compressed key-value latent d_c (0: hidden / 2)")
      ->capture_default_str();
  app->add_option("--q-latent", o.q_latent, "deepseek: compressed query latent d'_c (0: hidden / 2)")->capture_default_str();
  app->add_option("--rope-dim", o.rope_dim, "deepseek: decoupled RoPE width d_r per head (even)")->capture_default_str();
  app->add_option("--shared-experts", o.shared_experts, "deepseek: shared experts every token goes through")
      ->capture_default_str();
  app->add_option("--dense-layers", o.dense_layers, "deepseek: the first blocks keep a dense MLP")->capture_default_str();
  app->add_option("--expert-hosts", o.expert_hosts,
                  "deepseek: hosts the routed experts are grouped on (0: one per expert-parallel rank)")
      ->capture_default_str();
  app->add_option("--node-limit", o.node_limit, "deepseek: M, the hosts a token's experts may be on")
      ->capture_default_str();
  app->add_option("--bias-speed", o.bias_speed, "deepseek: how far an expert's selection bias moves after a step")
      ->capture_default_str();
  app->add_option("--mtp-weight", o.mtp_weight, "deepseek: weight of the multi-token-prediction loss (0: no MTP)")
      ->capture_default_str();
  app->add_option("--recompute", o.recompute,
                  "deepseek: what the backward redoes instead of keeping: none, selective (norms, attention "
                  "up-projections and scores, SwiGLU products) or full (each attention and dense FFN sublayer)")
      ->capture_default_str();
}

namespace {

// Sizes one CPU machine can hold. Without these, "--hidden 100000000" ends in
// LibTorch's allocation failure (an exception with a stack trace, exit 134)
// and "--seq-len 1000000" in minutes of swapping; with them the user learns
// the valid range before any rank starts.
constexpr int64_t kMaxDim = int64_t{1} << 20;        // hidden, ffn, seq-len, micro-batch size
constexpr int64_t kMaxLayers = 4096;                 // gpt blocks
constexpr double kMaxElements = double(int64_t{1} << 31);  // whole model's parameters; one activation tensor
// Ranks (processes or threads) one launch starts on one machine.
constexpr int kMaxRanks = kMaxLocalRanks;

void check_model_size(const ModelOptions& o, const Schedule& s) {
  auto in_range = [](const char* name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) throw Error(fmt::format("{} must be in {}..{} (got {})", name, lo, hi, v));
  };
  in_range("--hidden", o.hidden, 1, kMaxDim);
  in_range("--ffn", o.ffn, 0, kMaxDim);
  in_range("--seq-len", o.seq_len, 1, kMaxDim);
  in_range("--micro-batch-size", o.micro_batch_size, 1, kMaxDim);
  if (o.model != "mlp") {  // mlp ignores both
    in_range("--layers", o.layers, 0, kMaxLayers);
    in_range("--heads", o.heads, 1, o.hidden);
  }
  // In double: products of values up to 2^20 overflow 64 bits.
  const double h = static_cast<double>(o.hidden), rows = static_cast<double>(o.micro_batch_size) * static_cast<double>(o.seq_len);
  double params = 0, activation = 0;
  if (o.model != "mlp") {
    const double layers = o.layers > 0 ? o.layers : std::max(s.stages, 4);
    params = layers * 12 * h * h + (static_cast<double>(o.seq_len) + 256.0) * h * 2;  // blocks; embeddings and head (bytes vocab)
    activation = std::max(rows * 4 * h, static_cast<double>(o.micro_batch_size) * static_cast<double>(o.heads) *
                                                   static_cast<double>(o.seq_len) * static_cast<double>(o.seq_len));
  } else {
    const double ffn = o.ffn > 0 ? static_cast<double>(o.ffn) : 4 * h;
    params = static_cast<double>(s.stages) * 2 * h * ffn;
    activation = rows * std::max(h, ffn);
  }
  if (params > kMaxElements)
    throw Error(fmt::format("model too large: {:.3g} parameters over {} stages, at most {:.0f} are supported "
                            "(lower --hidden, --ffn or --layers)",
                            params, s.stages, kMaxElements));
  if (activation > kMaxElements)
    throw Error(fmt::format("micro-batch too large: one activation of {:.3g} elements, at most {:.0f} are supported "
                            "(lower --micro-batch-size, --seq-len or --hidden)",
                            activation, kMaxElements));
}

// --seed: a decimal integer in 0..2^64-1, refused like the other integer
// options when out of range or not a number (never wrapped or clamped).
uint64_t parse_seed(const ModelOptions& o) {
  if (o.seed_text.empty()) return o.seed;
  const std::string& t = o.seed_text;
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const Error bad(fmt::format("--seed must be in 0..{} (got {})", max, t));
  if (t.size() > 20 || !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) throw bad;
  uint64_t v = 0;
  for (char c : t) {
    const auto d = static_cast<uint64_t>(c - '0');
    if (v > (max - d) / 10) throw bad;
    v = v * 10 + d;
  }
  return v;
}

}  // namespace

namespace {

// Options that shape only some models: given with another, they would do
// nothing, silently.
void refuse_options_the_model_ignores(const ModelOptions& o) {
  const std::string model = o.stages.empty() ? o.model : "torchscript";
  const std::vector<std::string> blocks = {"gpt", "moe", "deepseek"}, experts = {"moe", "deepseek"};
  const std::vector<std::pair<const char*, std::vector<std::string>>> scoped = {
      {"--ffn", {"mlp"}},
      {"--layers", blocks},
      {"--heads", blocks},
      {"--data", {"gpt", "moe", "deepseek", "torchscript"}},
      {"--experts", experts},
      {"--top-k", experts},
      {"--shared-expert", {"moe"}},
      {"--expert-ffn", experts},
      {"--aux-alpha", experts},
      {"--kv-latent", {"deepseek"}},
      {"--q-latent", {"deepseek"}},
      {"--rope-dim", {"deepseek"}},
      {"--shared-experts", {"deepseek"}},
      {"--dense-layers", {"deepseek"}},
      {"--expert-hosts", {"deepseek"}},
      {"--node-limit", {"deepseek"}},
      {"--bias-speed", {"deepseek"}},
      {"--mtp-weight", {"deepseek"}},
      {"--recompute", {"deepseek"}}};
  for (const auto& [option, models] : scoped)
    if (o.given(option) && std::find(models.begin(), models.end(), model) == models.end())
      throw Error(fmt::format("{} applies to --model {}, not {}", option, listing(models, "or"),
                              model == "torchscript" ? std::string("your TorchScript stages") : model));
}

}  // namespace

ModelConfig make_model_config(const ModelOptions& o, const Schedule& s, int ep) {
  refuse_options_the_model_ignores(o);
  check_model_size(o, s);
  if (ep > 1 && !has_experts(o.model))
    throw Error(fmt::format("--ep {} shards experts, but --model {} has none (use --model moe)", ep, o.model));
  if (!o.loss.empty() && o.stages.empty()) throw Error("--loss goes with --stages (the shipped models have their own)");
  // A tensor or token-id file given to a shipped model would be read as text, byte by byte, and trained on.
  const std::string suffix = std::filesystem::path(o.data).extension().string();
  if (o.stages.empty() && (suffix == ".pt" || suffix == ".bin"))
    throw Error(fmt::format("--data {}: the shipped models read a text file, character by character; {} data files go "
                            "with --stages",
                            o.data, suffix));
  if (!o.stages.empty() && static_cast<int>(o.stages.size()) != s.stages)
    throw Error(fmt::format("--stages names {} TorchScript files, but the {} schedule on {} ranks has {} stages: give "
                            "one file per stage",
                            o.stages.size(), s.method, s.ranks, s.stages));
  ModelConfig mc;
  mc.name = o.stages.empty() ? o.model : "torchscript";
  mc.stage_files = o.stages;
  mc.loss_file = o.loss;
  mc.stages = s.stages;
  mc.micro_batches = s.micro_batches;
  mc.hidden = o.hidden;
  mc.ffn = o.ffn;
  mc.seq_len = o.seq_len;
  mc.micro_batch_size = o.micro_batch_size;
  mc.dtype = o.dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
  mc.seed = parse_seed(o);
  mc.layers = o.layers;
  mc.heads = o.heads;
  mc.data_path = o.data;
  mc.experts = o.experts;
  mc.top_k = o.top_k;
  mc.shared_expert = o.shared_expert;
  mc.expert_ffn = o.expert_ffn;
  mc.aux_alpha = o.aux_alpha;
  mc.kv_latent = o.kv_latent;
  mc.q_latent = o.q_latent;
  mc.rope_dim = o.rope_dim;
  mc.shared_experts = o.shared_experts;
  mc.dense_layers = o.dense_layers;
  mc.expert_hosts = o.expert_hosts;
  mc.node_limit = o.node_limit;
  mc.bias_speed = o.bias_speed;
  mc.mtp_weight = o.mtp_weight;
  mc.recompute = o.recompute;
  mc.ep = ep;
  const PipelineModel checked = make_model(mc);  // bad model options fail here, before any rank starts
  if (mc.name == "torchscript") {
    mc.dtype = checked.boundary_dtype;  // the stages' own
    // A data file's samples set the tokens a sample counts (its second dimension).
    if (!mc.data_path.empty()) {
      const torch::Tensor x = checked.input(0);
      mc.seq_len = x.dim() >= 2 ? x.size(1) : 1;
    }
  }
  return mc;
}

void add_rank_options(CLI::App* app, RankOptions& o) {
  o.app = app;
  app->add_flag("--threads", o.threads, "run the ranks as threads of this process instead of processes");
  app->add_option("--timeout", o.timeout_s,
                  "seconds a rank waits for another (a transfer, a collective, the rendezvous) before it gives up "
                  "and exits with an error naming that rank and what it waited for")
      ->capture_default_str();
  app->add_option("--sched", o.sched,
                  "CPU scheduling of the ranks and their communication threads: batch (SCHED_BATCH: fewer "
                  "wake-up preemptions, much lower per-transfer overhead on small machines) or normal")
      ->check(CLI::IsMember({"batch", "normal"}))
      ->capture_default_str();
  app->add_option("--ep", o.ep,
                  "expert-parallel degree E: the MoE experts are sharded over E ranks per pipeline stage, and the run "
                  "uses ranks x E processes (--model moe)")
      ->capture_default_str();
  app->add_option("--dp", o.dp,
                  "data-parallel degree D: D replicas of the whole pipeline, each on its own share of every batch "
                  "(ranks x E x D processes); gradients are summed over every holder of a parameter")
      ->capture_default_str();
  app->add_option("--zero", o.zero,
                  "1: ZeRO-1, AdamW state sharded over the holders of each parameter (reduce-scatter, update the "
                  "owned chunk, all-gather); 0: every holder keeps all of it")
      ->capture_default_str();
  app->add_option("--bucket-mb", o.bucket_mb, "gradient-reduction bucket size in MiB (one collective per bucket)")
      ->capture_default_str();
  app->add_option("--overlap-grad-reduce", o.overlap_grad_reduce,
                  "on: a stage's gradients start reducing as soon as its last weight-gradient work on the rank is "
                  "done (during the pipeline's cooldown); off: after the step")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app->add_option("--fb-overlap", o.fb_overlap,
                  "on: the two halves of an F&B pair hand the CPU to each other at communication points (all-to-alls, "
                  "pipeline receives), so one's communication hides behind the other's compute; off: forward, then "
                  "backward")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app->add_option("--emulate-hosts", o.emulate_hosts,
                  "run the rank processes on H emulated hosts: network namespaces on this machine joined by a bridge, "
                  "each host's link limited to --link-rate (needs root); the expert ranks of a stage go to different "
                  "hosts. 0: all ranks on this machine's loopback")
      ->capture_default_str();
  app->add_option("--link-rate", o.link_rate,
                  "with --emulate-hosts: each host's link rate in each direction, as tc writes it (100mbit, 1gbit, "
                  "10gbit)")
      ->capture_default_str();
  app->add_option("--emulate-device", o.emulate_device,
                  "K > 0: imitate an accelerator: every compute piece (the work between two communication points) "
                  "still runs, then the rank sleeps until K times its calibrated CPU time has passed, so that ranks "
                  "sharing few cores do not compete for them and communication overlaps as on a GPU. The first step "
                  "calibrates (printed); default: off");
  app->add_option("--comm-lane", o.comm_lane,
                  "on: each rank's collectives (all-to-alls, token counts) run one at a time in the order posted, "
                  "so one bulk transfer is on the link at a time; off: posted at once")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app->add_option("--fill-waits", o.fill_waits,
                  "on: a backward's weight gradients run while its all-to-alls are on the wire (what is left, "
                  "after its input gradient is sent), so a chunk outside an F&B pair hides them too; needs "
                  "--comm-lane on; off: computed where autograd reaches them")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app->add_option("--intra-op-threads", o.intra_op_threads,
                  "compute threads of each rank (LibTorch's intra-op pool and OpenBLAS), for ranks started here, "
                  "as threads or by a torchrun-style launcher alike; OMP_NUM_THREADS does not change it")
      ->capture_default_str();
  app->add_option("--backend", o.backend,
                  "c10d backend of the ranks' process groups: gloo, or nccl (each rank and its model on a CUDA "
                  "device, its local rank's; needs a build against a CUDA LibTorch with NCCL)")
      ->check(CLI::IsMember({"gloo", "nccl"}))
      ->capture_default_str();
}

// Steps of one run: far beyond any run this trainer makes on a CPU, and far
// from the end of int (bench adds a warm-up step).
constexpr int kMaxSteps = 10'000'000;

void require_step_count(int steps) {
  if (steps < 1) throw Error(fmt::format("--steps must be at least 1 (got {})", steps));
  if (steps > kMaxSteps) throw Error(fmt::format("--steps must be at most {} (got {})", kMaxSteps, steps));
}

TrainOptions run_options(const Schedule& s, const ModelOptions& m, const RankOptions& r, bool optimizer) {
  TrainOptions t;
  t.model = make_model_config(m, s, r.ep);
  require_run_fits(s, t.model, r, optimizer);
  t.fb_overlap = r.fb_overlap == "on";
  t.reduce = reduce_options(r);
  t.engine = engine_options(r);
  return t;
}

EngineOptions engine_options(const RankOptions& o) {
  EngineOptions e;
  e.lane = o.comm_lane == "on";
  e.fill_waits = o.fill_waits == "on" && e.lane;
  if (!o.emulate_device.empty()) {
    double k = 0;
    std::size_t used = 0;
    try {
      k = std::stod(o.emulate_device, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != o.emulate_device.size() || !std::isfinite(k) || k <= 0 || k > 1000)
      throw Error(fmt::format("--emulate-device must be a number in (0, 1000] (got '{}')", o.emulate_device));
    e.device_factor = k;
  }
  if (o.emulate_hosts > 0) e.link_bytes_per_s = static_cast<double>(parse_link_rate(o.link_rate).bits_per_second) / 8;
  return e;
}

ReduceOptions reduce_options(const RankOptions& o) {
  if (o.zero != 0 && o.zero != 1) throw Error(fmt::format("--zero must be 0 or 1 (got {})", o.zero));
  // Above 4 GiB a bucket is no longer a bucket; below a KiB, collectives of a few elements.
  if (!(o.bucket_mb >= 1.0 / 1024 && o.bucket_mb <= 4096))
    throw Error(fmt::format("--bucket-mb must be in 0.001..4096 (got {})", o.bucket_mb));
  ReduceOptions r;
  r.bucket_bytes = static_cast<int64_t>(o.bucket_mb * (1 << 20));
  r.overlap = o.overlap_grad_reduce == "on";
  r.zero = o.zero == 1;
  return r;
}

void add_mesh_identity(nlohmann::ordered_json& id, const RankOptions& o) {
  id["ep"] = o.ep;
  id["dp"] = o.dp;
  id["zero"] = o.zero;
  // ZeRO-1 shards the AdamW state by bucket: a checkpoint fits only its own bucket size.
  if (o.zero == 1) id["bucket_mb"] = o.bucket_mb;
}

PipedScheduleCopy::PipedScheduleCopy(SourceOptions& src) {
  struct stat st {};
  if (src.from.empty() || !is_lead_process() || ::stat(src.from.c_str(), &st) != 0 || !S_ISFIFO(st.st_mode)) return;
  std::ifstream in(src.from, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const char* tmp = std::getenv("TMPDIR");
  std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/dualpipe-schedule-XXXXXX";
  const int fd = ::mkstemp(path.data());
  if (fd < 0) throw Error(fmt::format("--from {}: cannot make a temporary copy of the piped schedule", src.from));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  path_ = path;
  if (!written) throw Error(fmt::format("--from {}: cannot write the temporary copy {}", src.from, path));
  // The rank processes re-run program_args: they read the copy.
  static std::list<std::string> replaced;  // keeps the new arguments' text alive (a list: it never moves them)
  for (int i = 1; i < program_args.argc; ++i) {
    const std::string arg = program_args.argv[i];
    if (arg == src.from) replaced.push_back(path);
    else if (arg == "--from=" + src.from) replaced.push_back("--from=" + path);
    else continue;
    program_args.argv[i] = replaced.back().data();
  }
  src.from = path;
}

PipedScheduleCopy::~PipedScheduleCopy() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

void apply_process_policy(const RankOptions& o) {
  quiet_library_logging();
  tune_malloc_for_tensors();
  // Before any rank thread, rank process or Gloo thread exists: they all inherit it.
  if (o.sched == "batch") use_batch_scheduling();
}

LaunchOptions launch_options(const RankOptions& o, int pipeline_ranks) {
  if (o.ep < 1 || o.ep > kMaxRanks) throw Error(fmt::format("--ep must be in 1..{} (got {})", kMaxRanks, o.ep));
  if (o.dp < 1 || o.dp > kMaxRanks) throw Error(fmt::format("--dp must be in 1..{} (got {})", kMaxRanks, o.dp));
  require_backend(parse_backend(o.backend));
  if (o.given("--link-rate") && o.emulate_hosts == 0)
    throw Error("--link-rate shapes the links of emulated hosts: it does nothing without --emulate-hosts");
  // Our own rank processes re-run these arguments; an outside launcher's do not start ranks of their own.
  if (rank_from_env() && !is_spawned_rank() && (o.threads || o.emulate_hosts > 0))
    throw Error(fmt::format("RANK is set, so this process is one rank of an outside launcher: {} starts ranks of its "
                            "own (unset RANK, or drop it)",
                            o.threads ? "--threads" : "--emulate-hosts"));
  if (rank_from_env() && !is_spawned_rank() && o.max_restarts > 0)
    throw Error("RANK is set, so this process is one rank of an outside launcher: restarts are that launcher's "
                "(torchrun --max-restarts); drop --max-restarts");
  LaunchOptions l;
  l.shape.pp = pipeline_ranks;
  l.shape.ep = o.ep;
  l.shape.dp = o.dp;
  if (l.shape.size() > kMaxRanks)
    throw Error(fmt::format("{} ranks x --ep {} x --dp {} = {} rank {}, more than the {} this launcher starts on one "
                            "machine",
                            pipeline_ranks, o.ep, o.dp, l.shape.size(), o.threads ? "threads" : "processes", kMaxRanks));
  l.threads = o.threads;
  l.emulate_hosts = o.emulate_hosts;
  l.link_rate = o.link_rate;
  l.timeout = std::chrono::seconds(o.timeout_s);
  l.intra_op_threads = o.intra_op_threads;
  l.max_restarts = o.max_restarts;
  l.backend = parse_backend(o.backend);
  l.args.assign(program_args.argv, program_args.argv + program_args.argc);
  check_launch_options(l);
  return l;
}

int launch_ranks(const RankOptions& o, int pipeline_ranks, const std::function<int(const Mesh&)>& body) {
  const LaunchOptions l = launch_options(o, pipeline_ranks);
  apply_process_policy(o);
  const unsigned cores = std::thread::hardware_concurrency();
  if (is_lead_process() && cores > 0 && static_cast<unsigned>(o.intra_op_threads) > cores)
    fmt::print(stderr, "dualpipe: warning: --intra-op-threads {} is more than this machine's {} cores: each rank's "
                       "threads will wait for one another\n",
               o.intra_op_threads, cores);
  // stderr: stdout may be one JSON document.
  if ((l.shape.ep > 1 || l.shape.dp > 1) && is_lead_process()) fmt::print(stderr, "{}", describe_layout(l.shape));
  return launch(l, body);
}

}  // namespace dualpipe::cli
