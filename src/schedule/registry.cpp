#include <fmt/format.h>

#include <algorithm>

#include "schedule/error.h"
#include "schedule/generators.h"

namespace dp {

const std::vector<Method>& methods() {
  static const std::vector<Method> list = {
      {"dualpipe", dualpipe, "DeepSeek-V3 bidirectional schedule; P ranks, P stages, two replicas per rank"},
      {"dualpipev", dualpipev, "DualPipe cut in half (V shape); P ranks, 2P stages"},
      {"1f1b", one_f_one_b, "one forward, one backward (PipeDream-Flush); P ranks, P stages"},
      {"gpipe", gpipe, "all forwards, then all backwards; P ranks, P stages"},
      {"interleaved-1f1b", interleaved_1f1b, "Megatron interleaved 1F1B; P ranks, V*P stages (--chunks V)"},
      {"zb1p", zb1p, "zero-bubble ZB-H1 (Qi et al. 2024); P ranks, P stages"},
      {"zbv", zbv, "zero-bubble V schedule (ZB-V); P ranks, 2P stages"},
      {"chimera", chimera, "Chimera bidirectional pipelines (Li & Hoefler 2021); P ranks, P stages"},
  };
  return list;
}

const Method& find_method(const std::string& name) {
  std::string known;
  for (const Method& m : methods()) {
    if (name == m.name) return m;
    known += known.empty() ? m.name : fmt::format(", {}", m.name);
  }
  throw Error(fmt::format("unknown method '{}' (known: {})", name, known));
}

void require_feasible_size(const std::string& method, const Shape& shape) {
  if (shape.ranks < 1 || shape.micro_batches < 1 || shape.chunks < 1) return;  // the generator says why
  // In double: V * P * N of three int arguments can exceed 64 bits.
  const double P = shape.ranks, N = shape.micro_batches;
  const double stages = method == "interleaved-1f1b"           ? P * shape.chunks
                        : method == "dualpipev" || method == "zbv" ? 2 * P
                                                                   : P;
  const double cells = stages * std::max(N, 2 * P);
  if (cells > static_cast<double>(kMaxGeneratedCells))
    throw Error(fmt::format("{} with {} ranks, {} micro-batches{} is too large: {:.3g} (stage, micro-batch) pairs, "
                            "at most {} are supported",
                            method, shape.ranks, shape.micro_batches,
                            method == "interleaved-1f1b" ? fmt::format(" and {} chunks", shape.chunks) : "", cells,
                            kMaxGeneratedCells));
}

Schedule generate(const std::string& method, const Shape& shape) {
  const Method& m = find_method(method);
  require_feasible_size(m.name, shape);
  return m.generate(shape);
}

Schedule compute_only(const Schedule& s) {
  Schedule out = s;
  for (auto& rank : out.actions) {
    rank.clear();
  }
  for (std::size_t r = 0; r < s.actions.size(); ++r)
    for (const Action& a : s.actions[r])
      if (!is_comm(a.op)) out.actions[r].push_back(a);
  return out;
}

}  // namespace dp
