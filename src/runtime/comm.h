#pragma once
// Point-to-point and collective calls of one rank, over c10d.
#include <chrono>
#include <memory>
#include <string>

#include "runtime/torch_compat.h"

namespace dp {

struct Comm {
  int rank = 0;
  int world = 1;
  compat::GlooPtr pg;
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};

  compat::WorkPtr isend(torch::Tensor& t, int peer, int tag) {
    std::vector<torch::Tensor> v{t};
    return pg->send(v, peer, tag);
  }
  compat::WorkPtr irecv(torch::Tensor& t, int peer, int tag) {
    std::vector<torch::Tensor> v{t};
    return pg->recv(v, peer, tag);
  }
  // In place; every rank of the group must call it.
  void all_reduce(torch::Tensor& t, c10d::ReduceOp op = c10d::ReduceOp::SUM) {
    std::vector<torch::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.reduceOp = op;
    pg->allreduce(v, o)->wait(timeout);
  }
  void barrier() { pg->barrier()->wait(timeout); }
};

// Rendezvous over a store shared by all ranks (a TCPStore across processes,
// a HashStore between threads of one process).
// `local`: all ranks on this machine, so Gloo stays on loopback.
std::shared_ptr<Comm> connect(const compat::StorePtr& store, int rank, int world,
                              std::chrono::milliseconds timeout = std::chrono::minutes(5), bool local = true);

}  // namespace dp
