#pragma once
// Pieces of the JSON reports of train, verify and bench (--format json, in
// the shape of json_output.h): the run's inputs, the compute threads.
// docs/json_output.md lists the fields.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "dualpipe/runtime/launch.h"
#include "cli/json_output.h"
#include "cli/torch_common.h"
#include "dualpipe/schedule/schedule.h"

namespace dualpipe::cli {

// The run's inputs: schedule, model and how the ranks run; the command's
// results go beside them in the same object.
inline nlohmann::json run_inputs_json(const Schedule& s, const ModelOptions& m, const RankOptions& r, uint64_t seed) {
  nlohmann::json model = {{"name", m.model},   {"dtype", m.dtype},
                          {"hidden", m.hidden}, {"seq_len", m.seq_len},
                          {"micro_batch_size", m.micro_batch_size}};
  if (m.model == "mlp") model["ffn"] = m.ffn > 0 ? m.ffn : 4 * m.hidden;
  if (m.model != "mlp") {
    model["layers"] = m.layers > 0 ? m.layers : std::max(s.stages, 4);
    model["heads"] = m.heads;
    model["data"] = m.data.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.data);
  }
  if (has_experts(m.model))
    model.update({{"experts", m.experts}, {"top_k", m.top_k}, {"shared_expert", m.shared_expert}});
  return {{"method", s.method},
          {"ranks", s.ranks},
          {"stages", s.stages},
          {"micro_batches", s.micro_batches},
          {"ep", r.ep},
          {"dp", r.dp},
          {"zero", r.zero},
          {"bucket_mb", r.bucket_mb},
          {"model", model},
          {"seed", seed},
          {"rank_kind", r.threads ? "threads" : "processes"},
          {"intra_op_threads", r.intra_op_threads},
          {"timeout_s", r.timeout_s}};
}

// The compute threads in effect in the process that writes the summary
// (rank 0): LibTorch's intra-op threads and OpenBLAS's (null: not OpenBLAS).
inline nlohmann::json threads_json() {
  const ComputeThreads t = compute_threads();
  return {{"intra_op", t.intra_op}, {"blas", t.blas >= 0 ? nlohmann::json(t.blas) : nlohmann::json(nullptr)}};
}

}  // namespace dualpipe::cli
