#include "dualpipe/runtime/malloc_tuning.h"

#include <malloc.h>

#include <mutex>

// Under AddressSanitizer or ThreadSanitizer malloc is the sanitizer's, and
// glibc's mallinfo2 sees none of it; ask the sanitizer's allocator instead,
// so that memory figures and their tests mean the same in a sanitized build.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DP_SANITIZER_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DP_SANITIZER_ALLOCATOR 1
#endif
#endif
#ifdef DP_SANITIZER_ALLOCATOR
#include <cstddef>
// Declared here: GCC ships the sanitizer runtime but not this header (clang
// does, in sanitizer/allocator_interface.h).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace dualpipe {

void tune_malloc_for_tensors() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);  // the largest glibc accepts on 64-bit
    mallopt(M_TRIM_THRESHOLD, 1 << 30);           // 1 GiB free at the top before any is returned
  });
}

double malloc_in_use_bytes() {
#ifdef DP_SANITIZER_ALLOCATOR
  return static_cast<double>(__sanitizer_get_current_allocated_bytes());
#else
  struct mallinfo2 mi = mallinfo2();
  return static_cast<double>(mi.uordblks + mi.hblkhd);
#endif
}

}  // namespace dualpipe
