#include "runtime/comm.h"

#include <fmt/format.h>

namespace dp {

std::string wait_failure_message(int rank, int peer, std::chrono::milliseconds timeout, const std::string& what,
                                 const std::exception& cause) {
  // Gloo's unbound buffers say "Timed out waiting Nms for recv operation",
  // c10d's Work::wait "Operation timed out!"; anything else that ends a wait
  // early is a broken connection (Gloo: "Connection closed by peer", "Read
  // error", "Broken pipe"): the peer process is gone.
  const std::string text = cause.what();
  const bool timed_out = text.find("imed out") != std::string::npos || text.find("Timeout") != std::string::npos;
  const std::string who = peer >= 0 ? fmt::format("rank {}", peer) : std::string("the other ranks");
  if (timed_out)
    return fmt::format("rank {}: timed out after {:g} s waiting for {} ({})", rank,
                       static_cast<double>(timeout.count()) / 1000.0, who, what);
  if (peer >= 0) return fmt::format("rank {}: lost connection to rank {} while waiting for {}", rank, peer, what);
  return fmt::format("rank {}: lost connection to another rank during {}", rank, what);
}

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
