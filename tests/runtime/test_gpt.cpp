// The `gpt` model: pipelined equals unpipelined, stages without blocks, the
// character corpus, deterministic data, and that it learns.
#include <gtest/gtest.h>

#include "thread_ranks.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/corpus.h"
#include "dualpipe/train/gpt.h"
#include "dualpipe/train/verify.h"

namespace dualpipe {
namespace {

// Tiny, so that every schedule runs in well under a second.
ModelConfig small_gpt(const Schedule& s, int layers = 4) {
  ModelConfig c;
  c.name = "gpt";
  c.stages = s.stages;
  c.micro_batches = s.micro_batches;
  c.hidden = 16;
  c.heads = 2;
  c.seq_len = 8;
  c.micro_batch_size = 2;
  c.layers = layers;
  c.dtype = torch::kFloat64;
  return c;
}

using test_support::verify_threads;

std::size_t parameter_count(const ModelConfig& c) {
  PipelineModel m = make_model(c);
  std::size_t n = 0;
  for (int s = 0; s < m.stages; ++s) n += m.build(s).module->parameters().size();
  return n;
}

// A file in the test's temporary directory, removed at the end of the test.
struct TempFile {
  explicit TempFile(const std::string& name, const std::string& text)
      : path((std::filesystem::path(testing::TempDir()) / name).string()) {
    std::ofstream(path, std::ios::binary) << text;
  }
  ~TempFile() { std::remove(path.c_str()); }
  std::string path;
};

TEST(GptVerify, MatchesUnpipelinedTraining) {
  at::set_num_threads(1);
  struct Case {
    const char* method;
    int P;
  };
  for (const Case& k : {Case{"dualpipe", 2}, Case{"dualpipe", 4}, Case{"1f1b", 4}, Case{"dualpipev", 2}}) {
    Schedule s = generate(k.method, Shape{k.P, 2 * k.P});
    ModelConfig c = small_gpt(s);
    VerifyResult r = verify_threads(s, c);
    EXPECT_LE(r.loss_error, 1e-12) << k.method << " P=" << k.P;
    EXPECT_LE(r.grad_error, 1e-12) << k.method << " P=" << k.P;
    // Every parameter of the model was compared, not just some.
    EXPECT_EQ(r.per_param.size(), parameter_count(c)) << k.method << " P=" << k.P;
  }
}

TEST(GptStages, BlocksAreSpreadEvenly) {
  EXPECT_EQ(gpt_blocks(0, 3, 4), std::make_pair(0, 1));
  EXPECT_EQ(gpt_blocks(1, 3, 4), std::make_pair(1, 2));
  EXPECT_EQ(gpt_blocks(2, 3, 4), std::make_pair(2, 4));
  EXPECT_EQ(gpt_blocks(0, 1, 4), std::make_pair(0, 4));
  // More stages than blocks: some get none.
  EXPECT_EQ(gpt_blocks(0, 4, 2), std::make_pair(0, 0));
  EXPECT_EQ(gpt_blocks(1, 4, 2), std::make_pair(0, 1));
  EXPECT_EQ(gpt_blocks(2, 4, 2), std::make_pair(1, 1));
  EXPECT_EQ(gpt_blocks(3, 4, 2), std::make_pair(1, 2));
  ModelConfig c;
  c.stages = 8;
  EXPECT_EQ(gpt_layers(c), 8);  // default: max(stages, 4)
  c.stages = 2;
  EXPECT_EQ(gpt_layers(c), 4);
  c.layers = 3;
  EXPECT_EQ(gpt_layers(c), 3);
}

TEST(GptStages, StagesWithoutBlocksWork) {
  at::set_num_threads(1);
  // 4 stages, 2 blocks: stages 0 and 2 have none; stage 2 is then the
  // identity with no parameters at all.
  Schedule s = one_f_one_b(Shape{4, 8});
  ModelConfig c = small_gpt(s, 2);
  PipelineModel m = make_model(c);
  EXPECT_TRUE(m.build(2).module->parameters().empty());
  EXPECT_FALSE(m.build(2).attach_store);
  VerifyResult r = verify_threads(s, c);
  EXPECT_LE(r.loss_error, 1e-12);
  EXPECT_LE(r.grad_error, 1e-12);
  // DualPipe, P = 2, one block: stage 0 holds only the embeddings.
  Schedule d = dualpipe(Shape{2, 4});
  r = verify_threads(d, small_gpt(d, 1));
  EXPECT_LE(r.loss_error, 1e-12);
  EXPECT_LE(r.grad_error, 1e-12);
  // DualPipe, P = 4, two blocks: the replicated stage 2 has no parameters,
  // and its replica sum must be skipped on both replicas alike.
  Schedule d4 = dualpipe(Shape{4, 8});
  r = verify_threads(d4, small_gpt(d4, 2));
  EXPECT_LE(r.loss_error, 1e-12);
  EXPECT_LE(r.grad_error, 1e-12);
}

TEST(GptStages, OneStageHasEverything) {
  ModelConfig c;
  c.name = "gpt";
  c.stages = 1;
  c.hidden = 16;
  c.heads = 2;
  c.seq_len = 8;
  c.layers = 2;
  PipelineModel m = make_model(c);
  Stage st = m.build(0);
  std::vector<std::string> names;
  for (const auto& p : st.module->named_parameters()) names.push_back(p.key());
  for (const char* want :
       {"tok.weight", "pos.weight", "block0.attn.qkv.weight", "block1.proj.weight", "ln_f.weight", "head.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  torch::Tensor logits = st.forward(m.input(0));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 8, load_corpus("", 9).vocab()}));
  // An untrained model predicts about uniformly: loss near log(vocab).
  EXPECT_NEAR(m.loss(logits, 0).item<double>(), std::log(static_cast<double>(logits.size(2))), 0.1);
}

TEST(GptStages, BadSizesAreErrors) {
  ModelConfig c;
  c.name = "gpt";
  c.stages = 2;
  c.hidden = 16;
  c.heads = 3;
  EXPECT_THROW(make_model(c), Error);
  c.heads = 2;
  c.layers = -1;
  EXPECT_THROW(make_model(c), Error);
  c.name = "nosuch";
  try {
    make_model(c);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gpt"), std::string::npos) << e.what();
  }
}

TEST(GptCorpus, BuiltInAndFileCorporaLoad) {
  Corpus b = load_corpus("", 9);
  EXPECT_GE(b.size(), 2000);
  EXPECT_GT(b.vocab(), 20);
  EXPECT_LT(b.vocab(), 100);
  EXPECT_EQ(b.decode(b.ids()), builtin_text());  // ids round-trip

  TempFile f("gpt_corpus_ok.txt", "abracadabra");
  Corpus c = load_corpus(f.path, 9);
  EXPECT_EQ(c.name(), f.path);
  EXPECT_EQ(c.size(), 11);
  EXPECT_EQ(c.vocab(), 5);  // a b c d r
  EXPECT_EQ(c.alphabet(), (std::vector<unsigned char>{'a', 'b', 'c', 'd', 'r'}));
  EXPECT_EQ(c.decode(c.ids().narrow(0, 0, 4)), "abra");
  // A file exactly one window long has one window.
  TempFile g("gpt_corpus_one.txt", "0123456789");
  Corpus one = load_corpus(g.path, 10);
  EXPECT_EQ(one.decode(one.windows(1, 0, 0, 2, 10)), "01234567890123456789");
}

TEST(GptCorpus, BadFilesThrowNamingTheFile) {
  TempFile empty("gpt_corpus_empty.txt", "");
  TempFile short_file("gpt_corpus_short.txt", "too short");
  const std::string missing = (std::filesystem::path(testing::TempDir()) / "gpt_corpus_missing.txt").string();
  for (const auto& [path, problem] : std::vector<std::pair<std::string, std::string>>{
           {missing, "does not exist"}, {empty.path, "is empty"}, {short_file.path, "has 9 characters"}}) {
    try {
      load_corpus(path, 17);
      ADD_FAILURE() << path << ": no error";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path), std::string::npos) << what;
      EXPECT_NE(what.find(problem), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
  // The model reports it too, before building anything.
  ModelConfig c;
  c.name = "gpt";
  c.stages = 2;
  c.hidden = 16;
  c.data_path = short_file.path;
  EXPECT_THROW(make_model(c), Error);
  c.seq_len = 8;  // 9 characters are one window of 8 + 1
  EXPECT_NO_THROW(make_model(c));
}

TEST(GptData, SameStepAndMicroBatchGiveTheSameTokens) {
  ModelConfig c;
  c.name = "gpt";
  c.stages = 2;
  c.hidden = 16;
  c.seq_len = 8;
  c.micro_batch_size = 4;
  PipelineModel a = make_model(c), b = make_model(c);
  ASSERT_TRUE(a.begin_step);
  torch::Tensor x = a.input(3);
  EXPECT_EQ(x.dtype(), torch::kInt64);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{4, 8}));
  EXPECT_TRUE(torch::equal(x, b.input(3)));   // another model (another rank): the same
  EXPECT_FALSE(torch::equal(x, a.input(2)));  // another micro-batch: not
  a.begin_step(5);
  b.begin_step(5);
  torch::Tensor y = a.input(3);
  EXPECT_FALSE(torch::equal(x, y));  // another step: other windows
  EXPECT_TRUE(torch::equal(y, b.input(3)));
  PipelineModel copy = a;  // the executor's copy follows begin_step too
  a.begin_step(0);
  EXPECT_TRUE(torch::equal(copy.input(3), x));
  // Another seed: other windows.
  c.seed = 99;
  EXPECT_FALSE(torch::equal(make_model(c).input(3), x));
  // The targets are the inputs moved on by one character: a model that
  // puts all its mass on the true next character has loss ~0.
  Corpus corpus = load_corpus("", 9);
  torch::Tensor w = corpus.windows(c.seed, 0, 1, 4, 9);
  PipelineModel m = make_model(c);
  EXPECT_TRUE(torch::equal(m.input(1), w.narrow(1, 0, 8)));
  torch::Tensor logits = torch::one_hot(w.narrow(1, 1, 8), corpus.vocab()).to(torch::kFloat64) * 100.0;
  EXPECT_LT(m.loss(logits, 1).item<double>(), 1e-6);
}

// Plain AdamW on all stages, unpipelined: the loss on the built-in corpus
// falls clearly within 30 steps.
TEST(GptTraining, LossGoesDownOnTheBuiltInCorpus) {
  ModelConfig c;
  c.name = "gpt";
  c.stages = 2;
  c.hidden = 32;
  c.heads = 4;
  c.layers = 2;
  c.seq_len = 32;
  c.micro_batch_size = 8;
  c.dtype = torch::kFloat32;
  const int N = 2, steps = 30;
  PipelineModel m = make_model(c);
  std::vector<Stage> stages;
  std::vector<torch::Tensor> params;
  for (int s = 0; s < m.stages; ++s) {
    stages.push_back(m.build(s));
    for (auto& p : stages.back().module->parameters()) params.push_back(p);
  }
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(5e-3).weight_decay(0.0));
  std::vector<double> curve;
  for (int k = 0; k < steps; ++k) {
    m.begin_step(k);
    opt.zero_grad();
    torch::Tensor loss = torch::zeros({});
    for (int mb = 0; mb < N; ++mb) {
      torch::Tensor x = m.input(mb);
      for (auto& st : stages) x = st.forward(x);
      loss = loss + m.loss(x, mb) / N;
    }
    loss.backward();
    opt.step();
    curve.push_back(loss.item<double>());
  }
  std::string line;
  for (double l : curve) line += " " + std::to_string(l).substr(0, 5);
  std::printf("gpt loss over %d steps:%s\n", steps, line.c_str());
  auto mean = [&](int from, int n) {
    double t = 0;
    for (int i = from; i < from + n; ++i) t += curve[static_cast<std::size_t>(i)];
    return t / n;
  };
  EXPECT_NEAR(curve[0], std::log(static_cast<double>(load_corpus("", 33).vocab())), 0.2);
  EXPECT_LT(mean(steps - 5, 5), mean(0, 5) - 0.8) << line;
}

}  // namespace
}  // namespace dualpipe
