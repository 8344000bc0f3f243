// Expert parallelism: the process mesh, the overlapped F&B hand-over, and
// MoE gradients against the unpipelined, unsharded model.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "cli_run.h"
#include "dualpipe/runtime/launch.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/runtime/overlap.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "thread_ranks.h"
#include "dualpipe/train/gpt.h"
#include "dualpipe/train/trainer.h"
#include "dualpipe/train/verify.h"

namespace dualpipe {
namespace {

TEST(Mesh, LayoutRoundTripsAndGroupsAreConsistent) {
  const MeshShape s{3, 2, 2};
  std::set<int> seen;
  for (int r = 0; r < s.size(); ++r) {
    const MeshCoord c = mesh_coord(s, r);
    EXPECT_EQ(mesh_rank(s, c), r);
    seen.insert(r);
    // Every member of each of my groups has me in its same group.
    for (MeshDim d : {MeshDim::Pipeline, MeshDim::Expert, MeshDim::Data})
      for (int peer : mesh_group(s, r, d)) EXPECT_EQ(mesh_group(s, peer, d), mesh_group(s, r, d));
  }
  EXPECT_EQ(seen.size(), 12u);
  // The first pipeline is ranks 0..P-1; an expert group is every P-th rank.
  EXPECT_EQ(mesh_group(s, 0, MeshDim::Pipeline), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(mesh_group(s, 1, MeshDim::Expert), (std::vector<int>{1, 4}));
  EXPECT_EQ(mesh_group(s, 1, MeshDim::Data), (std::vector<int>{1, 7}));
  EXPECT_NE(describe_layout(s).find("rank 4: pipeline rank 1, expert rank 1, data replica 0"), std::string::npos);
}

// A Comm that only waits (comm_wait needs one for its timeout and messages).
struct WaitOnlyComm : Comm {
  compat::WorkPtr isend(torch::Tensor&, int, int) override { throw Error("unused"); }
  compat::WorkPtr irecv(torch::Tensor&, int, int) override { throw Error("unused"); }
  compat::WorkPtr iall_reduce(torch::Tensor&, c10d::ReduceOp) override { throw Error("unused"); }
  compat::WorkPtr iall_to_all(torch::Tensor&, torch::Tensor&, std::vector<int64_t>&, std::vector<int64_t>&) override {
    throw Error("unused");
  }
  compat::WorkPtr ibarrier() override { throw Error("unused"); }
  compat::WorkPtr ireduce_scatter(torch::Tensor&) override { throw Error("unused"); }
  compat::WorkPtr iall_gather(torch::Tensor&) override { throw Error("unused"); }
};

// Work that completes when the test says so: stands for a transfer on the wire.
struct SignalWork : c10d::Work {
  void fire() { finish(); }
};

// The forward half waits for "its all-to-all", which only the backward half
// completes: run one after the other this would hang; with the hand-over the
// backward computes while the forward waits, and never both at once.
TEST(Overlap, BackwardComputesWhileForwardWaits) {
  WaitOnlyComm comm;
  comm.timeout = std::chrono::seconds(20);
  ComputeBaton baton;
  OverlapWorker worker;
  auto work = c10::make_intrusive<SignalWork>();
  std::mutex mu;
  std::vector<std::string> events;
  std::atomic<int> computing{0}, most{0};
  auto piece = [&](const std::string& name) {
    const int now = ++computing;
    most = std::max(most.load(), now);
    {
      std::lock_guard<std::mutex> lock(mu);
      events.push_back(name);
    }
    --computing;
  };
  BatonScope holding(&baton);
  worker.run_pair(
      baton,
      [&] {
        piece("F attention");
        comm_wait(comm, work, CommKind::AllToAll, -1, [] { return std::string("dispatch"); });
        piece("F experts");
      },
      [&] {
        piece("B experts");
        work->fire();
        piece("B attention");
      });
  EXPECT_EQ(events, (std::vector<std::string>{"F attention", "B experts", "B attention", "F experts"}));
  EXPECT_EQ(most.load(), 1);
}

// An exception in either half comes out of run_pair after both ended.
TEST(Overlap, ErrorsOfEitherHalfPropagate) {
  ComputeBaton baton;
  OverlapWorker worker;
  BatonScope holding(&baton);
  EXPECT_THROW(worker.run_pair(baton, [] {}, [] { throw Error("backward failed"); }), Error);
  EXPECT_THROW(worker.run_pair(baton, [] { throw Error("forward failed"); }, [] {}), Error);
  int ran = 0;
  worker.run_pair(baton, [&] { ++ran; }, [&] { ++ran; });  // still usable
  EXPECT_EQ(ran, 2);
}

ModelConfig small_moe(const Schedule& s) {
  ModelConfig c;
  c.name = "moe";
  c.stages = s.stages;
  c.micro_batches = s.micro_batches;
  c.hidden = 16;
  c.heads = 2;
  c.seq_len = 6;
  c.micro_batch_size = 2;
  c.layers = s.stages;  // one MoE block per stage
  c.experts = 4;
  c.top_k = 2;
  c.dtype = torch::kFloat64;
  return c;
}

VerifyResult verify_mesh(const Schedule& s, const ModelConfig& c, int ep, bool overlap) {
  MeshShape shape;
  shape.ep = ep;
  VerifyOptions o;
  o.fb_overlap = overlap;
  return test_support::verify_mesh(s, c, shape, o);
}

struct MethodCase {
  std::string method;
  int ranks, micro_batches;
};

class MoeVerify : public ::testing::TestWithParam<MethodCase> {};

// Every gradient (experts, router, shared expert, attention, embeddings)
// equals the unsharded model's on all E*N micro-batches, with the F&B
// hand-over on and off.
TEST_P(MoeVerify, ExactAgainstUnshardedUnpipelined) {
  at::set_num_threads(1);
  const MethodCase& mc = GetParam();
  Schedule s = generate(mc.method, Shape{mc.ranks, mc.micro_batches, 2});
  ModelConfig c = small_moe(s);
  for (bool overlap : {true, false}) {
    VerifyResult r = verify_mesh(s, c, 2, overlap);
    EXPECT_LE(r.loss_error, 1e-12) << mc.method << " overlap " << overlap;
    EXPECT_LE(r.grad_error, 1e-12) << mc.method << " overlap " << overlap;
    bool expert = false, router = false;
    for (const auto& [name, e] : r.per_param) {
      expert = expert || name.find("moe.expert3.fc.weight") != std::string::npos;
      router = router || name.find("moe.router.weight") != std::string::npos;
    }
    EXPECT_TRUE(expert && router) << "the comparison covers experts and routers";
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, MoeVerify,
                         ::testing::Values(MethodCase{"dualpipe", 2, 4}, MethodCase{"dualpipev", 2, 4},
                                           MethodCase{"1f1b", 2, 4}, MethodCase{"gpipe", 2, 4},
                                           MethodCase{"zb1p", 2, 4}, MethodCase{"zbv", 2, 4},
                                           MethodCase{"interleaved-1f1b", 2, 4}, MethodCase{"chimera", 2, 4},
                                           MethodCase{"dualpipe", 4, 8}),
                         [](const auto& param_info) {
                           std::string n = param_info.param.method + "_P" + std::to_string(param_info.param.ranks);
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

// Without the sum over the expert group, the dense gradients are one
// pipeline's share only: the comparison must see it.
TEST(MoeVerify, DenseSumOverExpertRanksIsWhatMakesItExact) {
  at::set_num_threads(1);
  Schedule s = lower(one_f_one_b(Shape{2, 4}));
  ModelConfig c = small_moe(s);
  MeshShape shape{2, 2, 1};
  std::vector<double> worst(shape.size(), 0);
  run_mesh_threads(shape, [&](const Mesh& m) {
    const ModelConfig mine = rank_model_config(c, s, m);
    PipelineModel model = make_model(mine, ExpertGroup{m.expert, m.expert_bwd});
    RankExecutor exec(s, m.coord.pp, model, m.pipeline, rank_executor_options(m, true));
    exec.step();
    exec.sum_replica_grads();  // but not the expert-group sum
    ModelConfig whole = mine;
    whole.ep = 1;
    whole.ep_rank = 0;
    Reference ref = unpipelined_step(make_model(whole), s.micro_batches * 2);
    for (const auto& [st, stage] : exec.stages()) {
      std::map<std::string, torch::Tensor> by_name;
      for (std::size_t i = 0; i < ref.names[st].size(); ++i) by_name[ref.names[st][i]] = ref.grads[st][i];
      for (auto& item : stage.module->named_parameters())
        if (item.key().find("attn.qkv") != std::string::npos)
          worst[m.rank] = std::max(worst[m.rank], relative_difference(item.value().grad(), by_name.at(item.key())));
    }
  });
  for (double w : worst) EXPECT_GT(w, 1e-3);
}

// The sharded layer holds only its experts; one without a group to reach
// the others refuses to be built, and bad MoE settings are one-line errors.
TEST(Moe, BadSettingsAreErrors) {
  Schedule s = one_f_one_b(Shape{2, 2});
  ModelConfig c = small_moe(s);
  c.experts = 3;
  c.ep = 2;
  EXPECT_THROW(check_moe(c), Error);
  c.experts = 4;
  c.top_k = 5;
  EXPECT_THROW(check_moe(c), Error);
  c.top_k = 2;
  c.ep_rank = 1;
  PipelineModel m = make_model(c);  // no expert group
  EXPECT_THROW(m.build(0), Error);
}

using test_support::CliRun;
using test_support::run_cli;

TEST(MoeCli, VerifyWithProcessRanksPasses) {
  CliRun r = run_cli("verify -m dualpipe -p 2 -n 4 --model moe --ep 2 --hidden 16 --seq-len 6 --heads 2");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rank 3: pipeline rank 1, expert rank 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("moe.expert3"), std::string::npos) << r.out;
}

TEST(MoeCli, BadInputIsOneLineWithCode2) {
  for (const auto& [args, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"verify -m 1f1b -p 2 -n 4 --model moe --ep 0", "--ep must be at least 1 (got 0)"},
           {"verify -m 1f1b -p 2 -n 4 --model moe --ep 2 --experts 3", "--experts 3 is not a multiple of --ep 2"},
           {"verify -m 1f1b -p 2 -n 4 --model moe --top-k 9", "--top-k must be in 1..4"},
           {"verify -m 1f1b -p 2 -n 4 --model gpt --ep 2", "use --model moe"},
           {"verify -m 1f1b -p 8 -n 8 --model moe --ep 16 --experts 16", "more than the 64"},
           {"verify -m 1f1b -p 2 -n 4 --model moe --fb-overlap maybe", "--fb-overlap"},
           {"verify -m 1f1b -p 2 -n 4 --emulate-hosts 3", "--emulate-hosts 3 needs at least 3 ranks (the run has 2)"},
           {"verify -m 1f1b -p 2 -n 4 --emulate-hosts 2 --link-rate fast", "--link-rate 'fast' is not a rate"},
           {"verify -m 1f1b -p 2 -n 4 --emulate-hosts 2 --threads", "does not go with --threads"},
       }) {
    CliRun r = run_cli(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(fragment), std::string::npos) << args << "\n" << r.out;
  }
}

// The CI smoke test of the emulated cluster: real c10d traffic between two
// network namespaces over a shaped link, and the same exact gradients.
TEST(MoeCli, VerifyAcrossEmulatedHosts) {
  CliRun r = run_cli(
      "verify -m dualpipe -p 2 -n 4 --model moe --ep 2 --hidden 16 --seq-len 6 --heads 2 --emulate-hosts 2 "
      "--link-rate 100mbit --timeout 60");
  if (r.code == 2 && r.out.find("needs root") != std::string::npos) GTEST_SKIP() << r.out;
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("emulated cluster: 2 hosts at 100mbit"), std::string::npos) << r.out;
  // Expert ranks of a stage on different hosts: ranks 0 and 2 (stage rank 0) apart.
  EXPECT_NE(r.out.find("0:0 1:0 2:1 3:1"), std::string::npos) << r.out;
}

// Without root the launcher refuses in one line before it starts anything.
TEST(MoeCli, EmulatedHostsWithoutRootIsOneLine) {
  if (geteuid() != 0 || std::system("command -v setpriv >/dev/null") != 0) GTEST_SKIP() << "needs root and setpriv";
  CliRun r = test_support::run_command(std::string("setpriv --reuid=65534 --regid=65534 --clear-groups ") +
                                       DUALPIPE_BINARY + " verify -m 1f1b -p 2 -n 4 --emulate-hosts 2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("dualpipe: error: --emulate-hosts needs root"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "one line: " << r.out;
}

}  // namespace
}  // namespace dualpipe
