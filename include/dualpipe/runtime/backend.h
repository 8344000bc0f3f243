#pragma once
// Which c10d backend carries the ranks' process groups. Gloo runs everywhere
// (CPU tensors; device tensors staged through host memory, comm.h). NCCL
// needs a build against a CUDA LibTorch that has it: CMake then defines
// DUALPIPE_WITH_NCCL. Stateless functions; thread-safe.
#include <string>

namespace dualpipe {

enum class Backend { Gloo, Nccl };

// "gloo" or "nccl"; throws dualpipe::Error for anything else.
Backend parse_backend(const std::string& name);

// Whether this build has NCCL (a CUDA LibTorch with NCCL was found at configure time).
bool nccl_compiled_in();

// Throws dualpipe::Error, one line saying why, when `b` cannot carry this
// run's groups here: NCCL without NCCL compiled in or without a CUDA device,
// and (until the mesh makes NCCL groups) NCCL at all.
void require_backend(Backend b);

}  // namespace dualpipe
