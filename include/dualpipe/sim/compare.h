#pragma once
// The published comparison table (docs/design.md), computed: every method on
// the same model cut into PP equal stages of cost F/B/W, simulated under the
// same costs, next to the closed-form bubble where the literature gives one.
#include <optional>
#include <string>
#include <vector>

#include "dualpipe/sim/cost.h"
#include "dualpipe/sim/data_parallel.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe {

struct CompareRow {
  std::string method;
  std::string error;  // non-empty when the method does not support this shape
  int devices = 0;    // ranks the method uses for PP stages (V shapes: PP/2)
  int stages = 0;     // stages the method cuts the model into
  double makespan = 0, bubble = 0, bubble_ratio = 0;
  std::optional<double> published_bubble;  // the literature's formula, if it has one
  double params_per_device = 0;            // relative to 1F1B on PP stages
  double peak_activations = 0;             // largest over ranks, in units of one PP-stage activation
  std::string published_activations;       // the literature's figure, as text ("9", "~11.5", "5..8", "-")
  // The same as numbers: a value (the low end of a range), the high end of a
  // range, and whether the literature gives it as approximate.
  std::optional<double> published_activations_value, published_activations_max;
  bool published_activations_approx = false;
  // With all-to-all costs: the most exposed all-to-all time of a device, and
  // the share of all devices' all-to-all time hidden behind compute.
  double exposed_a2a = 0, a2a_hidden = 0;
  // With data-parallel options (DataParallel): the step including the
  // gradient reductions, the most exposed reduction of a device, and the
  // memory in bytes of the device that needs the most.
  double step_with_grad_reduce = 0, exposed_grad_reduce = 0;
  RankMemory peak_memory;
  int peak_memory_rank = 0;
  // What the row simulated: the costs and data-parallel byte sizes of its
  // own stages (a finer cut's stages at their share), so that
  // simulate(generate(method, {devices, N, chunks}), costs) is this row.
  Costs costs;
  DataParallel data_parallel;
};

// What the rows share. Devices (the default, as the command line's): every
// method on PP devices (as `simulate --ranks PP`), the V-shaped ones cutting
// the model into 2·PP half-size stages. Stages: the model cut into PP
// stages (the published table's form), so the V-shaped methods, with two
// stages a device, use PP/2 devices.
enum class CompareBasis { Stages, Devices };

// PP: pipeline stages of the reference cut (devices for 1F1B). `chunks`: v of
// interleaved 1F1B. A cost means what it means to simulate(): the time of
// one stage on one micro-batch, here of a stage of the reference cut (1/PP
// of the model); a method that cuts the model finer runs each of its stages
// at its share (CompareRow::costs).
// `dpo`: data parallelism, with its byte sizes per PP-stage (a finer stage
// holds proportionally fewer bytes, as it costs less).
std::vector<CompareRow> compare(int PP, int N, const Costs& c, int chunks = 2,
                                CompareBasis basis = CompareBasis::Devices, const DataParallel& dpo = {});

// The published bubble formula for `method` (docs/design.md), if any.
std::optional<double> published_bubble(const std::string& method, int PP, const Costs& c, int chunks);

}  // namespace dualpipe
