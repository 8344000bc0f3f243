#pragma once
// `gpt`: a small decoder-only transformer (GPT-2 layout, pre-LayerNorm) for
// character-level language modelling, cut into pipeline stages.
//
//   stage 0:       token embedding + position embedding
//   every stage:   its share of the L transformer blocks
//                    x = x + proj(attention(ln1(x)))   causal, `heads` heads
//                    x = x + proj(gelu(fc(ln2(x))))    d -> 4d -> d
//   last stage:    final LayerNorm + LM head (d -> vocab);
//                  loss = cross-entropy, mean over the tokens of the micro-batch
//
// Stage s of S gets blocks [s*L/S, (s+1)*L/S) (integer division): the counts
// differ by at most one, later stages get the extra ones, and when S > L some
// stages get none (a middle stage without blocks is the identity and has no
// parameters). A one-stage model has everything.
//
// Every Linear (attention qkv and output, MLP fc and proj, LM head) is a
// SplitLinear without bias, so the zero-bubble I/W split defers their weight
// gradients; LayerNorms and embeddings are torch::nn modules whose weight
// gradients come during I.
//
// Between stages travels the hidden state [micro_batch_size, seq_len, hidden]
// in the model dtype. Stage 0 takes the int64 token ids [micro_batch_size,
// seq_len]; the last stage's output is the logits, which loss() compares with
// the next characters. Data: see corpus.h; input(mb) and loss(mb) serve the
// micro-batch mb of the step last given to begin_step(k) (0 before any).
//
// Initialisation as GPT-2: linears and embeddings normal(0, 0.02), the two
// projections that write into the residual stream normal(0, 0.02/sqrt(2L)),
// LayerNorms ones and zeros; drawn from a generator seeded by (seed, stage),
// so every replica of a stage starts bit-identical.
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "dualpipe/runtime/split_linear.h"
#include "dualpipe/train/corpus.h"

#include "dualpipe/train/models.h"

namespace dualpipe {

// moe: the MoE layer settings of a config; throws dualpipe::Error for bad ones.
MoeConfig moe_config(const ModelConfig& c);
void check_moe(const ModelConfig& c);

// deepseek: the hosts the routed experts are grouped on (--expert-hosts, or
// one per expert rank when it is 0).
int expert_hosts(const ModelConfig& c);

// GPT-2 initialisation of every module of `mod` in its (deterministic)
// registration order: LayerNorms ones and zeros, embeddings and SplitLinears
// normal(0, 0.02), SplitLinears named "...proj" (they add into the residual
// stream) normal(0, 0.02 / sqrt(2 layers)); routed experts are skipped
// (MoeLayer::init_experts draws them).
void init_transformer_weights(torch::nn::Module& mod, int layers, at::Generator& gen);

// Serves `corpus` to `m` as gpt does (begin_step, input: the first seq_len
// characters of each window); returns the micro-batch's windows of seq_len+1
// characters, for the loss.
std::function<torch::Tensor(int mb)> feed_corpus(PipelineModel& m, const ModelConfig& c,
                                                 std::shared_ptr<const Corpus> corpus);

// The Stage of a transformer stage module (gpt, moe, deepseek): its forward,
// the linears whose weight gradients the I/W split defers, and, with
// `experts`, which parameters are routed experts (sharded, not summed).
Stage transformer_stage(std::shared_ptr<torch::nn::Module> module,
                        std::function<torch::Tensor(const torch::Tensor&)> forward, std::vector<SplitLinear> linears,
                        bool experts);

// The SplitLinears of `blocks` (each with split_linears()), in order.
template <class Blocks>
std::vector<SplitLinear> blocks_split_linears(const Blocks& blocks) {
  std::vector<SplitLinear> all;
  for (const auto& b : blocks) {
    auto l = b->split_linears();
    all.insert(all.end(), l.begin(), l.end());
  }
  return all;
}

// The Stage of stage `stage` of a transformer model whose stage module
// (a ModuleHolder with `blocks`, each maybe with a MoE layer) is `mod`:
// initialised from a generator seeded by (seed, stage) alone, so that every
// replica of a stage, on any rank, starts bit-identical; routed experts from
// their own generators (MoeLayer::init_experts).
template <class StageModule>
Stage init_transformer_stage(StageModule mod, const ModelConfig& c, int stage, int layers, bool experts) {
  auto gen = at::detail::createCPUGenerator(c.seed * 7919 + static_cast<uint64_t>(stage));
  init_transformer_weights(*mod, layers, gen);
  for (auto& b : mod->blocks)
    if (b->moe) b->moe->init_experts(layers);
  return transformer_stage(
      mod.ptr(), [mod](const torch::Tensor& x) mutable { return mod->forward(x); }, mod->split_linears(), experts);
}

// L for a config: c.layers, or max(stages, 4) when it is 0.
int gpt_layers(const ModelConfig& c);

// The blocks of stage `stage`: [first, end) of `layers`, cut over `stages`.
std::pair<int, int> gpt_blocks(int stage, int stages, int layers);

}  // namespace dualpipe
