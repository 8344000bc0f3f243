#pragma once
// The communication interface of the runtime: point-to-point transfers and
// the few collectives it uses, among the ranks of one group (a pipeline, the
// expert ranks of one stage, the whole job). The executor and the layers talk
// to a Comm only, so a caller can hand in their own process groups, and a
// backend other than Gloo (NCCL on GPUs) is one more subclass, not a change
// to the executor.
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dualpipe/runtime/backend.h"
#include "dualpipe/runtime/torch_compat.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe {

// A peer rank died or stalled while this rank waited for it. A dualpipe::Error, so
// the command line prints it as its one line.
struct PeerError : Error {
  PeerError(const std::string& message, bool timed_out_) : Error(message), timed_out(timed_out_) {}
  // The wait ran out of time (else: the connection dropped). Gloo closes a
  // pair whose wait timed out, so other waits on that pair fail next with a
  // lost connection: when both are seen, the timeout is the cause.
  bool timed_out = false;
};

// True if `e` is a PeerError that timed out.
bool is_timeout(const std::exception_ptr& e);

// The one line for a failed wait: "rank R: timed out after T s waiting for
// rank P (WHAT)" when the wait ran out of time, "rank R: lost connection to
// rank P while waiting for WHAT" when Gloo saw the connection drop (a killed
// peer). peer < 0: a collective, where any of the other ranks may be the cause.
std::string wait_failure_message(int rank, int peer, std::chrono::milliseconds timeout, const std::string& what,
                                 const std::exception& cause);
// Whether a c10d/Gloo failure text says the wait ran out of time.
bool is_timeout_text(const std::string& text);

// One group of ranks. Thread-safety: calls may come from several threads of
// one rank (the two tasks of an overlapped F&B pair), but the collectives of
// one group must be issued in the same order on every member, so a rank uses
// one group per thread of control (see Mesh::expert and expert_bwd).
class Comm {
 public:
  virtual ~Comm() = default;

  int rank = 0;   // this rank's index in the group
  int world = 1;  // ranks in the group
  // Ranks in errors are the job's ranks: global_ranks[i] is member i (empty:
  // the group is the whole job).
  std::vector<int> global_ranks;
  std::string name = "world";  // for errors: "pipeline", "expert", ...
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // Tensors on a device (CUDA) travel through host copies: Gloo moves host
  // memory only. A backend that moves device memory itself (NCCL) sets this
  // false. Host tensors are never copied.
  bool host_staging = true;
  // Point-to-point transfers of device tensors through host copies even
  // where host_staging is false. NCCL pairs a rank's sends with its peer's
  // receives in the order they are posted, ignoring tags; the executor posts
  // receives ahead and sends from both halves of an F&B pair, an order only
  // the tags make unambiguous. A Comm over an NCCL group (connect) sets it:
  // its transfers go through the group's Gloo backend, its collectives
  // through NCCL on the device.
  bool stage_transfers = false;

  virtual compat::WorkPtr isend(torch::Tensor& t, int peer, int tag) = 0;
  virtual compat::WorkPtr irecv(torch::Tensor& t, int peer, int tag) = 0;
  virtual compat::WorkPtr iall_reduce(torch::Tensor& t, c10d::ReduceOp op) = 0;
  // Row blocks of `in` go to the members in order (in_splits[i] rows to
  // member i); out receives out_splits[i] rows from member i. Both contiguous.
  virtual compat::WorkPtr iall_to_all(torch::Tensor& out, torch::Tensor& in, std::vector<int64_t>& out_splits,
                                      std::vector<int64_t>& in_splits) = 0;
  virtual compat::WorkPtr ibarrier() = 0;
  // In place on `flat`, world equal chunks: after the wait, this member's
  // chunk holds the sum of every member's chunk (the rest is unspecified).
  virtual compat::WorkPtr ireduce_scatter(torch::Tensor& flat) = 0;
  // In place on `flat`, world equal chunks: this member's chunk goes to all;
  // after the wait every chunk holds its member's.
  virtual compat::WorkPtr iall_gather(torch::Tensor& flat) = 0;

  // The job rank of member `peer` (for messages).
  int global(int peer) const { return global_ranks.empty() || peer < 0 ? peer : global_ranks[peer]; }

  // Waits for `work` at most `timeout`. A c10d/Gloo failure (a timeout, or a
  // connection error when the peer process died) comes out of LibTorch as a
  // long text with a backtrace; it leaves here as one PeerError line naming
  // the peer and describe(), which is only called on failure so that waits on
  // the hot path format nothing.
  template <class Describe>
  void wait(const compat::WorkPtr& work, int peer, Describe&& describe) const {
    try {
      work->wait(timeout);
    } catch (const std::exception& e) {
      throw PeerError(wait_failure_message(global(rank), global(peer), timeout, describe(), e), is_timeout_text(e.what()));
    }
  }

  // In place; every member must call it. `what` names the collective in the
  // error if a rank fails to join it.
  void all_reduce(torch::Tensor& t, c10d::ReduceOp op = c10d::ReduceOp::SUM, const std::string& what = "an all-reduce") {
    wait(iall_reduce(t, op), -1, [&] { return what; });
  }
  void barrier(const std::string& what = "a barrier") {
    wait(ibarrier(), -1, [&] { return what; });
  }
};

// A Comm over a c10d process group: Gloo here, or any c10d group (with
// host_staging false where it moves device tensors itself, as NCCL does).
// A staged transfer copies a device tensor to the host before posting, and a
// received or reduced result back to the device when the work is waited on
// (or seen completed).
// Ownership: shares the process group. Thread-safety: as Comm.
class C10dComm : public Comm {
 public:
  explicit C10dComm(compat::GroupPtr pg) : pg_(std::move(pg)) {}
  compat::WorkPtr isend(torch::Tensor& t, int peer, int tag) override;
  compat::WorkPtr irecv(torch::Tensor& t, int peer, int tag) override;
  compat::WorkPtr iall_reduce(torch::Tensor& t, c10d::ReduceOp op) override;
  compat::WorkPtr iall_to_all(torch::Tensor& out, torch::Tensor& in, std::vector<int64_t>& out_splits,
                              std::vector<int64_t>& in_splits) override;
  compat::WorkPtr ibarrier() override;
  compat::WorkPtr ireduce_scatter(torch::Tensor& flat) override;
  compat::WorkPtr iall_gather(torch::Tensor& flat) override;
  const compat::GroupPtr& group() const { return pg_; }

 private:
  bool staged(const torch::Tensor& t) const;
  bool staged_transfer(const torch::Tensor& t) const;
  // The all-to-all of host tensors: receives first, then sends.
  compat::WorkPtr exchange_rows(torch::Tensor& out, torch::Tensor& in, const std::vector<int64_t>& out_splits,
                                const std::vector<int64_t>& in_splits);
  // Posts `post` on a host copy of `device` (copied in first when copy_in),
  // and copies the host result back into `device` on completion when copy_out.
  compat::WorkPtr stage(const torch::Tensor& device, bool copy_in, bool copy_out,
                        const std::function<compat::WorkPtr(torch::Tensor&)>& post);
  compat::GroupPtr pg_;
};

// Wraps a caller's c10d process group (rank and size are read from it).
std::shared_ptr<Comm> wrap_group(compat::GroupPtr pg, std::chrono::milliseconds timeout,
                                 std::vector<int> global_ranks = {}, std::string name = "world");

// A group of `world` ranks that meet through `store` (a TCPStore across
// processes, a HashStore between threads of one process, a PrefixStore for a
// subgroup). `local`: all ranks on this machine, so Gloo stays on loopback.
// Gloo: a Gloo group, device tensors staged through host memory. NCCL
// (require_backend first): CUDA tensors of the collectives through NCCL on
// CUDA device `device` (host_staging false), transfers and CPU tensors
// through Gloo (stage_transfers).
std::shared_ptr<Comm> connect(const compat::StorePtr& store, int rank, int world,
                              std::chrono::milliseconds timeout = std::chrono::minutes(5), bool local = true,
                              Backend backend = Backend::Gloo, int device = 0);

}  // namespace dualpipe
