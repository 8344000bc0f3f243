#include "dualpipe/runtime/comm.h"

#include <fmt/format.h>

#include <numeric>

namespace dualpipe {

bool is_timeout_text(const std::string& text) {
  return text.find("imed out") != std::string::npos || text.find("Timeout") != std::string::npos;
}

bool is_timeout(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const PeerError& p) {
    return p.timed_out;
  } catch (...) {
    return false;
  }
}

std::string wait_failure_message(int rank, int peer, std::chrono::milliseconds timeout, const std::string& what,
                                 const std::exception& cause) {
  // Gloo's unbound buffers say "Timed out waiting Nms for recv operation",
  // c10d's Work::wait "Operation timed out!"; anything else that ends a wait
  // early is a broken connection (Gloo: "Connection closed by peer", "Read
  // error", "Broken pipe"): the peer process is gone.
  const std::string text = cause.what();
  const bool timed_out = is_timeout_text(text);
  const std::string who = peer >= 0 ? fmt::format("rank {}", peer) : std::string("the other ranks");
  if (timed_out)
    return fmt::format("rank {}: timed out after {:g} s waiting for {} ({})", rank,
                       static_cast<double>(timeout.count()) / 1000.0, who, what);
  if (peer >= 0) return fmt::format("rank {}: lost connection to rank {} while waiting for {}", rank, peer, what);
  return fmt::format("rank {}: lost connection to another rank during {}", rank, what);
}

namespace {

// The work of a staged operation: the posted host operation, the host copy
// it reads or fills (kept alive until the work is done), and where the result
// goes on the device (undefined for a send). The copy back happens once, on
// the first wait or completion check that finds the host work done.
class StagedWork : public c10d::Work {
 public:
  StagedWork(compat::WorkPtr inner, torch::Tensor host, torch::Tensor device)
      : inner_(std::move(inner)), host_(std::move(host)), device_(std::move(device)) {}
  bool isCompleted() override {
    if (!copied_ && inner_->isCompleted() && inner_->isSuccess()) copy_back();
    return copied_;
  }
  bool isSuccess() const override { return inner_->isSuccess(); }
  bool wait(std::chrono::milliseconds timeout) override {
    inner_->wait(timeout);
    copy_back();
    return true;
  }

 private:
  void copy_back() {
    if (copied_) return;
    if (device_.defined()) device_.copy_(host_);
    copied_ = true;
  }
  compat::WorkPtr inner_;
  torch::Tensor host_, device_;
  bool copied_ = false;
};

// Several works as one: complete when all are, waited in order within one
// timeout, the first failure rethrown by its wait.
class GroupedWork : public c10d::Work {
 public:
  explicit GroupedWork(std::vector<compat::WorkPtr> parts) : parts_(std::move(parts)) {}
  bool isCompleted() override {
    for (auto& w : parts_)
      if (!w->isCompleted()) return false;
    return true;
  }
  bool isSuccess() const override {
    for (const auto& w : parts_)
      if (!w->isSuccess()) return false;
    return true;
  }
  bool wait(std::chrono::milliseconds timeout) override {
    using Clock = std::chrono::steady_clock;
    const auto end = Clock::now() + timeout;
    for (auto& w : parts_) {
      if (timeout.count() <= 0) {  // c10d's "no timeout" (0), or unset: the parts' own
        w->wait(timeout);
        continue;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      w->wait(std::max(left, std::chrono::milliseconds(1)));
    }
    return true;
  }

 private:
  std::vector<compat::WorkPtr> parts_;
};

// The tag of the transfers an all-to-all is made of (apart from the
// executor's pipeline tags and the yardsticks').
constexpr int kAllToAllTag = (1 << 30) + 11;

}  // namespace

// An all-to-all of host tensors as point-to-point transfers, every receive
// posted before any send. Gloo sends a transfer's bytes only once the
// receiver has said it is ready for them, and a rank says so on the same
// connection that carries its own data; Gloo's all-to-all posts each send
// before its receive, so the readiness of whichever rank posted second
// queued behind its whole block, and the two directions of an exchange
// crossed the link one after the other: two wire times where the exchange
// needs one (measured on emulated hosts: the later rank's all-to-all took
// 1.8x the block's wire time, the earlier one's 1.0x).
compat::WorkPtr C10dComm::exchange_rows(torch::Tensor& out, torch::Tensor& in, const std::vector<int64_t>& out_splits,
                                        const std::vector<int64_t>& in_splits) {
  std::vector<compat::WorkPtr> parts;
  // Every other member's non-empty block of `t` (cut by `splits`), posted.
  auto post_blocks = [&](torch::Tensor& t, const std::vector<int64_t>& splits, auto post) {
    int64_t at = 0;
    for (int p = 0; p < world; ++p) {
      const int64_t n = splits[static_cast<std::size_t>(p)];
      if (p != rank && n > 0) {
        std::vector<torch::Tensor> v{t.narrow(0, at, n)};
        parts.push_back(post(v, p));
      }
      at += n;
    }
  };
  post_blocks(out, out_splits, [&](std::vector<torch::Tensor>& v, int p) { return pg_->recv(v, p, kAllToAllTag); });
  post_blocks(in, in_splits, [&](std::vector<torch::Tensor>& v, int p) { return pg_->send(v, p, kAllToAllTag); });
  // This member's own block stays here.
  const auto me = static_cast<std::size_t>(rank);
  const auto before = static_cast<std::ptrdiff_t>(me);
  if (in_splits[me] > 0)
    out.narrow(0, std::accumulate(out_splits.begin(), out_splits.begin() + before, int64_t{0}), out_splits[me])
        .copy_(in.narrow(0, std::accumulate(in_splits.begin(), in_splits.begin() + before, int64_t{0}), in_splits[me]));
  return c10::make_intrusive<GroupedWork>(std::move(parts));
}

bool C10dComm::staged(const torch::Tensor& t) const { return host_staging && !t.device().is_cpu(); }

bool C10dComm::staged_transfer(const torch::Tensor& t) const {
  return (host_staging || stage_transfers) && !t.device().is_cpu();
}

compat::WorkPtr C10dComm::stage(const torch::Tensor& device, bool copy_in, bool copy_out,
                                const std::function<compat::WorkPtr(torch::Tensor&)>& post) {
  torch::Tensor host = copy_in ? device.to(torch::kCPU) : torch::empty_like(device, torch::device(torch::kCPU));
  compat::WorkPtr inner = post(host);
  return c10::make_intrusive<StagedWork>(std::move(inner), host, copy_out ? device : torch::Tensor());
}

compat::WorkPtr C10dComm::isend(torch::Tensor& t, int peer, int tag) {
  auto post = [&](torch::Tensor& x) {
    std::vector<torch::Tensor> v{x};
    return pg_->send(v, peer, tag);
  };
  return staged_transfer(t) ? stage(t, true, false, post) : post(t);
}

compat::WorkPtr C10dComm::irecv(torch::Tensor& t, int peer, int tag) {
  auto post = [&](torch::Tensor& x) {
    std::vector<torch::Tensor> v{x};
    return pg_->recv(v, peer, tag);
  };
  return staged_transfer(t) ? stage(t, false, true, post) : post(t);
}

compat::WorkPtr C10dComm::iall_reduce(torch::Tensor& t, c10d::ReduceOp op) {
  auto post = [&](torch::Tensor& x) {
    std::vector<torch::Tensor> v{x};
    c10d::AllreduceOptions o;
    o.reduceOp = op;
    return pg_->allreduce(v, o);
  };
  return staged(t) ? stage(t, true, true, post) : post(t);
}

compat::WorkPtr C10dComm::iall_to_all(torch::Tensor& out, torch::Tensor& in, std::vector<int64_t>& out_splits,
                                      std::vector<int64_t>& in_splits) {
  // Device tensors a backend moves itself (NCCL): its own all-to-all.
  if (!out.device().is_cpu() && !staged(out)) return compat::all_to_all(*pg_, out, in, out_splits, in_splits);
  if (!staged(out) && !staged(in)) return exchange_rows(out, in, out_splits, in_splits);
  torch::Tensor host_in = in.to(torch::kCPU);
  return stage(out, false, true, [&](torch::Tensor& host_out) {
    auto w = exchange_rows(host_out, host_in, out_splits, in_splits);
    return c10::make_intrusive<StagedWork>(std::move(w), host_in, torch::Tensor());
  });
}

compat::WorkPtr C10dComm::ibarrier() { return pg_->barrier(); }

compat::WorkPtr C10dComm::ireduce_scatter(torch::Tensor& flat) {
  // Gloo (LibTorch 1.13) has no reduce-scatter: a sum of the whole buffer
  // leaves every chunk summed, which is what the contract asks of ours. It
  // moves twice the bytes; a backend with reduce_scatter uses it here.
  return iall_reduce(flat, c10d::ReduceOp::SUM);
}

compat::WorkPtr C10dComm::iall_gather(torch::Tensor& flat) {
  auto post = [&](torch::Tensor& x) {
    std::vector<torch::Tensor> mine{x.chunk(world)[static_cast<std::size_t>(rank)].clone()};
    std::vector<std::vector<torch::Tensor>> out{x.chunk(world)};
    return pg_->allgather(out, mine);
  };
  return staged(flat) ? stage(flat, true, true, post) : post(flat);
}

std::shared_ptr<Comm> wrap_group(compat::GroupPtr pg, std::chrono::milliseconds timeout, std::vector<int> global_ranks,
                                 std::string name) {
  if (!pg) throw Error("wrap_group: the process group is null");
  auto c = std::make_shared<C10dComm>(pg);
  c->rank = pg->getRank();
  c->world = pg->getSize();
  c->timeout = timeout;
  if (!global_ranks.empty() && static_cast<int>(global_ranks.size()) != c->world)
    throw Error(fmt::format("wrap_group: {} global ranks given for a group of {}", global_ranks.size(), c->world));
  c->global_ranks = std::move(global_ranks);
  c->name = std::move(name);
  return c;
}

std::shared_ptr<Comm> connect(const compat::StorePtr& store, int rank, int world, std::chrono::milliseconds timeout,
                              bool local, Backend backend, int device) {
  if (backend == Backend::Gloo) return wrap_group(compat::make_gloo(store, rank, world, timeout, local), timeout);
  auto c = wrap_group(compat::make_nccl(store, rank, world, timeout, local, device), timeout);
  c->host_staging = false;
  c->stage_transfers = true;
  return c;
}

}  // namespace dualpipe
