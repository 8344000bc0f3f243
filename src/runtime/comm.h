#pragma once
// Point-to-point and collective calls of one rank, over c10d.
#include <chrono>
#include <exception>
#include <memory>
#include <string>

#include "runtime/torch_compat.h"
#include "schedule/error.h"

namespace dp {

// A peer rank died or stalled while this rank waited for it. A dp::Error, so
// the command line prints it as its one line.
struct PeerError : Error {
  using Error::Error;
};

// The one line for a failed wait: "rank R: timed out after T s waiting for
// rank P (WHAT)" when the wait ran out of time, "rank R: lost connection to
// rank P while waiting for WHAT" when Gloo saw the connection drop (a killed
// peer). peer < 0: a collective, where any of the other ranks may be the cause.
std::string wait_failure_message(int rank, int peer, std::chrono::milliseconds timeout, const std::string& what,
                                 const std::exception& cause);

struct Comm {
  int rank = 0;
  int world = 1;
  compat::GlooPtr pg;
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};

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
      throw PeerError(wait_failure_message(rank, peer, timeout, describe(), e));
    }
  }

  compat::WorkPtr isend(torch::Tensor& t, int peer, int tag) {
    std::vector<torch::Tensor> v{t};
    return pg->send(v, peer, tag);
  }
  compat::WorkPtr irecv(torch::Tensor& t, int peer, int tag) {
    std::vector<torch::Tensor> v{t};
    return pg->recv(v, peer, tag);
  }
  // In place; every rank of the group must call it.
  // `what` names the collective in the error if a rank fails to join it.
  void all_reduce(torch::Tensor& t, c10d::ReduceOp op = c10d::ReduceOp::SUM, const std::string& what = "an all-reduce") {
    std::vector<torch::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.reduceOp = op;
    wait(pg->allreduce(v, o), -1, [&] { return what; });
  }
  void barrier(const std::string& what = "a barrier") {
    wait(pg->barrier(), -1, [&] { return what; });
  }
};

// Rendezvous over a store shared by all ranks (a TCPStore across processes,
// a HashStore between threads of one process).
// `local`: all ranks on this machine, so Gloo stays on loopback.
std::shared_ptr<Comm> connect(const compat::StorePtr& store, int rank, int world,
                              std::chrono::milliseconds timeout = std::chrono::minutes(5), bool local = true);

}  // namespace dp
