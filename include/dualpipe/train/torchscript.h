#pragma once
// `torchscript`: the user's own model, one TorchScript module per pipeline
// stage, scripted and saved from Python (torch.jit.script(m).save(path)).
//
// Stage s is a load of ModelConfig::stage_files[s]: its forward takes one
// tensor and returns one tensor. Every load of a file starts equal, so the
// two copies of a stage that DualPipe keeps are two loads of one file, and
// their gradients are summed as the shipped models' are. Each stage is
// wrapped in a torch::nn::Module that registers the TorchScript module's
// parameters (the same tensors, under the same dotted names as in Python), so
// the optimizer, the gradient reduction and checkpoints work on them as on
// any stage. The backward splits by autograd (Stage::autograd_split).
//
// Data (ModelConfig::data_path):
//   empty:  the built-in corpus as the gpt model reads it (corpus.h): the
//           input is [micro_batch_size, seq_len] int64 token ids, the target
//           the next characters, same shape.
//   a file: torch.save({"inputs": X, "targets": Y}, path) from Python, X and
//           Y tensors with the same first dimension (the samples). Micro-batch
//           g (counted over the steps: step * micro-batches + mb) takes the
//           rows g*b .. g*b+b-1 of both, wrapping around, b = micro_batch_size.
//   FILE.bin: token ids, little-endian uint16 one after the other (numpy:
//           np.array(ids, dtype=np.uint16).tofile(path)). Row r of micro-
//           batch g is the window of seq_len + 1 ids at ((g*b + r) * seq_len)
//           mod (n - seq_len): the input its first seq_len, the target its
//           last seq_len, both [b, seq_len] int64.
// Loss (ModelConfig::loss_file): a TorchScript module without parameters
// whose forward(output, target) returns the micro-batch's mean loss; empty:
// cross-entropy over the output's last dimension for integer targets, mean
// squared error for floating ones.
//
// torchscript_model() loads every file once and runs micro-batch 0 through
// the stages and the loss, so that a file that is not a TorchScript module,
// a stage that cannot take the previous stage's output, stage boundaries of
// different shapes, a data file of the wrong kind or a loss that is not a
// scalar fail at once with one line naming the file or stage (dualpipe::Error).
// The tensor that crosses every stage boundary must have one shape and dtype
// (the runtime's receive buffers have one); the model's dtype is the stages'
// own (ModelConfig::dtype is not used).
#include <string>

#include "dualpipe/train/models.h"

namespace dualpipe {

PipelineModel torchscript_model(const ModelConfig& c);

// What identifies a file's content in a run's identity: "<n> bytes, fnv1a64
// <hex>", or the path itself when it cannot be read (the loader reports it).
std::string file_identity(const std::string& path);

}  // namespace dualpipe
