#pragma once
// Models the runtime can pipeline, cut into stages.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "dualpipe/runtime/stage.h"
#include "dualpipe/train/moe.h"

namespace dualpipe {

struct ModelConfig {
  std::string name = "mlp";  // mlp, gpt, moe, deepseek, or torchscript (the user's own stages)
  int stages = 0;
  int micro_batches = 0;
  int64_t hidden = 64;  // gpt: d_model
  int64_t ffn = 0;      // mlp: inner width of a stage; 0 means 4 * hidden
  int64_t seq_len = 16;
  int64_t micro_batch_size = 2;
  torch::Dtype dtype = torch::kFloat64;
  uint64_t seed = 1234;
  // Where the stages, inputs and targets live (a rank's Mesh::device). The
  // stages are built and initialised on the CPU and then moved, so a model
  // starts from the same parameters on any device. Not part of a run's
  // identity: a checkpoint holds CPU copies and loads onto any device.
  torch::Device device = torch::kCPU;

  // gpt only (mlp ignores them):
  int layers = 0;         // transformer blocks in the whole model; 0 means max(stages, 4)
  int64_t heads = 4;      // attention heads; must divide hidden
  // gpt, moe: character-level training text; torchscript: a tensor file of
  // inputs and targets (train/torchscript.h). Empty: the built-in corpus.
  std::string data_path;

  // moe and deepseek (the blocks with a mixture of experts in place of the MLP, train/moe.h):
  int experts = 4;          // X routed experts per block
  int top_k = 2;            // K experts per token
  bool shared_expert = true;
  int64_t expert_ffn = 0;   // inner width of an expert; 0 means 2 * hidden
  double aux_alpha = 0.01;  // weight of the load-balancing loss (deepseek: the sequence-wise one)
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
  // deepseek only (train/deepseek.h): multi-head latent attention and
  // DeepSeekMoE blocks with auxiliary-loss-free balancing.
  int64_t kv_latent = 0;      // d_c, the compressed key-value latent; 0 means hidden / 2
  int64_t q_latent = 0;       // d'_c, the compressed query latent; 0 means hidden / 2
  int64_t rope_dim = 4;       // d_r, the decoupled RoPE part of each query head and of the shared key
  int shared_experts = 1;     // N_s experts every token goes through
  int dense_layers = 1;       // the first blocks keep a dense SwiGLU MLP
  int expert_hosts = 0;       // hosts the routed experts are grouped on; 0 means one per expert rank
  int node_limit = 1;         // M: hosts a token's experts may be on
  double bias_speed = 0.01;   // gamma: how far an expert's selection bias moves after a step
  double mtp_weight = 0.3;    // lambda: the weight of the multi-token-prediction loss; 0: no MTP module
  std::string recompute = "none";  // none, selective or full (deepseek.h): what the backward redoes
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

// `deepseek`: train/deepseek.h.
// On c.device: each stage moved there once built, inputs and targets made there.
// Throws dualpipe::Error for unknown names or bad sizes. `experts`: the expert
// group of this rank (moe with ep > 1), else ignored.
PipelineModel make_model(const ModelConfig& c, const ExpertGroup& experts = {});

// moe: the inner width of an expert (deepseek's fine-grained experts: hidden / 2 by default).
inline int64_t moe_expert_ffn(const ModelConfig& c) {
  if (c.expert_ffn > 0) return c.expert_ffn;
  return c.name == "deepseek" ? std::max<int64_t>(1, c.hidden / 2) : 2 * c.hidden;
}

// Models whose blocks hold routed experts (sharded over --ep).
inline bool has_experts(const std::string& name) { return name == "moe" || name == "deepseek"; }

}  // namespace dualpipe
