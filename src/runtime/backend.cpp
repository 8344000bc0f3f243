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
}

int visible_devices() { return static_cast<int>(torch::cuda::device_count()); }

void require_devices(Backend b, int ranks_here) {
  if (b == Backend::Gloo) return;
  const int visible = visible_devices();
  if (ranks_here > visible)
    throw Error(fmt::format("--backend nccl: {} rank{} on this machine need{} {} CUDA device{}; {} visible", ranks_here,
                            ranks_here == 1 ? "" : "s", ranks_here == 1 ? "s" : "", ranks_here,
                            ranks_here == 1 ? "" : "s", visible));
}

int rank_device_index(int local_rank) {
  const int visible = visible_devices();
  return visible > 0 ? local_rank % visible : 0;
}

}  // namespace dualpipe
