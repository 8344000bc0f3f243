#pragma once
// glibc malloc settings for a process that allocates and frees the same few
// megabyte-sized tensors over and over (activations, gradients, receive
// buffers: LibTorch's CPU allocator is plain malloc).
//
// By default glibc serves every block above 128 KiB (a threshold that only
// creeps up as such blocks are freed) with its own mmap, and unmaps it on
// free, so each new tensor is fresh memory that the kernel must fault in and
// zero page by page; and it trims the top of the heap as soon as 128 KiB are
// free there. For the mlp of the benchmarks (h=512, seq 256, micro-batch 3)
// that was 660 k page faults in two steps and about 14% of the CPU time.
// Raising the mmap threshold to its maximum (32 MiB on 64-bit) and never
// trimming keeps freed tensors in the heap for reuse: 200 k page faults.
// Peak memory is unchanged; memory freed after the peak is kept for reuse
// rather than returned to the system. Used by the executor, by the
// benchmarks' memory figures and by the programs' process policy.
namespace dualpipe {

// Process-wide; idempotent. Called by every RankExecutor.
void tune_malloc_for_tensors();

// Bytes the process holds on the heap now (malloc's in-use bytes, all
// arenas; LibTorch's CPU allocator is malloc). Walks malloc's free lists:
// tens to hundreds of microseconds, not for hot paths.
double malloc_in_use_bytes();

}  // namespace dualpipe
