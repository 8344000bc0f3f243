// PLACEHOLDER, being written: interleaved 1F1B.
#include "schedule/error.h"
#include "schedule/generators.h"
namespace dp {
Schedule interleaved_1f1b(const Shape&) { throw Error("interleaved-1f1b: not written yet"); }
}  // namespace dp
