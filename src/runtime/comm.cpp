#include "runtime/comm.h"

namespace dp {

std::shared_ptr<Comm> connect(const compat::StorePtr& store, int rank, int world, std::chrono::milliseconds timeout,
                              bool local) {
  auto c = std::make_shared<Comm>();
  c->rank = rank;
  c->world = world;
  c->timeout = timeout;
  c->pg = compat::make_gloo(store, rank, world, timeout, local);
  return c;
}

}  // namespace dp
