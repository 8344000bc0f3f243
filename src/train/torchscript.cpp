#include "dualpipe/train/torchscript.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/script.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dualpipe/schedule/error.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/corpus.h"

namespace dualpipe {
namespace {

// The line of a LibTorch error that says what went wrong: the first, or for
// an error inside TorchScript code the last "SomethingError: ..." line, after
// the two tracebacks (LibTorch 2.x adds a C++ backtrace after it).
std::string first_line(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  if (line.find("TorchScript interpreter") != std::string::npos) {
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);) {
      const std::size_t error = l.find("Error: ");
      if (error != std::string::npos && error > 0 && l.find(' ') > error) line = l;
    }
  }
  return line.empty() ? "(no message)" : line;
}

std::string shape_text(const torch::Tensor& t) {
  return fmt::format("[{}] {}", fmt::join(t.sizes(), ", "), c10::toString(t.scalar_type()));
}

std::vector<char> read_bytes(const std::string& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(fmt::format("{} {} is a folder, not a file", what, path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot read {} {}", what, path));
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

torch::jit::Module load_module(const std::string& path, const char* what) {
  (void)read_bytes(path, what);  // a missing file in plain words, not LibTorch's
  torch::jit::Module m;
  try {
    m = torch::jit::load(path);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{} {} is not a TorchScript module (save it with torch.jit.script(module).save(path)): {}",
                            what, path, first_line(e.what())));
  }
  if (!m.find_method("forward")) throw Error(fmt::format("{} {} has no forward method", what, path));
  return m;
}

// A torch::nn::Module holding the TorchScript module's parameters (the same
// tensors) under the same names, submodule by submodule. A tensor met again
// (weights tied within the stage) is registered once, under its first name,
// so that the optimizer updates it once.
std::shared_ptr<torch::nn::Module> mirror(const torch::jit::Module& m, std::set<const void*>& seen) {
  auto out = std::make_shared<torch::nn::Module>();
  for (const auto& p : m.named_parameters(/*recurse=*/false))
    if (seen.insert(p.value.unsafeGetTensorImpl()).second)
      out->register_parameter(p.name, p.value, p.value.requires_grad());
  for (const auto& child : m.named_children()) out->register_module(child.name, mirror(child.value, seen));
  return out;
}

torch::Tensor run_forward(torch::jit::Module& m, const torch::Tensor& x) {
  torch::IValue out = m.forward({x});
  if (!out.isTensor()) throw Error(fmt::format("returns {}, not one tensor", out.tagKind()));
  return out.toTensor();
}

// The samples of a data file: torch.save({"inputs": X, "targets": Y}).
std::pair<torch::Tensor, torch::Tensor> load_data_file(const std::string& path) {
  const std::vector<char> bytes = read_bytes(path, "data file");
  const std::string want = "a data file is torch.save({\"inputs\": X, \"targets\": Y}) with X and Y tensors";
  torch::IValue v;
  try {
    v = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw Error(fmt::format("data file {} cannot be read ({}): {}", path, first_line(e.what()), want));
  }
  if (!v.isGenericDict()) throw Error(fmt::format("data file {} holds a {}: {}", path, v.tagKind(), want));
  torch::Tensor x, y;
  for (const auto& item : v.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor()) continue;
    if (item.key().toStringRef() == "inputs") x = item.value().toTensor();
    if (item.key().toStringRef() == "targets") y = item.value().toTensor();
  }
  if (!x.defined() || !y.defined()) throw Error(fmt::format("data file {} lacks inputs or targets: {}", path, want));
  if (x.dim() < 1 || y.dim() < 1 || x.size(0) != y.size(0) || x.size(0) < 1)
    throw Error(fmt::format("data file {}: inputs {} and targets {} must have the same first dimension (the samples), "
                            "at least 1",
                            path, shape_text(x), shape_text(y)));
  return {x.contiguous(), y.contiguous()};
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The token ids of a flat binary file: little-endian uint16, as int64 [n].
torch::Tensor load_token_file(const std::string& path, int64_t window) {
  const std::vector<char> bytes = read_bytes(path, "data file");
  const int64_t n = static_cast<int64_t>(bytes.size() / 2);
  if (bytes.size() % 2 != 0 || n < window + 1)
    throw Error(fmt::format("data file {}: a .bin file is little-endian uint16 token ids, at least {} of them "
                            "(--seq-len + 2); it has {} bytes",
                            path, window + 1, bytes.size()));
  torch::Tensor ids = torch::empty({n}, torch::kInt64);
  int64_t* out = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<unsigned char>(bytes[2 * i]) | (static_cast<unsigned char>(bytes[2 * i + 1]) << 8);
  return ids;
}

// Inputs and targets of micro-batch mb of the current step.
struct DataSource {
  std::shared_ptr<const Corpus> corpus;  // the built-in corpus when no file
  torch::Tensor tokens;                  // from a .bin file of token ids
  torch::Tensor inputs, targets;         // from a torch.save file
  int64_t rows = 0, seq_len = 0;
  uint64_t seed = 0;
  int micro_batches = 1;  // of one step, over every pipeline
  std::shared_ptr<std::atomic<int>> step = std::make_shared<std::atomic<int>>(0);

  std::pair<torch::Tensor, torch::Tensor> batch(int mb) const {
    if (corpus) {
      torch::Tensor w = corpus->windows(seed, step->load(), mb, rows, seq_len + 1);
      return {w.narrow(1, 0, seq_len), w.narrow(1, 1, seq_len)};
    }
    const int64_t g = static_cast<int64_t>(step->load()) * micro_batches + mb;
    if (tokens.defined()) {  // row r of micro-batch g: the window at ((g b + r) seq_len) mod (n - seq_len)
      torch::Tensor starts = torch::remainder(torch::arange(g * rows, (g + 1) * rows, torch::kInt64) * seq_len,
                                              tokens.size(0) - seq_len);
      torch::Tensor w = tokens.index_select(0, (starts.unsqueeze(1) + torch::arange(seq_len + 1)).reshape({-1}));
      w = w.reshape({rows, seq_len + 1});
      return {w.narrow(1, 0, seq_len), w.narrow(1, 1, seq_len)};
    }
    torch::Tensor idx = torch::remainder(torch::arange(g * rows, (g + 1) * rows, torch::kInt64), inputs.size(0));
    return {inputs.index_select(0, idx), targets.index_select(0, idx)};
  }
};

DataSource make_data(const ModelConfig& c) {
  DataSource d;
  d.rows = c.micro_batch_size;
  d.seq_len = c.seq_len;
  d.seed = c.seed;
  d.micro_batches = std::max(1, c.micro_batches) * std::max(1, c.data_shards);
  if (c.data_path.empty())
    d.corpus = std::make_shared<const Corpus>(load_corpus("", c.seq_len + 1));
  else if (ends_with(c.data_path, ".bin"))
    d.tokens = load_token_file(c.data_path, c.seq_len + 1);
  else
    std::tie(d.inputs, d.targets) = load_data_file(c.data_path);
  return d;
}

// The loss of one micro-batch: the loss module's, or the default by the targets' type.
using LossFn = std::function<torch::Tensor(const torch::Tensor& out, const torch::Tensor& target)>;
LossFn make_loss(const std::string& loss_file) {
  if (loss_file.empty())
    return [](const torch::Tensor& out, const torch::Tensor& target) {
      if (at::isFloatingType(target.scalar_type())) return torch::mse_loss(out, target);
      return torch::nn::functional::cross_entropy(out.reshape({-1, out.size(-1)}), target.reshape({-1}));
    };
  torch::jit::Module m = load_module(loss_file, "loss module");
  if (m.parameters().size() > 0)
    throw Error(fmt::format("loss module {} has parameters; they would not be trained (put them in the last stage)",
                            loss_file));
  auto mod = std::make_shared<torch::jit::Module>(m);
  return [mod](const torch::Tensor& out, const torch::Tensor& target) {
    torch::IValue v = mod->forward({out, target});
    if (!v.isTensor()) throw Error(fmt::format("the loss module returns {}, not a tensor", v.tagKind()));
    return v.toTensor();
  };
}

// Runs micro-batch 0 through the stages and the loss, naming the stage or
// file that fails; returns the boundary tensor (stage 0's output).
torch::Tensor probe(const ModelConfig& c, const DataSource& data, const LossFn& loss) {
  torch::NoGradGuard no_grad;
  auto [x, target] = data.batch(0);
  const std::string data_name = c.data_path.empty() ? "the built-in corpus" : "data file " + c.data_path;
  std::string from = fmt::format("the input from {} ({})", data_name, shape_text(x));
  torch::Tensor boundary;
  const int S = static_cast<int>(c.stage_files.size());
  for (int s = 0; s < S; ++s) {
    torch::jit::Module m = load_module(c.stage_files[s], fmt::format("stage {}", s).c_str());
    try {
      x = run_forward(m, x);
    } catch (const std::exception& e) {
      throw Error(fmt::format("stage {} ({}) cannot take {}: {}", s, c.stage_files[s], from, first_line(e.what())));
    }
    if (s + 1 < S) {
      if (!boundary.defined()) boundary = x;
      if (x.sizes() != boundary.sizes() || x.scalar_type() != boundary.scalar_type())
        throw Error(fmt::format("stage {} ({}) outputs {} but stage 0 outputs {}: every stage boundary must carry "
                                "one shape and dtype",
                                s, c.stage_files[s], shape_text(x), shape_text(boundary)));
    }
    from = fmt::format("stage {}'s output ({})", s, shape_text(x));
  }
  torch::Tensor l;
  try {
    l = loss(x, target);
  } catch (const std::exception& e) {
    throw Error(fmt::format("the loss{} cannot take the last stage's output ({}) and the targets ({}): {}",
                            c.loss_file.empty() ? "" : " (" + c.loss_file + ")", shape_text(x), shape_text(target),
                            first_line(e.what())));
  }
  if (l.numel() != 1 || !at::isFloatingType(l.scalar_type()))
    throw Error(fmt::format("the loss{} returns {}, not one floating-point number",
                            c.loss_file.empty() ? "" : " (" + c.loss_file + ")", shape_text(l)));
  return boundary.defined() ? boundary : x;
}

}  // namespace

std::string file_identity(const std::string& path) {
  std::vector<char> bytes;
  try {
    bytes = read_bytes(path, "file");
  } catch (const Error&) {
    return path;
  }
  return fmt::format("{} bytes, fnv1a64 {:016x}", bytes.size(), fnv1a64(bytes.data(), bytes.size()));
}

PipelineModel torchscript_model(const ModelConfig& c) {
  if (static_cast<int>(c.stage_files.size()) != c.stages)
    throw Error(fmt::format("{} TorchScript stage files for {} pipeline stages: give one file per stage",
                            c.stage_files.size(), c.stages));
  auto data = std::make_shared<const DataSource>(make_data(c));
  LossFn loss = make_loss(c.loss_file);
  const torch::Tensor boundary = probe(c, *data, loss);

  PipelineModel m;
  m.stages = c.stages;
  m.boundary_shape = boundary.sizes().vec();
  m.boundary_dtype = boundary.scalar_type();
  m.build = [files = c.stage_files, device = c.device](int stage) {
    auto jit = std::make_shared<torch::jit::Module>(load_module(files[stage], fmt::format("stage {}", stage).c_str()));
    jit->to(device);  // its buffers too; the mirror shares its parameters
    Stage st;
    std::set<const void*> seen;
    st.module = mirror(*jit, seen);
    st.forward = [jit](const torch::Tensor& x) { return run_forward(*jit, x); };
    st.autograd_split = true;
    return st;
  };
  m.begin_step = [data](int k) { data->step->store(k); };
  m.input = [data, device = c.device](int mb) { return data->batch(mb).first.to(device); };
  m.loss = [data, loss, device = c.device](const torch::Tensor& out, int mb) {
    return loss(out, data->batch(mb).second.to(device));
  };
  return m;
}

}  // namespace dualpipe
