#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/model_settings.h"
#include "dualpipe/train/torchscript.h"
#include "train/remove_tree.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "dualpipe/schedule/error.h"
#include "train/corpus_text.h"

namespace dualpipe {
namespace fs = std::filesystem;
namespace {

constexpr const char* kManifest = "manifest.json";
constexpr const char* kFormat = "dualpipe-checkpoint";
constexpr int kVersion = 1;

std::string rank_file(int rank) { return fmt::format("rank-{}.pt", rank); }

std::string hex64(uint64_t x) { return fmt::format("{:016x}", x); }

// LibTorch's errors carry a backtrace; one line of them is enough here.
std::string first_line(const std::exception& e) {
  const c10::Error* ce = dynamic_cast<const c10::Error*>(&e);
  std::string s = ce ? ce->what_without_backtrace() : e.what();
  return s.substr(0, s.find('\n'));
}

[[noreturn]] void io_error(const std::string& what, const std::string& path) {
  throw Error(fmt::format("cannot {} {}: {}", what, path, std::strerror(errno)));
}

// Makes a rename (or a new entry) in `dir` durable.
void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) io_error("open the folder", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) io_error("sync the folder", dir);
}

// Temporary file, fsync, rename, fsync of the folder: a reader sees the old
// file or the whole new one, never a torn one, even after a power cut.
void write_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) io_error("create", tmp);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      io_error("write", tmp);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    io_error("sync", tmp);
  }
  if (::close(fd) != 0) io_error("close", tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) io_error("rename into place", path);
  fsync_dir(fs::path(path).parent_path().string());
}

// A manifest lists one small entry per rank: far below this.
constexpr uint64_t kMaxManifestBytes = uint64_t{1} << 20;

// A checkpoint file read whole, or why not: "missing", "not a regular file"
// (a FIFO would block the reader, a link to /dev/zero grow it without end),
// "has N bytes, the manifest says M" (checked before reading), or an error.
struct FileRead {
  std::optional<std::string> bytes;
  std::string problem;
};

FileRead read_checkpoint_file(const std::string& path, const std::string& name, uint64_t max_bytes,
                              bool exact_size) {
  // Without blocking: opening a FIFO for reading waits for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return {std::nullopt, errno == ENOENT ? name + " is missing" : name + " cannot be opened"};
  FileRead r;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    r.problem = name + " is not a regular file";
  } else if (const auto size = static_cast<uint64_t>(st.st_size); exact_size ? size != max_bytes : size > max_bytes) {
    r.problem = exact_size ? fmt::format("{} has {} bytes, the manifest says {}", name, size, max_bytes)
                           : fmt::format("{} has {} bytes, more than the {} a manifest has", name, size, max_bytes);
  } else {
    std::string bytes(size, '\0');
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    if (done == bytes.size())
      r.bytes = std::move(bytes);
    else
      r.problem = name + " could not be read whole";
  }
  ::close(fd);
  return r;
}

// The manifest's text; `problem` "" and no bytes when there is none.
FileRead read_manifest(const std::string& dir) {
  FileRead r = read_checkpoint_file((fs::path(dir) / kManifest).string(), kManifest, kMaxManifestBytes, false);
  if (!r.bytes && r.problem == std::string(kManifest) + " is missing") r.problem.clear();
  return r;
}

// The step of a name "step-NNNNNN", or none.
std::optional<int> step_of(const std::string& name) {
  if (name.size() < 6 || name.compare(0, 5, "step-") != 0) return std::nullopt;
  const std::string digits = name.substr(5);
  if (digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return std::nullopt;
  return std::stoi(digits);
}

// Every step-NNNNNN folder of `dir`, by step.
std::vector<std::pair<int, std::string>> step_dirs(const std::string& dir) {
  std::vector<std::pair<int, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto step = step_of(e.path().filename().string());
    if (step && e.is_directory(ec)) out.emplace_back(*step, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Throws dualpipe::Error naming what a checkpoint to come could not replace:
// a step-NNNNNN that is not a folder, or in one a rank file or manifest that
// is a folder (a file is renamed into place, which cannot replace a folder).
// Found at the start of a run, not at the step that would write there.
void check_folder_shape(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!step_of(name)) continue;
    if (!e.is_directory(ec))
      throw Error(fmt::format("checkpoint folder {}: {} is not a folder, and a checkpoint may be written there: "
                              "remove it",
                              dir, name));
    for (const auto& f : fs::directory_iterator(e.path(), ec)) {
      const std::string file = f.path().filename().string();
      const bool ours = file == kManifest || (file.rfind("rank-", 0) == 0 && file.size() > 3 &&
                                              file.compare(file.size() - 3, 3, ".pt") == 0);
      if (ours && f.is_directory(ec))
        throw Error(fmt::format("checkpoint folder {}: {}/{} is a folder where a checkpoint file goes: remove it",
                                dir, name, file));
    }
  }
}

std::string show(const nlohmann::ordered_json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// One line naming how the checkpoint's run differs from this one.
std::string mismatch(const std::string& path, const Identity& made, const Identity& run) {
  if (made.value("method", nlohmann::ordered_json()) != run["method"] ||
      made.value("ranks", nlohmann::ordered_json()) != run["ranks"])
    return fmt::format("checkpoint {} was made by {} with {} ranks; this run is {} with {} ranks", path,
                       show(made.value("method", nlohmann::ordered_json("?"))),
                       show(made.value("ranks", nlohmann::ordered_json("?"))), show(run["method"]),
                       show(run["ranks"]));
  std::string was, is;
  auto add = [&](const std::string& key) {
    const auto a = made.value(key, nlohmann::ordered_json()), b = run.value(key, nlohmann::ordered_json());
    if (a == b) return;
    was += fmt::format("{}{} {}", was.empty() ? "" : ", ", key, a.is_null() ? "(none)" : show(a));
    is += fmt::format("{}{} {}", is.empty() ? "" : ", ", key, b.is_null() ? "(none)" : show(b));
  };
  for (const auto& [key, v] : run.items()) add(key);
  for (const auto& [key, v] : made.items())
    if (!run.contains(key)) add(key);
  return fmt::format("checkpoint {} was made with {}; this run has {}", path, was, is);
}

// A field of the manifest's run whose JSON type differs from this run's
// (a hand-edited or damaged manifest: "hidden": "16"), or "" if none. Such a
// manifest is corrupt, not another run, and comparing across types would
// print "made with hidden 16; this run has hidden 16".
std::string type_problem(const nlohmann::ordered_json& made, const Identity& run) {
  for (const auto& [key, v] : run.items()) {
    if (!made.contains(key)) continue;
    const auto& m = made[key];
    if (m.is_number() != v.is_number() || (!v.is_number() && m.type() != v.type()))
      return fmt::format("corrupt (manifest.json: run.{} is a {}, not a {})", key, m.type_name(), v.type_name());
  }
  return "";
}

std::string problem_of(const std::string& path, int step, const Identity& identity);

// Why the checkpoint at `path` is not usable, or "" if it is complete and
// intact. Throws dualpipe::Error if it belongs to another run.
std::string problem(const std::string& path, int step, const Identity& identity) {
  try {
    return problem_of(path, step, identity);
  } catch (const nlohmann::json::exception& e) {
    // A field of the wrong type (e.g. "step": "3"): corrupt like any other damage.
    const std::string what = e.what();
    return fmt::format("corrupt (manifest.json: {})", what.substr(0, what.find('\n')));
  }
}

std::string problem_of(const std::string& path, int step, const Identity& identity) {
  const FileRead text = read_manifest(path);
  if (!text.problem.empty()) return fmt::format("corrupt ({})", text.problem);
  if (!text.bytes) return "incomplete (no manifest.json: the run stopped while writing it)";
  nlohmann::ordered_json m;
  try {
    m = nlohmann::ordered_json::parse(*text.bytes);
  } catch (const std::exception&) {
    return "corrupt (manifest.json is not valid JSON)";
  }
  if (!m.is_object() || m.value("format", "") != kFormat || m.value("version", 0) != kVersion ||
      m.value("step", -1) != step || !m.contains("run") || !m["run"].is_object() || !m.contains("files") ||
      !m["files"].is_array())
    return "corrupt (manifest.json is not a dualpipe checkpoint manifest of this step)";
  if (std::string why = type_problem(m["run"], identity); !why.empty()) return why;
  if (m["run"] != identity) throw Error(mismatch(path, m["run"], identity));
  // A file per rank of the whole mesh: the pipeline's ranks times the expert
  // and data-parallel degrees, where the run has them.
  const int ranks = identity.value("ranks", 0) * identity.value("ep", 1) * identity.value("dp", 1);
  if (static_cast<int>(m["files"].size()) != ranks)
    return fmt::format("corrupt (manifest.json lists {} files for {} ranks)", m["files"].size(), ranks);
  for (int r = 0; r < ranks; ++r) {
    const auto& f = m["files"][static_cast<std::size_t>(r)];
    if (!f.is_object() || f.value("name", "") != rank_file(r)) return "corrupt (manifest.json's file list)";
    const FileRead file = read_checkpoint_file((fs::path(path) / rank_file(r)).string(), rank_file(r),
                                               f.value("bytes", uint64_t{0}), true);
    if (!file.bytes) return fmt::format("corrupt ({})", file.problem);
    const std::string& bytes = *file.bytes;
    if (hex64(fnv1a64(bytes.data(), bytes.size())) != f.value("fnv1a64", ""))
      return fmt::format("corrupt ({} fails its checksum)", rank_file(r));
  }
  return "";
}

// The corpus by content, not by the path as typed: the same text moved or
// reached by another path resumes; other text behind the same path does not.
std::string corpus_identity(const std::string& path) {
  if (path.empty()) return "built-in corpus";
  std::string text;
  try {
    text = read_corpus_text(path);
  } catch (const Error&) {
    return path;  // unreadable: the corpus loader reports it
  }
  return fmt::format("text of {} bytes, fnv1a64 {}", text.size(), hex64(fnv1a64(text.data(), text.size())));
}

uint64_t schedule_hash(const Schedule& s) {
  uint64_t h = fnv1a64(nullptr, 0);
  for (const auto& list : s.actions) {
    for (const Action& a : list) {
      const std::string t = to_string(a) + ",";
      h = fnv1a64(t.data(), t.size(), h);
    }
    h = fnv1a64("\n", 1, h);
  }
  return h;
}

}  // namespace

uint64_t fnv1a64(const void* data, std::size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

std::string checkpoint_path(const std::string& dir, int step) {
  return (fs::path(dir) / fmt::format("step-{:06}", step)).string();
}

namespace {

// The fields of an aggregate, counted as the most initializers its braces
// take (each initializer converts to any field's type).
struct AnyField {
  template <class T>
  operator T() const;  // never called: only in unevaluated braces
};
template <class T, class... A>
constexpr auto takes(int) -> decltype(T{std::declval<A>()...}, true) {
  return true;
}
template <class T, class... A>
constexpr bool takes(...) {
  return false;
}
template <class T, class... A>
constexpr int field_count() {
  if constexpr (takes<T, A..., AnyField>(0))
    return field_count<T, A..., AnyField>();
  else
    return static_cast<int>(sizeof...(A));
}

// The names for_each_model_setting lists; a new field of ModelConfig
// changes field_count and stops the build here until it is listed.
constexpr int kListedModelSettings = 33;
static_assert(field_count<ModelConfig>() == kListedModelSettings,
              "a field was added to ModelConfig: list it in for_each_model_setting");

}  // namespace

int model_config_fields() { return field_count<ModelConfig>(); }

void for_each_model_setting(const ModelConfig& m,
                            const std::function<void(const char*, const nlohmann::ordered_json&, bool)>& f) {
  const bool own = m.name == "torchscript";  // the stages' files make the model (train/torchscript.h)
  const bool mlp = m.name == "mlp", blocks = !mlp && !own, moe = has_experts(m.name), ds = m.name == "deepseek";
  f("model", m.name, true);
  f("stages", m.stages, false);                // the schedule's
  f("micro_batches", m.micro_batches, false);  // the schedule's
  f("hidden", m.hidden, !own);
  f("ffn", mlp_ffn(m), mlp);
  f("seq_len", m.seq_len, true);
  f("micro_batch_size", m.micro_batch_size, true);
  f("dtype", m.dtype == torch::kFloat64 ? "float64" : "float32", !own);
  f("seed", m.seed, true);
  f("device", m.device.str(), false);  // the rank's: a checkpoint holds CPU copies and loads onto any device
  f("layers", m.layers > 0 ? m.layers : std::max(m.stages, 4), blocks);
  f("heads", m.heads, blocks);
  if (own)
    f("data", m.data_path.empty() ? corpus_identity("") : file_identity(m.data_path), true);
  else
    f("data", blocks ? corpus_identity(m.data_path) : m.data_path, blocks);
  f("experts", m.experts, moe);
  f("top_k", m.top_k, moe);
  f("shared_expert", m.shared_expert, m.name == "moe");
  f("expert_ffn", moe_expert_ffn(m), moe);
  f("aux_alpha", m.aux_alpha, moe);
  f("ep", m.ep, false);                    // the mesh's (the launcher adds it)
  f("ep_rank", m.ep_rank, false);          // differs between the ranks of a run
  f("data_shards", m.data_shards, false);  // the mesh's
  // By content: ranks (or a resume) with other files under the same names are refused.
  nlohmann::ordered_json files = nlohmann::ordered_json::array();
  for (const std::string& path : m.stage_files) files.push_back(file_identity(path));
  f("stage_files", files, own);
  f("loss_file", m.loss_file.empty() ? std::string("default") : file_identity(m.loss_file), own);
  f("kv_latent", m.kv_latent, ds);
  f("q_latent", m.q_latent, ds);
  f("rope_dim", m.rope_dim, ds);
  f("shared_experts", m.shared_experts, ds);
  f("dense_layers", m.dense_layers, ds);
  f("expert_hosts", m.expert_hosts, ds);  // 0: one per expert rank (the mesh's E is in the identity)
  f("node_limit", m.node_limit, ds);
  f("bias_speed", m.bias_speed, ds);
  f("mtp_weight", m.mtp_weight, ds);
  f("recompute", m.recompute, false);  // the same values either way: a run may resume with another
}

Identity run_identity(const Schedule& lowered, const ModelConfig& m) {
  Identity id;
  id["method"] = lowered.method;
  id["ranks"] = lowered.ranks;
  id["stages"] = lowered.stages;
  id["micro_batches"] = lowered.micro_batches;
  // Two schedules of one shape may place stages differently (e.g. two CSV files).
  id["schedule_fnv1a64"] = hex64(schedule_hash(lowered));
  for_each_model_setting(m, [&](const char* name, const nlohmann::ordered_json& value, bool used) {
    if (used) id[name] = value;
  });
  return id;
}

std::optional<FoundCheckpoint> find_checkpoint(const std::string& dir, const Identity& identity,
                                               const std::function<void(const std::string&)>& warn) {
  check_folder_shape(dir);
  auto dirs = step_dirs(dir);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    const std::string why = problem(it->second, it->first, identity);
    if (why.empty()) return FoundCheckpoint{it->first, it->second};
    if (warn) warn(fmt::format("skipping checkpoint {}: {}", it->second, why));
  }
  return std::nullopt;
}

CheckpointLock::CheckpointLock(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("cannot create the checkpoint folder {}: {}", dir, ec.message()));
  const std::string path = (fs::path(dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) io_error("open the lock file", path);
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw Error(fmt::format("checkpoint folder {} is in use by another run (it holds {}): wait for it to end, or "
                              "choose another --checkpoint-dir",
                              dir, path));
    errno = err;
    io_error("lock", path);
  }
}

CheckpointLock::~CheckpointLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

void check_no_checkpoint(const std::string& dir) {
  check_folder_shape(dir);
  for (const auto& [step, path] : step_dirs(dir))
    if (fs::exists(fs::path(path) / kManifest))
      throw Error(fmt::format("{} already holds checkpoints of a run (e.g. {}): pass --resume to continue it, or "
                              "choose another --checkpoint-dir",
                              dir, path));
}

namespace {

// One rank's checkpoint file: the step, its stages' parameters and buffers,
// the optimizer state and the default generator's state.
std::string rank_file_bytes(int step, int rank, const std::map<int, Stage>& stages, torch::optim::Optimizer* optimizer) {
  torch::serialize::OutputArchive ar;
  ar.write("step", torch::tensor(static_cast<int64_t>(step)), true);
  ar.write("rank", torch::tensor(static_cast<int64_t>(rank)), true);
  for (const auto& [s, st] : stages) {
    torch::serialize::OutputArchive sa(ar.compilation_unit());
    const auto params = st.module->parameters();
    sa.write("count", torch::tensor(static_cast<int64_t>(params.size())), true);
    // CPU copies: a checkpoint loads onto whatever device the resuming run uses.
    for (std::size_t i = 0; i < params.size(); ++i) sa.write(fmt::format("p{}", i), params[i].detach().cpu(), true);
    // Buffers (deepseek's selection biases) change in training too.
    const auto buffers = st.module->buffers();
    for (std::size_t i = 0; i < buffers.size(); ++i) sa.write(fmt::format("b{}", i), buffers[i].cpu(), true);
    ar.write(fmt::format("stage_{}", s), sa);
  }
  if (optimizer) {
    torch::serialize::OutputArchive oa(ar.compilation_unit());
    optimizer->save(oa);
    ar.write("optimizer", oa);
  }
  {
    // Nothing draws from it today (no dropout; data is seeded per step and
    // micro-batch), but a model that does must continue the same stream.
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    ar.write("rng_cpu", gen.get_state(), true);
  }
  std::ostringstream os;
  ar.save_to(os);
  return os.str();
}

// Keep the `keep` newest complete checkpoints up to `step`; everything older
// goes, incomplete leftovers included.
void rotate_checkpoints(const std::string& dir, int step, int keep) {
  auto dirs = step_dirs(dir);
  int kept = 0, oldest_kept = step;
  for (auto it = dirs.rbegin(); it != dirs.rend() && kept < keep; ++it)
    if (it->first <= step && fs::exists(fs::path(it->second) / kManifest)) {
      ++kept;
      oldest_kept = it->first;
    }
  for (const auto& [s, p] : dirs)
    if (s < oldest_kept) remove_tree(p);
}

}  // namespace

void save_checkpoint(const CheckpointOptions& o, int step, const std::map<int, Stage>& stages,
                     torch::optim::Optimizer* optimizer, Comm& comm) {
  const std::string path = checkpoint_path(o.dir, step);
  std::error_code ec;
  if (comm.rank == 0) {
    fs::create_directories(path, ec);
    if (ec) throw Error(fmt::format("cannot create the checkpoint folder {}: {}", path, ec.message()));
    fsync_dir(o.dir);
    // A manifest left by an earlier run (whose later checkpoints we resumed
    // past) must go before any new file lands, or it would vouch for a mix.
    fs::remove(fs::path(path) / kManifest, ec);
  }
  comm.barrier(fmt::format("the start of checkpoint {}", path));
  fs::create_directories(path, ec);  // ranks on other machines, if the folder is not shared
  const std::string bytes = rank_file_bytes(step, comm.rank, stages, optimizer);
  const uint64_t sum = fnv1a64(bytes.data(), bytes.size());
  write_atomic((fs::path(path) / rank_file(comm.rank)).string(), bytes);

  // Every rank's size and checksum, on rank 0; it also tells rank 0 that all
  // files are in place.
  torch::Tensor t = torch::zeros({comm.world, 2}, torch::kInt64);
  int64_t sum_bits = 0;
  std::memcpy(&sum_bits, &sum, sizeof sum);
  t[comm.rank][0] = sum_bits;
  t[comm.rank][1] = static_cast<int64_t>(bytes.size());
  comm.all_reduce(t, c10d::ReduceOp::SUM, fmt::format("the checksums of checkpoint {}", path));
  if (comm.rank != 0) return;
  if (o.before_manifest) o.before_manifest(step);

  nlohmann::ordered_json m;
  m["format"] = kFormat;
  m["version"] = kVersion;
  m["step"] = step;
  m["run"] = o.identity;
  m["files"] = nlohmann::ordered_json::array();
  for (int r = 0; r < comm.world; ++r) {
    uint64_t rs = 0;
    const int64_t bits = t[r][0].item<int64_t>();
    std::memcpy(&rs, &bits, sizeof rs);
    m["files"].push_back({{"name", rank_file(r)}, {"bytes", t[r][1].item<int64_t>()}, {"fnv1a64", hex64(rs)}});
  }
  write_atomic((fs::path(path) / kManifest).string(), m.dump(2) + "\n");
  rotate_checkpoints(o.dir, step, o.keep);
}

namespace {

// The device of the stages' parameters (the CPU when they have none).
torch::Device stages_device(const std::map<int, Stage>& stages) {
  for (const auto& [s, st] : stages)
    for (const auto& p : st.module->parameters()) return p.device();
  return torch::kCPU;
}

}  // namespace

void load_checkpoint(const CheckpointOptions& o, const std::map<int, Stage>& stages,
                     torch::optim::Optimizer* optimizer, int rank) {
  const std::string path = checkpoint_path(o.dir, o.resume_step);
  const std::string file = (fs::path(path) / rank_file(rank)).string();
  // The folder was checked before the ranks started; the file is checked
  // again against the manifest because it is read again here.
  const FileRead text = read_manifest(path);
  if (!text.bytes) throw Error(fmt::format("checkpoint {} lost its manifest while resuming", path));
  try {
    auto m = nlohmann::ordered_json::parse(*text.bytes);
    const auto& f = m.at("files").at(static_cast<std::size_t>(rank));
    const FileRead read = read_checkpoint_file(file, rank_file(rank), f.at("bytes").get<uint64_t>(), true);
    if (!read.bytes) throw Error(fmt::format("checkpoint {} changed while resuming: {}", path, read.problem));
    const std::string* bytes = &*read.bytes;
    if (hex64(fnv1a64(bytes->data(), bytes->size())) != f.at("fnv1a64").get<std::string>())
      throw Error(fmt::format("checkpoint file {} fails its checksum", file));
    // Everything loads onto the stages' device (the optimizer's state, which
    // a run on a GPU wrote from there, included).
    torch::serialize::InputArchive ar;
    ar.load_from(bytes->data(), bytes->size(), stages_device(stages));
    torch::Tensor t;
    ar.read("step", t, true);
    if (t.item<int64_t>() != o.resume_step)
      throw Error(fmt::format("checkpoint file {} holds step {}, not {}", file, t.item<int64_t>(), o.resume_step));
    torch::NoGradGuard no_grad;
    for (const auto& [s, st] : stages) {
      torch::serialize::InputArchive sa;
      if (!ar.try_read(fmt::format("stage_{}", s), sa))
        throw Error(fmt::format("checkpoint file {} has no stage {}", file, s));
      auto params = st.module->parameters();
      torch::Tensor count;
      sa.read("count", count, true);
      if (count.item<int64_t>() != static_cast<int64_t>(params.size()))
        throw Error(fmt::format("checkpoint file {}: stage {} has {} parameters, the model {}", file, s,
                                count.item<int64_t>(), params.size()));
      for (std::size_t i = 0; i < params.size(); ++i) {
        torch::Tensor v;
        sa.read(fmt::format("p{}", i), v, true);
        if (v.sizes() != params[i].sizes() || v.scalar_type() != params[i].scalar_type())
          throw Error(fmt::format("checkpoint file {}: parameter {} of stage {} has another shape or type", file, i, s));
        params[i].copy_(v);
      }
      auto buffers = st.module->buffers();
      for (std::size_t i = 0; i < buffers.size(); ++i) {
        torch::Tensor v;
        if (!sa.try_read(fmt::format("b{}", i), v, true) || v.sizes() != buffers[i].sizes())
          throw Error(fmt::format("checkpoint file {}: stage {} lacks buffer {} or holds another shape", file, s, i));
        buffers[i].copy_(v);
      }
    }
    if (optimizer) {
      torch::serialize::InputArchive oa;
      ar.read("optimizer", oa);
      optimizer->load(oa);
    }
    torch::Tensor rng;
    ar.read("rng_cpu", rng, true);
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng.cpu());
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(fmt::format("cannot read checkpoint file {}: {}", file, first_line(e)));
  }
}

}  // namespace dualpipe
