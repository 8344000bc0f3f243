// Example: train a model of your own, cut into two pipeline stages, on two
// thread ranks of this process, with a process group you make yourself, using
// dualpipe::runtime (LibTorch).
//
//   train_two_stages [METHOD] [STEPS]   (defaults: 1f1b, 40 steps; also gpipe, zb1p)
//
// What a framework does to run its own model through dualpipe's executor:
//  1. generate and lower a schedule (dualpipe::generate, dualpipe::lower), shared by the ranks;
//  2. describe the model as a dualpipe::PipelineModel: how to build each stage,
//     what enters the first stage, the loss after the last, the boundary shape;
//  3. per rank, make a c10d process group (here Gloo over an in-process
//     HashStore; across machines a TCPStore), wrap it (dualpipe::wrap_group) and
//     build a dualpipe::RankExecutor on it;
//  4. each step: zero the gradients, exec.step(), optimizer step.
// Prints the mean loss of the first and last step; exit code 1 unless the
// loss fell to under half.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <dualpipe/runtime/comm.h>
#include <dualpipe/runtime/executor.h>
#include <dualpipe/schedule/generators.h>
#include <dualpipe/schedule/lower.h>

namespace {

constexpr int64_t kBatch = 8, kWidth = 16;

// Deterministic values of a given shape: every rank that builds a stage, and
// every call for a micro-batch, gets the same numbers.
torch::Tensor seeded(uint64_t seed, at::IntArrayRef shape) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, gen);
}

// The model: x -> tanh(A x) -> B tanh(...), a stage each; the target is a
// fixed smooth function of the input, so the loss can fall a long way.
dualpipe::PipelineModel two_stage_model() {
  dualpipe::PipelineModel m;
  m.stages = 2;
  m.boundary_shape = {kBatch, kWidth};
  m.build = [](int stage) {
    torch::nn::Sequential mod(torch::nn::Linear(kWidth, kWidth), torch::nn::Tanh());
    if (stage == 1) mod->push_back(torch::nn::Linear(kWidth, kWidth));
    torch::NoGradGuard no_grad;
    uint64_t seed = 100 + 10 * static_cast<uint64_t>(stage);
    for (torch::Tensor& p : mod->parameters()) p.copy_(seeded(seed++, p.sizes()) * 0.3);
    dualpipe::Stage st;
    st.module = mod.ptr();
    st.forward = [mod](const torch::Tensor& x) mutable { return mod->forward(x); };
    return st;
  };
  m.input = [](int mb) { return seeded(1000 + static_cast<uint64_t>(mb), {kBatch, kWidth}); };
  m.loss = [](const torch::Tensor& out, int mb) {
    const torch::Tensor x = seeded(1000 + static_cast<uint64_t>(mb), {kBatch, kWidth});
    return torch::mse_loss(out, 0.5 * torch::sin(x));
  };
  return m;
}

// Rank `rank`'s whole run; returns the mean loss of each step (on the rank
// that holds the last stage; empty elsewhere).
std::vector<double> run_rank(int rank, int world, const c10::intrusive_ptr<c10d::Store>& store,
                             const std::shared_ptr<const dualpipe::Schedule>& schedule, int steps) {
  // The caller's process group. On LibTorch 2.x ProcessGroupGloo is a
  // c10d::Backend that a c10d::ProcessGroup fronts; as_group makes that front
  // (on 1.13 it returns the Gloo group itself).
  auto options = c10d::ProcessGroupGloo::Options::create();
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
  dualpipe::compat::GroupPtr group = dualpipe::compat::as_group(gloo, store, rank, world);
  std::shared_ptr<dualpipe::Comm> comm = dualpipe::wrap_group(group, std::chrono::seconds(60), {}, "pipeline");

  dualpipe::RankExecutor exec(schedule, two_stage_model(), comm);
  std::vector<torch::Tensor> params;
  for (const auto& [stage, st] : exec.stages())
    for (const torch::Tensor& p : st.module->parameters()) params.push_back(p);
  torch::optim::Adam adam(params, torch::optim::AdamOptions(1e-2));

  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    adam.zero_grad();
    const dualpipe::StepOutput out = exec.step();  // gradients accumulate into the parameters
    exec.sum_replica_grads();                // no-op here: each stage lives on one rank
    adam.step();
    if (out.losses.empty()) continue;
    double sum = 0;
    for (const auto& [mb, loss] : out.losses) sum += loss;
    losses.push_back(sum / static_cast<double>(out.losses.size()));
  }
  return losses;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string method = argc > 1 ? argv[1] : "1f1b";
  const int steps = argc > 2 ? std::atoi(argv[2]) : 40;
  const int world = 2;
  at::set_num_threads(1);
  std::shared_ptr<const dualpipe::Schedule> schedule;
  try {
    schedule = std::make_shared<const dualpipe::Schedule>(dualpipe::lower(dualpipe::generate(method, dualpipe::Shape{world, 8})));
  } catch (const dualpipe::Error& e) {
    std::fprintf(stderr, "train_two_stages: %s\n", e.what());
    return 2;
  }
  if (schedule->stages != 2 || steps < 2) {
    std::fprintf(stderr, "train_two_stages: needs a method with one stage per rank (1f1b, gpipe, zb1p) and 2+ steps\n");
    return 2;
  }

  auto store = c10::make_intrusive<c10d::HashStore>();  // the ranks' rendezvous
  std::vector<std::vector<double>> losses(world);
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r)
    ranks.emplace_back([&, r] {
      try {
        losses[r] = run_rank(r, world, store, schedule, steps);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (std::thread& t : ranks) t.join();
  for (const std::exception_ptr& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::fprintf(stderr, "train_two_stages: %s\n", x.what());
      return 1;
    }
  }
  const std::vector<double>& last_stage = losses[world - 1];
  if (static_cast<int>(last_stage.size()) != steps) {
    std::fprintf(stderr, "train_two_stages: expected %d losses on the last rank, got %zu\n", steps, last_stage.size());
    return 1;
  }
  std::printf("%s on %d thread ranks, %d micro-batches: loss %.5f at step 1, %.5f at step %d\n", method.c_str(), world,
              schedule->micro_batches, last_stage.front(), last_stage.back(), steps);
  return last_stage.back() < 0.5 * last_stage.front() ? 0 : 1;
}
