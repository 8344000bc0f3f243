#pragma once
// The one place that knows which LibTorch we build against. Debian ships
// 1.13 (CPU, c10d with Gloo); users may have 2.x with CUDA and NCCL. Every
// call whose spelling differs between them goes through here.
#include <torch/torch.h>
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
// NCCL groups: a CUDA LibTorch 2.x with NCCL (CMake defines DUALPIPE_WITH_NCCL
// and USE_C10D_NCCL, under which the header declares ProcessGroupNCCL).
#if defined(DUALPIPE_WITH_NCCL) && TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define DUALPIPE_NCCL_GROUPS 1
#else
#define DUALPIPE_NCCL_GROUPS 0
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dualpipe::compat {

// Work handle of an asynchronous c10d operation (c10d::Work in 1.13 and 2.x).
using WorkPtr = c10::intrusive_ptr<c10d::Work>;
using StorePtr = c10::intrusive_ptr<c10d::Store>;
// A process group as the runtime holds it. In 1.13 ProcessGroupGloo is a
// c10d::ProcessGroup; in 2.x it is a c10d::Backend, and a ProcessGroup is a
// front that routes each call to the backend registered for the tensors'
// device. The calls used (send, recv, allreduce, barrier, getRank, getSize)
// are spelled the same on both; the all-to-all is all_to_all below.
using GroupPtr = c10::intrusive_ptr<c10d::ProcessGroup>;
// The gradient accumulator node of a leaf tensor, as autograd hands it out:
// a std::shared_ptr in 1.13, a c10::intrusive_ptr in recent 2.x.
using NodePtr = decltype(torch::autograd::impl::grad_accumulator(std::declval<const at::Tensor&>()));

// A Gloo backend (2.x) or group (1.13) as a GroupPtr. In 2.x the one Gloo
// backend serves CPU tensors, and CUDA tensors too, which Gloo handles for
// the collectives (the runtime stages point-to-point transfers of device
// tensors through host memory itself, see comm.h).
template <class Gloo>
GroupPtr as_group(c10::intrusive_ptr<Gloo> gloo, const StorePtr& store, int rank, int world) {
#if TORCH_VERSION_MAJOR >= 2
  auto pg = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
  pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
  pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::GLOO, gloo);
  return pg;
#else
  (void)store, (void)rank, (void)world;
  return gloo;
#endif
}

// Gloo's options: `local` keeps all traffic on loopback (every rank on this
// machine); otherwise Gloo uses GLOO_SOCKET_IFNAME when set, else the
// interface that this machine's hostname resolves to, as torchrun's Gloo
// backend does.
inline c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> gloo_options(std::chrono::milliseconds timeout, bool local) {
  auto opts = c10d::ProcessGroupGloo::Options::create();
  opts->timeout = timeout;
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (local)
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else if (ifname && *ifname)
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return opts;
}

inline GroupPtr make_gloo(const StorePtr& store, int rank, int world, std::chrono::milliseconds timeout, bool local) {
  return as_group(c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, gloo_options(timeout, local)), store,
                  rank, world);
}

// Whether make_nccl can make a group in this build.
constexpr bool kNcclGroups = DUALPIPE_NCCL_GROUPS != 0;

// One group with two backends, as torch.distributed's "cpu:gloo,cuda:nccl":
// CPU tensors go through Gloo, CUDA tensors through NCCL on device `device`
// (this rank's). Gloo is the default backend, so a barrier (which c10d runs
// on a tensor of the default backend's device) is a Gloo barrier and needs
// no CUDA device; the NCCL backend is bound to `device` all the same, so it
// never guesses one. Each backend meets the others under its own prefix of
// `store`. Throws std::logic_error where kNcclGroups is false (callers check
// first: require_backend).
inline GroupPtr make_nccl(const StorePtr& store, int rank, int world, std::chrono::milliseconds timeout, bool local,
                          int device) {
#if DUALPIPE_NCCL_GROUPS
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("cpu", store), rank,
                                                          world, gloo_options(timeout, local));
  auto nccl_opts = c10d::ProcessGroupNCCL::Options::create();
  nccl_opts->timeout = timeout;
  auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("cuda", store), rank,
                                                          world, nccl_opts);
  auto pg = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
  pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
  pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
  // After setBackend, which hands each backend the group's bound device (none).
  nccl->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
  return pg;
#else
  (void)store, (void)rank, (void)world, (void)timeout, (void)local, (void)device;
  throw std::logic_error("NCCL groups need a build against a CUDA LibTorch 2.x with NCCL");
#endif
}

// The name of the backend that carries `group`'s CUDA tensors: "nccl" for
// make_nccl's groups, "gloo" for make_gloo's (1.13: the group's own name).
inline std::string cuda_backend_name(const GroupPtr& group) {
#if TORCH_VERSION_MAJOR >= 2
  return group->getBackend(c10::DeviceType::CUDA)->getBackendName();
#else
  return group->getBackendName();
#endif
}

// A TCPStore client, or the server (server: true) for `world` ranks; a
// server with wait_workers waits in its constructor for them all to connect.
inline StorePtr make_tcp_store(const std::string& host, int port, bool server, int world,
                               std::chrono::milliseconds timeout, bool wait_workers = true) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(port);
  o.isServer = server;
  o.numWorkers = static_cast<std::size_t>(world);
  o.timeout = timeout;
  o.waitWorkers = wait_workers;
  return c10::make_intrusive<c10d::TCPStore>(host, o);
}

// Whether a TCPStore error says the server's port is taken, as each version
// words it: "Address already in use" (1.13) or "... name: EADDRINUSE,
// message: address already in use" (2.x).
inline bool is_address_in_use(const std::string& message) {
  return message.find("Address already in use") != std::string::npos ||
         message.find("EADDRINUSE") != std::string::npos;
}

inline StorePtr make_hash_store() { return c10::make_intrusive<c10d::HashStore>(); }

// Keys of `store` seen under "prefix/": one rendezvous store serves every group.
inline StorePtr make_prefix_store(const std::string& prefix, const StorePtr& store) {
  return c10::make_intrusive<c10d::PrefixStore>(prefix, store);
}

namespace detail {
// all_to_all_single where the group has it (recent 2.x, which deprecates
// alltoall_base: a warning, an error under -Werror), else alltoall_base
// (1.13 and earlier 2.x). The int/long argument prefers the first.
template <class Group>
auto all_to_all(Group& pg, at::Tensor& out, at::Tensor& in, std::vector<std::int64_t>& out_splits,
                std::vector<std::int64_t>& in_splits, int) -> decltype(pg.all_to_all_single(out, in, out_splits, in_splits)) {
  return pg.all_to_all_single(out, in, out_splits, in_splits);
}
template <class Group>
WorkPtr all_to_all(Group& pg, at::Tensor& out, at::Tensor& in, std::vector<std::int64_t>& out_splits,
                   std::vector<std::int64_t>& in_splits, long) {
  return pg.alltoall_base(out, in, out_splits, in_splits);
}
}  // namespace detail

// One all-to-all with per-rank split sizes along dimension 0, asynchronous.
inline WorkPtr all_to_all(c10d::ProcessGroup& pg, at::Tensor& out, at::Tensor& in,
                          std::vector<std::int64_t>& out_splits, std::vector<std::int64_t>& in_splits) {
  return detail::all_to_all(pg, out, in, out_splits, in_splits, 0);
}

inline std::string version() { return TORCH_VERSION; }

}  // namespace dualpipe::compat
