#pragma once
// The commands that need LibTorch, with the one-line summary `dualpipe --help`
// shows for each. They live in a separate program (dualpipe-torch), so that
// the other commands start without loading LibTorch; the dualpipe program
// lists them from this table and runs that program for them (torch_program.h).
#include <string_view>

namespace dualpipe::cli {

struct CommandSummary {
  std::string_view name;
  std::string_view summary;
};

// In the order `dualpipe --help` lists them.
inline constexpr CommandSummary torch_commands[] = {
    {"verify",
     "run one step pipelined across local ranks and compare losses and gradients with unpipelined training"},
    {"train",
     "train a model across pipeline ranks (defaults: a small GPT on the built-in corpus, DualPipe on 2 local ranks)"},
    {"bench", "time K pipeline steps after one warm-up step, one thread per rank"},
    {"profile", "measure per-layer costs of a shipped model here (LibTorch), for dualpipe plan --profile"},
};

// The summary of torch command `name` (empty if it is none).
inline std::string_view torch_command_summary(std::string_view name) {
  for (const CommandSummary& c : torch_commands)
    if (c.name == name) return c.summary;
  return {};
}

}  // namespace dualpipe::cli
