#pragma once
// Recomputation: a piece of a layer's forward whose intermediate tensors are
// not kept for the backward; the backward runs the piece again, with
// gradients, and backpropagates through that copy. Only the piece's inputs
// are kept (and its outputs by whoever uses them). Gradients are exact: the
// piece computes the same values twice.
//
// The piece must be deterministic and free of communication (it runs again
// inside the backward), and `body` must outlive the backward (a module
// member). Parameters the piece uses get their gradients during the
// backward's recomputation, as they would without it; SplitLinears still
// defer theirs to the W pass when their store defers.
//
// Stateless; thread-safety as the piece's modules (one thread at a time).
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace dualpipe {

using RecomputeBody = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

// `body(inputs)`, recomputed in the backward.
std::vector<torch::Tensor> recomputed(const RecomputeBody& body, const std::vector<torch::Tensor>& inputs);

// What a model keeps for its backward (deepseek.h): everything, all but the
// cheap-to-redo parts (norms, attention up-projections and core, the SwiGLU
// product), or only each sublayer's input.
enum class RecomputeMode { None, Selective, Full };
// "none", "selective", "full"; throws dualpipe::Error for anything else.
RecomputeMode parse_recompute(const std::string& name);

}  // namespace dualpipe
