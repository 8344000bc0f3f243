// The user's own model as TorchScript stages (train/torchscript.h): the
// stages' parameters are the modules' own, every method's pipelined step
// equals the stages composed and run unpipelined (so the autograd I/W split
// equals a plain backward), the data file and the loss module, bad files
// refused in one line, and training with checkpoints through the command.
// The files are tests/data/own_model, made by tests/data/own_model/make.py.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "thread_ranks.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "dualpipe/runtime/executor.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/torchscript.h"

namespace dualpipe {
namespace {

using test_support::run_cli;
using test_support::verify_threads;

const std::string kDir = std::string(DUALPIPE_TEST_DATA_DIR) + "/own_model/";

std::vector<std::string> stage_files() {
  std::vector<std::string> f;
  for (int s = 0; s < 4; ++s) f.push_back(kDir + "stage" + std::to_string(s) + ".pt");
  return f;
}

ModelConfig own_model(const Schedule& s) {
  ModelConfig c;
  c.name = "torchscript";
  c.stages = s.stages;
  c.micro_batches = s.micro_batches;
  c.micro_batch_size = 2;
  c.stage_files = stage_files();
  c.data_path = kDir + "data.pt";
  return c;
}

// The error torchscript_model throws for `c` ("" when none).
std::string refusal(const ModelConfig& c) {
  try {
    (void)torchscript_model(c);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TorchScriptStages, ParametersAreTheModulesOwnTensors) {
  Schedule s = generate("1f1b", Shape{4, 4});
  PipelineModel m = torchscript_model(own_model(s));
  EXPECT_EQ(m.boundary_shape, (std::vector<int64_t>{2, 8, 8}));
  EXPECT_EQ(m.boundary_dtype, torch::kFloat64);
  Stage st = m.build(1);
  EXPECT_TRUE(st.autograd_split);
  std::vector<std::string> names;
  for (const auto& p : st.module->named_parameters()) names.push_back(p.key());
  EXPECT_NE(std::find(names.begin(), names.end(), "block1.qkv.weight"), names.end());
  // Changing a registered parameter changes what the stage computes: the
  // optimizer's updates reach the TorchScript module.
  torch::Tensor x = torch::randn({2, 8, 8}, torch::kFloat64);
  torch::Tensor before = st.forward(x).detach();
  {
    torch::NoGradGuard no_grad;
    st.module->named_parameters()["block1.qkv.weight"].mul_(2.0);
  }
  EXPECT_FALSE(torch::allclose(st.forward(x), before));
  // Two loads of one file start equal (DualPipe's two copies of a stage).
  EXPECT_TRUE(torch::equal(m.build(1).forward(x), before));
}

// Stage::autograd_split: I gives the input's gradient and no parameter's; W
// gives the parameters' afterwards, and the sums equal a plain backward's.
// One rank, one stage of two linears whose input requires a gradient.
struct SplitCase {
  std::shared_ptr<torch::nn::Sequential> net;
  std::shared_ptr<std::vector<torch::Tensor>> fed = std::make_shared<std::vector<torch::Tensor>>();
  std::vector<torch::Tensor> inputs = {torch::randn({3, 4}), torch::randn({3, 4})};
  PipelineModel model;

  SplitCase() {
    torch::manual_seed(3);
    net = std::make_shared<torch::nn::Sequential>(torch::nn::Linear(4, 4), torch::nn::Linear(4, 4));
    model.stages = 1;
    model.boundary_shape = {3, 4};
    model.build = [n = net](int) {
      Stage st;
      st.module = n->ptr();
      st.forward = [n](const torch::Tensor& x) { return (*n)->forward(x); };
      st.autograd_split = true;
      return st;
    };
    model.input = [in = inputs, fed = fed](int mb) {
      fed->push_back(in[static_cast<std::size_t>(mb)].clone().requires_grad_(true));
      return fed->back();
    };
    model.loss = [](const torch::Tensor& out, int) { return out.pow(2).mean(); };
  }

  // Runs F0 F1 I0 I1, then `ops_after` for both micro-batches, on one rank.
  void step(const std::vector<Op>& ops_after) {
    Schedule s;
    s.method = "file";
    s.ranks = 1;
    s.stages = 1;
    s.micro_batches = 2;
    s.actions = {{Action::make(Op::F, 0, 0), Action::make(Op::F, 0, 1), Action::make(Op::I, 0, 0),
                  Action::make(Op::I, 0, 1)}};
    for (Op op : ops_after)
      for (int mb = 0; mb < 2; ++mb) s.actions[0].push_back(Action::make(op, 0, mb));
    run_thread_ranks(1, [&](std::shared_ptr<Comm> comm) { RankExecutor(s, 0, model, comm).step(); });
  }
};

TEST(AutogradSplit, IGivesTheInputGradientOnly) {
  SplitCase c;
  try {
    c.step({});  // no W: the step ends with the weight gradients still pending
    ADD_FAILURE() << "a step with I and no W must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("2 deferred weight gradients"), std::string::npos) << e.what();
  }
  ASSERT_EQ(c.fed->size(), 2u);
  for (const torch::Tensor& x : *c.fed) EXPECT_TRUE(x.grad().defined());
  for (const torch::Tensor& p : (*c.net)->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(AutogradSplit, IThenWEqualsAPlainBackward) {
  SplitCase c;
  c.step({Op::W});
  std::vector<torch::Tensor> split, input_grads;
  for (auto& p : (*c.net)->parameters()) {
    split.push_back(p.grad().clone());
    p.mutable_grad() = torch::Tensor();
  }
  for (int mb = 0; mb < 2; ++mb) {
    torch::Tensor x = c.inputs[static_cast<std::size_t>(mb)].clone().requires_grad_(true);
    (c.model.loss((*c.net)->forward(x), mb) / 2.0).backward();
    EXPECT_TRUE(torch::allclose((*c.fed)[static_cast<std::size_t>(mb)].grad(), x.grad(), 0, 1e-6)) << mb;
  }
  const auto params = (*c.net)->parameters();
  for (std::size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::allclose(split[i], params[i].grad(), 0, 1e-6)) << i;
}

// Every method, with the P that gives it the 4 stages of the files.
TEST(TorchScriptStages, EveryMethodMatchesTheComposedStages) {
  at::set_num_threads(1);
  int methods_run = 0;
  for (const Method& method : methods()) {
    for (int P : {4, 2, 1}) {
      if (method.stage_count(P, 2) != 4) continue;
      Schedule s = generate(method.name, Shape{P, 2 * P, 2});
      ModelConfig c = own_model(s);
      VerifyResult r = verify_threads(s, c);
      EXPECT_LE(r.loss_error, 1e-12) << method.name << " P=" << P;
      EXPECT_LE(r.grad_error, 1e-12) << method.name << " P=" << P;
      EXPECT_EQ(r.per_param.size(), 4u * 8u + 5u) << method.name;  // every parameter compared
      ++methods_run;
      break;
    }
  }
  EXPECT_EQ(methods_run, static_cast<int>(methods().size()));
}

TEST(TorchScriptStages, LossModuleAndBuiltInCorpus) {
  at::set_num_threads(1);
  Schedule s = generate("zb1p", Shape{4, 8});
  ModelConfig c = own_model(s);
  c.loss_file = kDir + "loss_mse.pt";
  VerifyResult r = verify_threads(s, c);
  EXPECT_LE(r.loss_error, 1e-12);
  EXPECT_LE(r.grad_error, 1e-12);
  // No data file: the built-in corpus, whose 41 characters are more than
  // the model's 8 tokens, so its embedding refuses them at setup.
  c.data_path.clear();
  c.loss_file.clear();
  c.seq_len = 8;
  EXPECT_NE(refusal(c).find("cannot take the input from the built-in corpus ([2, 8] Long): RuntimeError: index out "
                            "of range"),
            std::string::npos)
      << refusal(c);
}

// A .bin data file: uint16 token ids, cut into windows of seq_len + 1.
TEST(TorchScriptStages, FlatBinaryTokenIds) {
  const std::string path = testing::TempDir() + "dualpipe_own_tokens.bin";
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 100; ++i) out.put(static_cast<char>((i * 3) % 8)).put('\0');  // id (3i mod 8), little-endian
  }
  Schedule s = generate("1f1b", Shape{4, 4});
  ModelConfig c = own_model(s);
  c.data_path = path;
  c.seq_len = 8;
  PipelineModel m = torchscript_model(c);
  // Micro-batch 1, row 0 of 2: the window at (1 * 2 + 0) * 8 = 16.
  torch::Tensor want = torch::remainder(torch::arange(16, 25, torch::kInt64) * 3, 8);
  EXPECT_TRUE(torch::equal(m.input(1)[0], want.narrow(0, 0, 8)));
  VerifyResult r = verify_threads(s, c);
  EXPECT_LE(r.grad_error, 1e-12);
  std::ofstream(path, std::ios::binary | std::ios::app).put('\0');  // an odd number of bytes
  EXPECT_NE(refusal(c).find("a .bin file is little-endian uint16 token ids"), std::string::npos) << refusal(c);
  std::remove(path.c_str());
}

TEST(TorchScriptStages, BadFilesAreRefusedNamingThem) {
  Schedule s = generate("1f1b", Shape{4, 4});
  ModelConfig c = own_model(s);
  c.stage_files[2] = kDir + "tensor.pt";
  EXPECT_NE(refusal(c).find("stage 2 " + kDir + "tensor.pt is not a TorchScript module"), std::string::npos)
      << refusal(c);
  c = own_model(s);
  c.stage_files[1] = kDir + "bad_width.pt";
  EXPECT_NE(refusal(c).find("stage 1 (" + kDir + "bad_width.pt) cannot take stage 0's output ([2, 8, 8] Double)"),
            std::string::npos)
      << refusal(c);
  c = own_model(s);
  c.data_path = kDir + "tensor.pt";
  EXPECT_NE(refusal(c).find("data file " + kDir + "tensor.pt holds a Tensor"), std::string::npos) << refusal(c);
  c = own_model(s);
  c.stage_files.pop_back();
  EXPECT_NE(refusal(c).find("3 TorchScript stage files for 4 pipeline stages"), std::string::npos) << refusal(c);
  c = own_model(s);
  c.loss_file = kDir + "stage3.pt";
  EXPECT_NE(refusal(c).find("loss module " + kDir + "stage3.pt has parameters"), std::string::npos) << refusal(c);
}

TEST(TorchScriptStages, FilesAreInTheRunIdentityByContent) {
  Schedule s = generate("1f1b", Shape{4, 4});
  ModelConfig a = own_model(s), b = own_model(s);
  std::swap(b.stage_files[1], b.stage_files[2]);  // same names, other contents per stage
  EXPECT_NE(run_identity(s, a).dump(), run_identity(s, b).dump());
  EXPECT_EQ(run_identity(s, a).dump(), run_identity(s, own_model(s)).dump());
}

std::string stages_arg() {
  std::string a;
  for (const std::string& f : stage_files()) a += (a.empty() ? "" : ",") + f;
  return a;
}

TEST(TorchScriptCli, BadInputIsOneLineAndExit2) {
  const std::string t = "train --steps 1 --threads --data " + kDir + "data.pt ";
  struct Case {
    std::string args, fragment;
  };
  const std::vector<Case> cases = {
      {t + "-m dualpipe -p 2 --stages " + stages_arg(),
       "--stages names 4 TorchScript files, but the dualpipe schedule on 2 ranks has 2 stages"},
      {t + "-m 1f1b -p 2 --stages " + kDir + "tensor.pt," + kDir + "stage3.pt", "is not a TorchScript module"},
      {t + "-m 1f1b -p 2 --stages " + kDir + "stage0.pt," + kDir + "bad_width.pt", "stage 1 ("},
      {"train --steps 1 --threads -m 1f1b -p 4 --stages " + stages_arg() + " --data " + kDir + "tensor.pt",
       "data file"},
      {t + "-m 1f1b -p 4 --stages " + stages_arg() + " --backend nccl", "--backend nccl"},
      {"profile --stages " + stages_arg(), "profile measures the layers of the shipped models"},
      // A folder named as a stage or data file said "basic_filebuf::underflow error reading the file".
      {t + "-m 1f1b -p 2 --stages /tmp," + kDir + "stage3.pt", "stage 0 /tmp is a folder, not a file"},
      {"train --steps 1 --threads -m 1f1b -p 4 --stages " + stages_arg() + " --data /tmp",
       "data file /tmp is a folder, not a file"},
      // A data file of the stages' kind given to a shipped model was read as text and trained on.
      {"train --steps 1 --threads -m 1f1b -p 2 --model gpt --data " + kDir + "data.pt",
       "data.pt: the shipped models read a text file, character by character; .pt data files go with --stages"},
  };
  for (const Case& k : cases) {
    auto r = run_cli(k.args, "");
    EXPECT_EQ(r.code, 2) << k.args << "\n" << r.out;
    EXPECT_NE(r.out.find(k.fragment), std::string::npos) << k.args << "\n" << r.out;
    EXPECT_TRUE(!r.out.empty() && r.out.find('\n') == r.out.size() - 1) << k.args << "\n" << r.out;
  }
}

// The losses column of a loss CSV (step,loss,...), as text.
std::vector<std::string> losses(const std::string& csv) {
  std::ifstream in(csv);
  std::vector<std::string> out;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) out.push_back(line.substr(line.find(',') + 1, line.find(',', line.find(',') + 1) - line.find(',') - 1));
  return out;
}

TEST(TorchScriptCli, TrainsWithCheckpointsAndResumesExactly) {
  const std::string dir = testing::TempDir() + "dualpipe_own_ckpt";
  std::filesystem::remove_all(dir);
  const std::string base = "train -m dualpipe -p 4 -n 8 --threads --lr 0.01 --stages " + stages_arg() + " --data " +
                           kDir + "data.pt --loss-svg " + testing::TempDir() + "own.svg ";
  const std::string whole = testing::TempDir() + "own_whole.csv", cut = testing::TempDir() + "own_cut.csv";
  auto r = run_cli(base + "--steps 4 --loss-csv " + whole, "");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(base + "--steps 2 --checkpoint-dir " + dir + " --loss-csv " + cut, "");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli(base + "--steps 4 --resume --checkpoint-dir " + dir + " --loss-csv " + cut, "");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("resum"), std::string::npos) << r.out;
  const auto a = losses(whole), b = losses(cut);
  ASSERT_EQ(a.size(), 4u);
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(a.back(), b.back());  // the resumed run ends where the uninterrupted one does
  std::filesystem::remove_all(dir);
}

TEST(TorchScriptCli, VerifyOnRankProcesses) {
  auto r = run_cli("verify -m zbv -p 2 -n 4 --stages " + stages_arg() + " --data " + kDir + "data.pt", "");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dualpipe
