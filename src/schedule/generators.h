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

// For generator implementations: throws unless ranks >= 1 and N >= 1.
void require_basic_shape(const char* method, const Shape& shape);

}  // namespace dp
