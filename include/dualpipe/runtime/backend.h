#pragma once
// Which c10d backend carries the ranks' process groups. Gloo runs everywhere
// (CPU tensors; device tensors staged through host memory, comm.h). NCCL
// needs a build against a CUDA LibTorch 2.x that has it (CMake then defines
// DUALPIPE_WITH_NCCL) and a CUDA device per rank: its groups carry CUDA
// tensors through NCCL and CPU tensors through Gloo (compat::make_nccl).
// Stateless functions; thread-safe.
#include <string>

namespace dualpipe {

enum class Backend { Gloo, Nccl };

// "gloo" or "nccl"; throws dualpipe::Error for anything else.
Backend parse_backend(const std::string& name);

// Whether this build has NCCL (a CUDA LibTorch with NCCL was found at configure time).
bool nccl_compiled_in();

// Throws dualpipe::Error, one line saying why, when `b` cannot carry this
// run's groups here: NCCL without NCCL compiled in or without a CUDA device.
void require_backend(Backend b);

// CUDA devices LibTorch sees (0 in a CPU-only build).
int visible_devices();

// Throws dualpipe::Error, one line ("--backend nccl: 2 ranks on this machine
// need 2 CUDA devices; 1 visible"), when `ranks_here` ranks started on this
// machine need a CUDA device each (NCCL refuses two ranks on one device) and
// fewer are visible. Nothing for Gloo.
void require_devices(Backend b, int ranks_here);

// The CUDA device of a rank on this machine: local_rank % visible_devices()
// (torchrun's LOCAL_RANK, else the rank); 0 where none is visible.
int rank_device_index(int local_rank);

}  // namespace dualpipe
