#pragma once
// Runs a whole training or verification on thread ranks of this process and
// returns every rank's result: the shared driver of the runtime tests.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "dualpipe/runtime/launch.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/train/trainer.h"
#include "dualpipe/train/verify.h"

namespace dualpipe::test_support {

// A parameterised test's name from a method and a number: "zb1p_P2" (gtest
// names allow no '-').
inline std::string case_name(const std::string& method, const std::string& suffix) {
  std::string n = method + "_" + suffix;
  for (char& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

// Training options for a small model the tests can afford: `model` (mlp or
// gpt) sized for `s`, `steps` steps of AdamW at lr 1e-2.
inline TrainOptions small_train_options(const Schedule& s, const std::string& model, int steps, torch::Dtype dtype) {
  TrainOptions t;
  t.model.name = model;
  t.model.stages = s.stages;
  t.model.micro_batches = s.micro_batches;
  t.model.hidden = model == "gpt" ? 32 : 16;
  t.model.seq_len = model == "gpt" ? 8 : 4;
  t.model.micro_batch_size = 2;
  t.model.dtype = dtype;
  t.steps = steps;
  t.lr = 1e-2;
  return t;
}

// Training options for a small MoE model the tests can afford on `s`'s
// stages: float64, hidden 16, 2 heads, 4 experts (top-2), two MoE blocks a
// stage, micro-batches of 2 sequences of 6; `steps` steps.
inline TrainOptions small_moe_training(const Schedule& s, int steps) {
  TrainOptions t;
  t.model.name = "moe";
  t.model.stages = s.stages;
  t.model.micro_batches = s.micro_batches;
  t.model.hidden = 16;
  t.model.heads = 2;
  t.model.seq_len = 6;
  t.model.micro_batch_size = 2;
  t.model.layers = 2 * s.stages;
  t.model.experts = 4;
  t.model.top_k = 2;
  t.model.dtype = torch::kFloat64;
  t.steps = steps;
  return t;
}

inline std::vector<RankRun> train_threads(const Schedule& s, const TrainOptions& t) {
  std::vector<RankRun> runs(s.ranks);
  run_thread_ranks(s.ranks, [&](std::shared_ptr<Comm> comm) { runs[comm->rank] = train_rank(s, t, comm); });
  return runs;
}

// One verify step of `s` (lowered here); every rank must end with the same
// maxima, and rank 0's are returned.
inline VerifyResult verify_threads(const Schedule& s, const ModelConfig& c) {
  Schedule low = lower(s);
  std::vector<VerifyResult> res(s.ranks);
  run_thread_ranks(s.ranks, [&](std::shared_ptr<Comm> comm) { res[comm->rank] = verify_step(low, c, comm); });
  for (const VerifyResult& r : res) {
    EXPECT_EQ(r.grad_error, res[0].grad_error);
    EXPECT_EQ(r.loss_error, res[0].loss_error);
  }
  return res[0];
}

// One verify step of `s` (lowered here) on a P x E x D mesh of thread ranks
// (shape.pp is set from `s`); every rank must end with the same maxima, and
// rank 0's are returned.
inline VerifyResult verify_mesh(const Schedule& s, const ModelConfig& c, MeshShape shape, const VerifyOptions& o) {
  Schedule low = lower(s);
  shape.pp = s.ranks;
  std::vector<VerifyResult> res(shape.size());
  run_mesh_threads(shape, [&](const Mesh& m) { res[m.rank] = verify_step(low, c, m, o); });
  for (const VerifyResult& r : res) {
    EXPECT_EQ(r.grad_error, res[0].grad_error);
    EXPECT_EQ(r.param_error, res[0].param_error);
  }
  return res[0];
}

}  // namespace dualpipe::test_support
