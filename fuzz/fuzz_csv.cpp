// libFuzzer target: the CSV reader, then the checker, on arbitrary bytes.
// Users hand us these files, so every input must end in a schedule or a
// dualpipe::Error; anything else (a crash, a sanitizer report, an exception of
// another type, a hang, gigabytes of memory) is a bug.
// When the file is a valid compute-only schedule we go on through lowering
// and simulation and trap if their documented invariants fail: the lowered
// schedule is valid and, with free transfers, simulates to the same step.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "invariants.h"
#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/sim/simulate.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  dualpipe::Schedule s;
  try {
    s = dualpipe::read_csv(in, "fuzz.csv");
  } catch (const dualpipe::Error&) {
    return 0;
  }
  const dualpipe::CheckReport rep = dualpipe::check(s);
  if (!rep.ok()) {
    // Report lines are what the CLI prints: each must be one line.
    for (const std::string& e : rep.errors)
      if (e.empty() || e.find('\n') != std::string::npos) __builtin_trap();
    return 0;
  }
  require_valid_schedule_invariants(s);
  return 0;
}
