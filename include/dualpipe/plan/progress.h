#pragma once
// Progress of a long plan or search, reported to a callback the caller
// gives (the command line prints a line on stderr about every second). The
// callback runs on the calling thread, inside plan() or search(), after each
// unit of work; it must be cheap, and must not throw.
#include <functional>

namespace dualpipe::plan {

struct Progress {
  const char* phase = "";  // what is being done, e.g. "simulating candidates"
  long long done = 0, total = 0;
};

using ProgressFn = std::function<void(const Progress&)>;

}  // namespace dualpipe::plan
