#pragma once
// The CSV interchange form of torch.distributed.pipelining: one row per rank,
// one action string per cell, in issue order. There is no header; the stage
// and micro-batch counts are the largest indices plus one. Empty cells (idle
// slots in PyTorch's dumps) are skipped, and so is a UTF-8 byte-order mark
// at the start of the input.
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe {

void write_csv(std::ostream& out, const Schedule& s);
std::string to_csv(const Schedule& s);

// What a schedule file may hold. The reader streams (it never holds a whole
// line), so memory stays in proportion to the actions it keeps, and it stops
// at the first limit passed: `schedule --from /dev/zero` ends at once with
// one line instead of growing without end. The defaults take a schedule of
// tens of millions of actions (P=512, N=8192 DualPipe with transfers is
// about 100 MB).
struct CsvLimits {
  std::uint64_t max_bytes = std::uint64_t{256} << 20;  // 256 MiB
  std::size_t max_cell = 1024;                         // bytes of one cell; an action string is under 60
  std::size_t max_rows = std::size_t{1} << 16;         // rows with actions (ranks), 65536
};

// `origin` names the source in error messages ("file.csv:3, cell 7: ...").
Schedule read_csv(std::istream& in, const std::string& origin, const CsvLimits& limits = {});
Schedule read_csv_file(const std::string& path, const CsvLimits& limits = {});

}  // namespace dualpipe
