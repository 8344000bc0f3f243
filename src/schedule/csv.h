#pragma once
// The CSV interchange form of torch.distributed.pipelining: one row per rank,
// one action string per cell, in issue order. There is no header; the stage
// and micro-batch counts are the largest indices plus one. Empty cells (idle
// slots in PyTorch's dumps) are skipped.
#include <iosfwd>
#include <string>

#include "schedule/schedule.h"

namespace dp {

void write_csv(std::ostream& out, const Schedule& s);
std::string to_csv(const Schedule& s);

// `origin` names the source in error messages ("file.csv:3, cell 7: ...").
Schedule read_csv(std::istream& in, const std::string& origin);
Schedule read_csv_file(const std::string& path);

}  // namespace dp
