#pragma once
// Models the runtime can pipeline, cut into stages.
#include <cstdint>
#include <string>

#include "runtime/stage.h"

namespace dp {

struct ModelConfig {
  std::string name = "mlp";  // mlp or gpt
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
  std::string data_path;  // character-level training text; empty means the built-in corpus
};

// `mlp`: every stage is Linear(h, 4h, no bias) -> GELU -> Linear(4h, h, no
// bias), with an MSE loss on the last stage: the example model of the DualPipe
// reference implementation, so that results compare (`ffn` changes the 4h,
// e.g. to cut the same model into twice as many half-size stages). Inputs and
// targets are seeded random tensors, a function of (seed, micro-batch) only,
// so every rank (and the unpipelined reference) sees the same data; they are
// made once per micro-batch and reused, so steps time the model, not randn.
PipelineModel mlp_model(const ModelConfig& c);

// `gpt`: a small decoder-only transformer on a character corpus (train/gpt.h).
PipelineModel gpt_model(const ModelConfig& c);

// The inner width of an mlp stage.
inline int64_t mlp_ffn(const ModelConfig& c) { return c.ffn > 0 ? c.ffn : 4 * c.hidden; }

// Throws dp::Error for unknown names or bad sizes.
PipelineModel make_model(const ModelConfig& c);

}  // namespace dp
