#pragma once
// Models the runtime can pipeline, cut into stages.
#include <cstdint>
#include <string>
#include <vector>

#include "dualpipe/runtime/stage.h"
#include "dualpipe/train/moe.h"

namespace dualpipe {

struct ModelConfig {
  std::string name = "mlp";  // mlp, gpt, moe, or torchscript (the user's own stages)
  int stages = 0;
  int micro_batches = 0;
  int64_t hidden = 64;  // gpt: d_model
  int64_t ffn = 0;      // mlp: inner width of a stage; 0 means 4 * hidden
  int64_t seq_len = 16;
  int64_t micro_batch_size = 2;
  torch::Dtype dtype = torch::kFloat64;
  uint64_t seed = 1234;

  // gpt only (mlp ignores them):
  int layers = 0;         // transformer blocks in the whole model; 0 means max(stages, 4)
  int64_t heads = 4;      // attention heads; must divide hidden
  // gpt, moe: character-level training text; torchscript: a tensor file of
  // inputs and targets (train/torchscript.h). Empty: the built-in corpus.
  std::string data_path;

  // moe only (the gpt blocks with a mixture of experts in place of the MLP, train/moe.h):
  int experts = 4;          // X routed experts per block
  int top_k = 2;            // K experts per token
  bool shared_expert = true;
  int64_t expert_ffn = 0;   // inner width of an expert; 0 means 2 * hidden
  double aux_alpha = 0.01;  // weight of the load-balancing loss
  int ep = 1;               // expert-parallel ranks the experts are sharded over
  int ep_rank = 0;          // this rank's index among them
  // Pipelines that each run `micro_batches` of the global batch (E * D):
  // the balance loss is scaled by 1 / (micro_batches * data_shards) like the
  // micro-batch losses.
  int data_shards = 1;

  // torchscript only (train/torchscript.h): one TorchScript file per stage,
  // and an optional loss module (empty: cross-entropy or MSE by the targets' type).
  std::vector<std::string> stage_files;
  std::string loss_file;
};

// `mlp`: every stage is Linear(h, 4h, no bias) -> GELU -> Linear(4h, h, no
// bias), with an MSE loss on the last stage: the example model of the DualPipe
// reference implementation, so that results compare (`ffn` changes the 4h,
// e.g. to cut the same model into twice as many half-size stages). Inputs and
// targets are seeded random tensors, a function of (seed, micro-batch) only,
// so every rank (and the unpipelined reference) sees the same data; they are
// made once per micro-batch and reused, so steps time the model, not randn.
PipelineModel mlp_model(const ModelConfig& c);

// `gpt`: a small decoder-only transformer on a character corpus (train/gpt.h);
// `moe`: the same with MoE blocks, whose experts talk over `experts` (null
// members: all experts local).
PipelineModel gpt_model(const ModelConfig& c, const ExpertGroup& experts = {});

// The inner width of an mlp stage.
inline int64_t mlp_ffn(const ModelConfig& c) { return c.ffn > 0 ? c.ffn : 4 * c.hidden; }

// Throws dualpipe::Error for unknown names or bad sizes. `experts`: the expert
// group of this rank (moe with ep > 1), else ignored.
PipelineModel make_model(const ModelConfig& c, const ExpertGroup& experts = {});

// moe: the inner width of an expert.
inline int64_t moe_expert_ffn(const ModelConfig& c) { return c.expert_ffn > 0 ? c.expert_ffn : 2 * c.hidden; }

}  // namespace dualpipe
