#include "dualpipe/train/perf.h"

#include <algorithm>
#include <chrono>

#include "dualpipe/runtime/malloc_tuning.h"

namespace dualpipe {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

StageFlops mlp_stage_flops(const ModelConfig& c) {
  StageFlops f;
  if (c.name != "mlp") return f;
  const double tokens = static_cast<double>(c.micro_batch_size * c.seq_len);
  const double one = 2.0 * tokens * static_cast<double>(c.hidden) * static_cast<double>(mlp_ffn(c));  // one Linear
  f.F = 2 * one;  // up and down
  f.I = 2 * one;  // dL/dx of both
  f.W = 2 * one;  // dL/dW of both
  return f;
}

double rank_flops(const Schedule& s, int rank, const StageFlops& f) {
  double total = 0;
  for (const Action& a : s.actions[rank]) switch (a.op) {
      case Op::F: total += f.F; break;
      case Op::B: total += f.I + f.W; break;
      case Op::I: total += f.I; break;
      case Op::W: total += f.W; break;
      case Op::FB: total += f.F + f.I + f.W; break;
      case Op::FF: total += 2 * f.F; break;
      default: break;
    }
  return total;
}

double matmul_flops_per_second(const ModelConfig& c, double seconds) {
  const int64_t T = c.micro_batch_size * c.seq_len, h = c.hidden, ffn = mlp_ffn(c);
  auto opt = torch::dtype(c.dtype);
  torch::Tensor x = torch::randn({T, h}, opt), w1 = torch::randn({h, ffn}, opt), y = torch::empty({T, ffn}, opt);
  torch::Tensor w2 = torch::randn({ffn, h}, opt), z = torch::empty({T, h}, opt);
  const double flops = 2.0 * 2.0 * static_cast<double>(T * h * ffn);  // one round: both products
  at::mm_out(y, x, w1);  // warm up (first-touch of the outputs, BLAS set-up)
  at::mm_out(z, y, w2);
  double best = 0;
  const auto t_end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  do {
    const auto t0 = Clock::now();
    at::mm_out(y, x, w1);
    at::mm_out(z, y, w2);
    best = std::max(best, flops / since(t0));
  } while (Clock::now() < t_end);
  return best;
}

double sequential_compute_seconds(const ModelConfig& c, int repeats) {
  // The allocator settings the executor runs with: without them glibc maps
  // and unmaps every large activation, and the page faults of touching it
  // afresh (expensive in a VM) made this yardstick 20% slower than the
  // pipelined step it is set against.
  tune_malloc_for_tensors();
  PipelineModel m = make_model(c);
  std::vector<Stage> stages;
  for (int s = 0; s < m.stages; ++s) stages.push_back(m.build(s));
  double best = 1e300;
  for (int k = 0; k < std::max(1, repeats) + 1; ++k) {  // the first run warms up
    const auto t0 = Clock::now();
    for (int mb = 0; mb < c.micro_batches; ++mb) {
      torch::Tensor x = m.input(mb);
      for (auto& st : stages) x = st.forward(x);
      (m.loss(x, mb) / static_cast<double>(c.micro_batches)).backward();
    }
    if (k > 0) best = std::min(best, since(t0));
  }
  return best;
}

double activation_unit_bytes(const ModelConfig& c) {
  PipelineModel m = make_model(c);
  Stage st = m.build(c.stages > 1 ? 1 : 0);
  // A middle stage's input arrives as a received tensor that requires grad
  // and stays alive until the stage's backward: it counts, as does
  // everything the forward keeps (saved tensors and the output). A first
  // forward, dropped, lets the libraries make their one-time buffers (the
  // matrix library's workspace: 2.6 MiB with LibTorch 2.11's MKL), which no
  // further forward adds to.
  // With one stage there is no middle one: the first stage's input is the
  // data itself (token ids for the language models).
  auto input = [&] {
    if (c.stages <= 1) return m.input(0);
    return torch::randn(m.boundary_shape, torch::dtype(m.boundary_dtype)).requires_grad_(true);
  };
  st.forward(input());
  const double before = malloc_in_use_bytes();
  torch::Tensor in = input();
  torch::Tensor out = st.forward(in);
  const double after = malloc_in_use_bytes();
  return after - before;
}

double transfer_seconds(Comm& comm, const std::vector<int64_t>& shape, torch::Dtype dtype, int round_trips) {
  if (comm.world < 2) return 0.0;
  constexpr int kTag = (1 << 30) + 7;  // apart from pipeline, replica and gather tags
  std::vector<double> trips;
  if (comm.rank <= 1) {
    torch::Tensor t = torch::zeros(shape, torch::dtype(dtype));
    const int peer = 1 - comm.rank;
    for (int k = 0; k < round_trips + 1; ++k) {  // the first trip warms the connection up
      const auto t0 = Clock::now();
      if (comm.rank == 0) {
        comm.isend(t, peer, kTag)->wait(comm.timeout);
        comm.irecv(t, peer, kTag)->wait(comm.timeout);
      } else {
        comm.irecv(t, peer, kTag)->wait(comm.timeout);
        comm.isend(t, peer, kTag)->wait(comm.timeout);
      }
      if (k > 0) trips.push_back(since(t0));
    }
  }
  comm.barrier();
  if (trips.empty()) return 0.0;
  std::sort(trips.begin(), trips.end());
  return trips[trips.size() / 2] / 2;
}

double all_to_all_seconds(Comm& comm, int64_t rows, int64_t width, torch::Dtype dtype, int repeats) {
  if (comm.world < 2) return 0.0;
  torch::Tensor in = torch::zeros({rows * comm.world, width}, torch::dtype(dtype));
  torch::Tensor out = torch::empty_like(in);
  std::vector<int64_t> splits(static_cast<std::size_t>(comm.world), rows);
  std::vector<double> times;
  for (int k = 0; k < repeats + 1; ++k) {  // the first one warms the connections up
    comm.barrier("the all-to-all yardstick");
    const auto t0 = Clock::now();
    comm.wait(comm.iall_to_all(out, in, splits, splits), -1, [] { return std::string("the all-to-all yardstick"); });
    if (k > 0) times.push_back(since(t0));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace dualpipe
