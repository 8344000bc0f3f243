#pragma once
// Character-level text for the `gpt` model.
//
// A token is one byte of the text; the vocabulary is the sorted set of
// distinct bytes that occur in it (so a plain English text has ~60 tokens,
// not 256, and the LM head stays small). Token id = rank of the byte in that
// sorted set.
//
// Training data are windows of the text. Row `row` of micro-batch `mb` of
// training step `step` is the window of `len` characters starting at a
// position hashed from (seed, step, mb, row) alone: integer arithmetic, no
// random generator state, so every rank, every process and the unpipelined
// reference read the same tokens for the same (step, mb).
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace dualpipe {

// A tokenised training text. Ownership: owns its tokens. Thread-safety: const
// methods are safe from several threads; copies share the token tensor.
class Corpus {
 public:
  // `name` is what messages call the text: the file path or "built-in corpus".
  Corpus(const std::string& text, std::string name);

  const std::string& name() const { return name_; }
  int64_t size() const { return ids_.size(0); }  // characters (bytes)
  int64_t vocab() const { return static_cast<int64_t>(alphabet_.size()); }
  const std::vector<unsigned char>& alphabet() const { return alphabet_; }
  const torch::Tensor& ids() const { return ids_; }  // the whole text as int64 token ids

  // First character of one window of `len` characters; needs len <= size().
  int64_t window_start(uint64_t seed, int64_t step, int mb, int64_t row, int64_t len) const;
  // [rows, len] int64 token ids: rows 0..rows-1 of micro-batch mb of `step`.
  torch::Tensor windows(uint64_t seed, int64_t step, int mb, int64_t rows, int64_t len) const;

  std::string decode(const torch::Tensor& ids) const;

 private:
  std::string name_;
  std::vector<unsigned char> alphabet_;  // sorted distinct bytes
  torch::Tensor ids_;                    // [size] int64
};

// The text shipped with the project: a few KB of original English prose
// written for it, so training works with no data at hand.
const std::string& builtin_text();

// The text of `path`, or the built-in one when `path` is empty. Throws
// dualpipe::Error (one line, naming the file) if the file is missing, unreadable,
// empty, or has fewer than `min_chars` characters.
Corpus load_corpus(const std::string& path, int64_t min_chars);

}  // namespace dualpipe
