#include "runtime/malloc_tuning.h"

#include <malloc.h>

#include <mutex>

namespace dp {

void tune_malloc_for_tensors() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);  // the largest glibc accepts on 64-bit
    mallopt(M_TRIM_THRESHOLD, 1 << 30);           // 1 GiB free at the top before any is returned
  });
}

double malloc_in_use_bytes() {
  struct mallinfo2 mi = mallinfo2();
  return static_cast<double>(mi.uordblks + mi.hblkhd);
}

}  // namespace dp
