#include "dualpipe/runtime/backend.h"

#include <fmt/format.h>
#include <torch/cuda.h>

#include "dualpipe/schedule/error.h"

namespace dualpipe {

Backend parse_backend(const std::string& name) {
  if (name == "gloo") return Backend::Gloo;
  if (name == "nccl") return Backend::Nccl;
  throw Error(fmt::format("--backend must be gloo or nccl (got '{}')", name));
}

bool nccl_compiled_in() {
#ifdef DUALPIPE_WITH_NCCL
  return true;
#else
  return false;
#endif
}

void require_backend(Backend b) {
  if (b == Backend::Gloo) return;
  if (!nccl_compiled_in())
    throw Error("--backend nccl: this dualpipe was built against a LibTorch without CUDA and NCCL (CPU only); use "
                "--backend gloo, or rebuild against a CUDA LibTorch");
  if (!torch::cuda::is_available())
    throw Error("--backend nccl: no CUDA device is visible to this process; use --backend gloo");
  throw Error("--backend nccl: the ranks' process groups are Gloo groups in this version; use --backend gloo");
}

}  // namespace dualpipe
