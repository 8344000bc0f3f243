#pragma once
// Per-layer costs measured by `dualpipe profile` (LibTorch, on this
// machine), used by the planner in place of its FLOP and byte formulas.
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "dualpipe/plan/cost_model.h"

namespace dualpipe::plan {

struct MeasuredPart {
  double f = 0, i = 0, w = 0, act_bytes = 0;  // seconds, bytes
};

struct MeasuredCosts {
  int micro_batch_size = 1;  // sequences per micro-batch when measured
  // `layer`: a model's block (its MoE block where it has MoE blocks);
  // `dense_layer`: a model's dense blocks where they differ (DeepSeek's
  // first blocks), else absent and `layer` serves every block.
  MeasuredPart layer, embedding, head;
  std::optional<MeasuredPart> dense_layer;
  // > 0: the experts ran on that many devices when measured (a MoE model's
  // profile holds every expert's work on one device: 1), so only that
  // expert-parallel degree fits it; 0: no experts.
  int expert_parallel = 0;
  std::string source;  // where it was read from (parse_measured's `where`), for messages
};

// Throws dualpipe::Error naming the field (`where`.layer.f, ...) when malformed.
MeasuredCosts parse_measured(const nlohmann::json& j, const std::string& where);

// Reads and parses a profile file (`dualpipe profile`'s output); errors start
// with the file name, as model files' do ("p.json: profile.layer.f is
// missing ..."). The result's source is the file name.
MeasuredCosts read_measured_file(const std::string& path);

// Replaces the compute times and activation bytes of every layer (dense
// layers, those without expert parameters, from dense_layer where given),
// the embedding and the head with the measured ones, scaled linearly to the
// micro-batch size of `par` (and adjusted for full recomputation as the
// formulas are); communication and parameters stay as computed. A profile
// is of one device without tensor parallelism, and does not split a layer
// into the pieces selective recomputation drops: the planner uses it for
// tp = 1 without selective recomputation only.
void apply_measured(ModelCosts& mc, const MeasuredCosts& m, const Parallel& par);

}  // namespace dualpipe::plan
