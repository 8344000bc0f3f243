// Example: start the ranks of a pipeline with dualpipe's launcher
// (dualpipe::launch, dualpipe/runtime/launch.h), as threads of this process
// or as local processes, and train a model of your own on them.
//
//   launch_ranks [threads|processes] [METHOD]   (defaults: processes, dualpipe)
//
// launch() is the launcher dualpipe's own commands use. With "processes" it
// re-runs this program once per rank with RANK, WORLD_SIZE, MASTER_ADDR and
// MASTER_PORT set, as torchrun does; each rank process comes back into
// main(), calls launch() with the same options, and launch() connects it to
// the others and runs the body. Started by torchrun itself, the program
// works the same way. The body gets the rank's Mesh: its process groups.
//
// The last rank of the pipeline prints the mean loss of the first and last
// step; the exit code is 0 when every rank succeeded and the loss fell.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include <dualpipe/runtime/executor.h>
#include <dualpipe/runtime/launch.h>
#include <dualpipe/schedule/generators.h>
#include <dualpipe/schedule/lower.h>

namespace {

constexpr int64_t kRows = 4, kWidth = 8;
constexpr int kSteps = 30;

torch::Tensor fixed(uint64_t seed, at::IntArrayRef shape) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, gen);
}

// One stage: Linear -> ReLU, started from the same numbers on every rank
// that holds it (DualPipe holds each stage twice); the last stage's output
// should reverse the order of the input's features.
dualpipe::PipelineModel reverse_model(int stages) {
  dualpipe::PipelineModel m;
  m.stages = stages;
  m.boundary_shape = {kRows, kWidth};
  m.build = [](int stage) {
    torch::nn::Sequential mod(torch::nn::Linear(kWidth, kWidth), torch::nn::ReLU());
    torch::NoGradGuard no_grad;
    for (torch::Tensor& p : mod->parameters()) p.copy_(fixed(7 + static_cast<uint64_t>(stage), p.sizes()) * 0.4);
    dualpipe::Stage st;
    st.module = mod.ptr();
    st.forward = [mod](const torch::Tensor& x) mutable { return mod->forward(x); };
    return st;
  };
  m.input = [](int mb) { return fixed(500 + static_cast<uint64_t>(mb), {kRows, kWidth}).abs(); };
  m.loss = [](const torch::Tensor& out, int mb) {
    return torch::mse_loss(out, fixed(500 + static_cast<uint64_t>(mb), {kRows, kWidth}).abs().flip({1}));
  };
  return m;
}

// One rank's training; returns 0, or 1 on the last rank when the loss did not fall.
int train(const dualpipe::Mesh& mesh, const std::shared_ptr<const dualpipe::Schedule>& schedule) {
  dualpipe::RankExecutor exec(schedule, reverse_model(schedule->stages), mesh.pipeline);
  std::vector<torch::Tensor> params;
  for (const auto& [stage, st] : exec.stages())
    for (const torch::Tensor& p : st.module->parameters()) params.push_back(p);
  torch::optim::Adam adam(params, torch::optim::AdamOptions(2e-2));
  std::vector<double> losses;
  for (int step = 0; step < kSteps; ++step) {
    adam.zero_grad();
    const dualpipe::StepOutput out = exec.step();
    exec.sum_replica_grads();  // DualPipe: each stage's two copies add their halves
    adam.step();
    double sum = 0;
    for (const auto& [mb, loss] : out.losses) sum += loss;
    if (!out.losses.empty()) losses.push_back(sum / static_cast<double>(out.losses.size()));
  }
  if (losses.empty()) return 0;  // this rank holds no last stage
  std::printf("rank %d: loss %.4f at step 1, %.4f at step %d\n", mesh.rank, losses.front(), losses.back(), kSteps);
  return losses.back() < 0.7 * losses.front() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string how = argc > 1 ? argv[1] : "processes";
  const std::string method = argc > 2 ? argv[2] : "dualpipe";
  try {
    auto schedule =
        std::make_shared<const dualpipe::Schedule>(dualpipe::lower(dualpipe::generate(method, dualpipe::Shape{2, 8})));
    dualpipe::LaunchOptions o;
    o.shape.pp = schedule->ranks;
    o.threads = how == "threads";
    o.timeout = std::chrono::seconds(30);
    o.args.assign(argv, argv + argc);  // what each rank process runs: this program, these arguments
    return dualpipe::launch(o, [&](const dualpipe::Mesh& mesh) { return train(mesh, schedule); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "launch_ranks: %s\n", e.what());
    return 2;
  }
}
