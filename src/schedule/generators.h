#pragma once
// Schedule generators: each one is a small pure function of the shape.
// They throw dp::Error with the valid range when a shape is not supported.
#include <string>
#include <vector>

#include "schedule/schedule.h"

namespace dp {

struct Shape {
  int ranks = 0;          // P
  int micro_batches = 0;  // N
  int chunks = 2;         // stages per rank, for interleaved-1f1b only
};

Schedule gpipe(const Shape& shape);
Schedule one_f_one_b(const Shape& shape);
Schedule interleaved_1f1b(const Shape& shape);
Schedule zb1p(const Shape& shape);
Schedule zbv(const Shape& shape);
Schedule dualpipe(const Shape& shape);
Schedule dualpipev(const Shape& shape);
Schedule chimera(const Shape& shape);

// Registry: name -> generator, so the command line, the tests and the
// benchmarks enumerate one list. Adding a schedule adds one entry here.
struct Method {
  const char* name;
  Schedule (*generate)(const Shape&);
  const char* summary;
};
const std::vector<Method>& methods();
// Throws dp::Error listing the known names.
const Method& find_method(const std::string& name);
Schedule generate(const std::string& method, const Shape& shape);

// The largest schedule generate() builds: stages x micro-batches (stage,
// micro-batch) pairs, each of which costs about 120 bytes through generation,
// checking and simulation (three actions and the checker's tables), so the
// limit is about 2 GB. Without it, "-p 99999999" runs for hours or exhausts
// memory instead of saying no. DualPipe at P=512, N=8192 (the benchmark's
// largest case) needs 4.2 M.
inline constexpr long long kMaxGeneratedCells = 1LL << 24;
// Throws dp::Error, stating the limit, when `method` at `shape` would exceed
// it. Counts the stages the method uses (V*P, 2P or P) and at least 2P
// micro-batches, because DualPipe and ZB-V build that many for small N.
void require_feasible_size(const std::string& method, const Shape& shape);

// For generator implementations: throws unless ranks >= 1 and N >= 1.
void require_basic_shape(const char* method, const Shape& shape);

}  // namespace dp
