#include "cli/torch_common.h"

#include <fmt/format.h>

#include <cmath>

#include <algorithm>
#include <limits>

#include <cstdio>
#include <cstdlib>

#include "cli/memory_fit.h"
#include "cli/rank_process.h"
#include "dualpipe/cluster/emulated_cluster.h"
#include "dualpipe/runtime/launch.h"
#include "runtime/malloc_tuning.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/train/trainer.h"

namespace dualpipe::cli {

void add_model_options(CLI::App* app, ModelOptions& o) {
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
  app->add_option("--data", o.data, "gpt, moe: train on this text file (default: the built-in corpus)");
  app->add_option("--experts", o.experts, "moe: routed experts per block (a multiple of --ep)")->capture_default_str();
  app->add_option("--top-k", o.top_k, "moe: experts each token is sent to")->capture_default_str();
  app->add_option("--shared-expert", o.shared_expert, "moe: add a shared expert every token goes through (true/false)")
      ->capture_default_str();
  app->add_option("--expert-ffn", o.expert_ffn, "moe: inner width of an expert (0: 2 x hidden)")->capture_default_str();
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

ModelConfig make_model_config(const ModelOptions& o, const Schedule& s, int ep) {
  check_model_size(o, s);
  if (ep > 1 && !has_experts(o.model))
    throw Error(fmt::format("--ep {} shards experts, but --model {} has none (use --model moe)", ep, o.model));
  ModelConfig mc;
  mc.name = o.model;
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
  (void)make_model(mc);  // bad model options fail here, before any rank starts
  return mc;
}

void add_rank_options(CLI::App* app, RankOptions& o) {
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
  app->add_option("--intra-op-threads", o.intra_op_threads,
                  "compute threads of each rank (LibTorch's intra-op pool and OpenBLAS), for ranks started here, "
                  "as threads or by a torchrun-style launcher alike; OMP_NUM_THREADS does not change it")
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

namespace {

// Starts the P*E rank processes inside an emulated cluster and waits for
// them; the cluster is removed when this returns or throws (and, should the
// launcher die, by the kernel: its namespaces die with their holders).
int run_on_emulated_hosts(const RankOptions& o, const MeshShape& shape) {
  const LinkRate rate = parse_link_rate(o.link_rate);
  const std::vector<int> host_of = place_ranks(shape.pp, shape.ep * shape.dp, o.emulate_hosts);
  require_root_and_netns();
  EmulatedCluster cluster(o.emulate_hosts, rate);
  std::string where;
  for (int r = 0; r < shape.size(); ++r) where += fmt::format("{}{}:{}", r ? " " : "", r, host_of[r]);
  fmt::print(stderr, "emulated cluster: {} hosts at {} per link (rank:host {})\n", o.emulate_hosts, o.link_rate, where);
  std::vector<std::string> args{"/proc/self/exe"};
  for (int i = 1; i < program_args.argc; ++i) args.emplace_back(program_args.argv[i]);
  std::vector<pid_t> pids;
  for (int r = 0; r < shape.size(); ++r) {
    auto env = emulated_rank_env(cluster, host_of, r);
    env.emplace_back("DUALPIPE_SPAWNED", "1");
    env.emplace_back("OMP_NUM_THREADS", std::to_string(o.intra_op_threads));
    pids.push_back(cluster.spawn(host_of[r], args, env));
  }
  return supervise_ranks(pids);
}

}  // namespace

void check_same_settings(const RankSettings& mine, Comm& world) {
  // name=value lines, each a byte in a double (exact), zero-padded: the
  // SUM of rows that only their own rank fills is every rank's text.
  constexpr int64_t kBytes = 2048;
  std::string text;
  for (const auto& [name, value] : mine) text += name + "=" + value + "\n";
  text.resize(static_cast<std::size_t>(kBytes), '\0');
  torch::Tensor t = torch::zeros({world.world, kBytes}, torch::kFloat64);
  double* row = t.data_ptr<double>() + static_cast<int64_t>(world.rank) * kBytes;
  for (int64_t i = 0; i < kBytes; ++i) row[i] = static_cast<unsigned char>(text[static_cast<std::size_t>(i)]);
  world.all_reduce(t, c10d::ReduceOp::SUM, "the exchange of every rank's settings");
  auto settings_of = [&](int r) {
    std::string s;
    const double* v = t.data_ptr<double>() + static_cast<int64_t>(r) * kBytes;
    for (int64_t i = 0; i < kBytes && v[i] != 0; ++i) s += static_cast<char>(static_cast<unsigned char>(v[i]));
    std::vector<std::pair<std::string, std::string>> out;
    for (std::size_t at = 0; at < s.size();) {
      const std::size_t end = std::min(s.find('\n', at), s.size()), eq = s.find('=', at);
      if (eq < end) out.emplace_back(s.substr(at, eq - at), s.substr(eq + 1, end - eq - 1));
      at = end + 1;
    }
    return out;
  };
  const auto first = settings_of(0);
  for (int r = 1; r < world.world; ++r) {
    const auto other = settings_of(r);
    for (std::size_t i = 0; i < std::max(first.size(), other.size()); ++i) {
      const std::string name = i < first.size() ? first[i].first : other[i].first;
      const std::string a = i < first.size() ? first[i].second : "(none)", b = i < other.size() ? other[i].second : "(none)";
      if ((i < other.size() && other[i].first != name) || a != b)
        throw Error(fmt::format("the ranks were started with different settings: {} is {} on rank 0 but {} on rank {} "
                                "(start every rank with the same options)",
                                name, a, b, r));
    }
  }
}

void apply_process_policy(const RankOptions& o) {
  quiet_library_logging();
  tune_malloc_for_tensors();
  // Before any rank thread, rank process or Gloo thread exists: they all inherit it.
  if (o.sched == "batch") use_batch_scheduling();
}

int launch_ranks(const RankOptions& o, int pipeline_ranks, const std::function<int(const Mesh&)>& body) {
  // A day at most: beyond it a stalled rank is never reported in practice.
  if (o.timeout_s < 1 || o.timeout_s > 86400)
    throw Error(fmt::format("--timeout must be in 1..86400 seconds (got {})", o.timeout_s));
  if (o.ep < 1 || o.ep > kMaxRanks)
    throw Error(fmt::format("--ep must be in 1..{} (got {})", kMaxRanks, o.ep));
  if (o.intra_op_threads < 1 || o.intra_op_threads > 1024)
    throw Error(fmt::format("--intra-op-threads must be in 1..1024 (got {})", o.intra_op_threads));
  if (o.dp < 1 || o.dp > kMaxRanks) throw Error(fmt::format("--dp must be in 1..{} (got {})", kMaxRanks, o.dp));
  MeshShape shape;
  shape.pp = pipeline_ranks;
  shape.ep = o.ep;
  shape.dp = o.dp;
  if (shape.size() > kMaxRanks)
    throw Error(fmt::format("{} ranks x --ep {} x --dp {} = {} rank {}, more than the {} this launcher starts on one "
                            "machine",
                            pipeline_ranks, o.ep, o.dp, shape.size(), o.threads ? "threads" : "processes", kMaxRanks));
  if (o.emulate_hosts < 0) throw Error(fmt::format("--emulate-hosts must be at least 0 (got {})", o.emulate_hosts));
  if (o.emulate_hosts > 0 && o.threads)
    throw Error("--emulate-hosts runs rank processes: it does not go with --threads");
  const auto timeout = std::chrono::milliseconds(1000L * o.timeout_s);
  apply_process_policy(o);
  const auto env = rank_from_env();
  if ((shape.ep > 1 || shape.dp > 1) && !is_spawned_rank() && (!env || env->rank == 0)) {
    fmt::print(stderr, "{}", describe_layout(shape));  // stderr: stdout may be one JSON document
  }
  if (o.threads) {
    set_compute_threads(o.intra_op_threads);
    std::vector<int> codes(shape.size(), 0);
    run_mesh_threads(shape, [&](const Mesh& mesh) { codes[mesh.rank] = body(mesh); }, timeout);
    return codes[0];
  }
  if (env) {
    if (env->world != shape.size())
      throw Error(shape.size() > shape.pp
                      ? fmt::format("WORLD_SIZE={} but the mesh has {} ranks ({} pipeline x {} expert x {} data)",
                                    env->world, shape.size(), shape.pp, shape.ep, shape.dp)
                               : fmt::format("WORLD_SIZE={} but the schedule has {} ranks", env->world, shape.size()));
    // One intra-op thread per rank by default, also where no launcher of
    // ours set OMP_NUM_THREADS.
    set_compute_threads(o.intra_op_threads);
    require_resolvable(env->master_addr, env->master_port);
    // The store client's listener thread reads what the store sends for as
    // long as the run lasts; what it cannot take ends the rank in one line.
    UncaughtAsOneLine uncaught(fmt::format("rank {}: the rendezvous store at {}:{} sent what no store sends; is "
                                           "that port free of other programs?",
                                           env->rank, env->master_addr, env->master_port));
    Mesh mesh;
    try {
      // Every wait of the rendezvous is bounded by --timeout, plus a second
      // for the waits inside to report what they waited for first.
      RendezvousDeadline deadline(
          timeout + std::chrono::seconds(1),
          fmt::format("rank {}: cannot meet the other ranks at {}:{} within {} s (no rendezvous completed: are all "
                      "ranks started, and is that port free of other programs?)",
                      env->rank, env->master_addr, env->master_port, o.timeout_s));
      if (env->rank != 0) require_rendezvous_store(env->master_addr, env->master_port, timeout);
      mesh = connect_env_mesh(*env, shape, timeout);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      std::string why = e.what();
      throw Error(fmt::format("rank {}: cannot meet the other ranks at {}:{} within {} s ({})", env->rank,
                              env->master_addr, env->master_port, o.timeout_s, why.substr(0, why.find('\n'))));
    }
    try {
      return body(mesh);
    } catch (const PeerError& e) {
      // Leave at once: unwinding would destroy the process groups, whose
      // destructors wait for Gloo work still blocked on the dead or stalled peer.
      fmt::print(stderr, "dualpipe: error: {}\n", e.what());
      std::fflush(stdout);
      std::fflush(stderr);
      std::_Exit(2);
    }
  }
  if (o.emulate_hosts > 0) return run_on_emulated_hosts(o, shape);
  return spawn_local_ranks(shape.size(), program_args.argc, program_args.argv);
}

}  // namespace dualpipe::cli
