#pragma once
// Cutting the layers into pipeline stages. Where each stage runs is the
// schedule's placement (schedule/placement.h: one stage per rank; DualPipe
// and Chimera: stages r and P-1-r on rank r; V shapes: r and 2P-1-r;
// interleaved: r, r+P, ...), and the first and last stages also carry the
// embedding and the head, so an even split of the layers is rarely the
// balanced one.
#include <string>
#include <vector>

#include "dualpipe/schedule/placement.h"

namespace dualpipe::plan {

// [rank] -> the stages it runs, with the share of the micro-batches each
// gets there (DualPipe and Chimera run each of their two stages on half).
struct HeldStage {
  int stage;
  double share;
};
std::vector<std::vector<HeldStage>> held_stages(const Placement& placement);

// Layers per stage (each at least 1) that minimise the busiest rank's work
// per micro-batch, then the slowest stage. `layer_time[l]`: work of layer l;
// `first_extra`, `last_extra`: the embedding's and the head's. The stages
// are those of `placement` (of the schedule that will run them).
std::vector<int> balance_layers(const std::vector<double>& layer_time, double first_extra, double last_extra,
                                const Placement& placement);

// A cut given by hand: "8,8,8,7" (layers per stage) or in the spirit of
// Megatron's pipeline layout, "Et*8|t*8|t*8|t*7L" (E: embedding, t: a layer,
// L: loss/head; stages separated by '|'), where a first stage "E" alone or
// a last stage "L" alone holds no layer (0). Throws dualpipe::Error naming
// what is wrong unless it has `stages` stages whose layers add up to `layers`.
std::vector<int> parse_layout(const std::string& text, int stages, int layers);

// "8,8,8,7".
std::string layout_text(const std::vector<int>& layers_per_stage);

}  // namespace dualpipe::plan
