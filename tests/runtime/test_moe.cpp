// Expert parallelism: the process mesh, the overlapped F&B hand-over, and
// MoE gradients against the unpipelined, unsharded model.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <random>
#include <thread>
#include <mutex>
#include <numeric>
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

// A collective on the lane that completes when the test says so: stands for
// a transfer on the wire.
std::function<compat::WorkPtr()> signal_post(const c10::intrusive_ptr<SignalWork>& w) {
  return [w]() -> compat::WorkPtr { return w; };
}

// Two training steps of a small MoE model (two blocks per stage, float64)
// with a random delay of up to 1.5 ms at the end of every compute piece,
// drawn from `seed`.
TrainOptions jittered_moe_training(const Schedule& s, std::atomic<unsigned>& seed) {
  TrainOptions t = test_support::small_moe_training(s, 2);
  t.engine.on_piece_end = [&seed](Half) {
    const unsigned v = seed.fetch_add(2654435761u);
    std::this_thread::sleep_for(std::chrono::microseconds(v % 1500));
  };
  return t;
}

// The backward half starts the pair and waits for "its all-to-all", which
// only the forward half completes: run backward then forward, this would
// hang; with the hand-over the forward computes while the backward waits,
// and never both at once.
TEST(Overlap, ForwardComputesWhileBackwardWaits) {
  WaitOnlyComm comm;
  comm.timeout = std::chrono::seconds(20);
  OverlapEngine engine;
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
  engine.run_pair(
      [&] {
        piece("F attention");
        work->fire();
        piece("F experts");
      },
      [&] {
        piece("B tail");
        engine.exchange(Half::Backward, CommPoint::CombineGrad, comm, 0, "combine gradient", signal_post(work));
        piece("B experts");
      });
  EXPECT_EQ(events, (std::vector<std::string>{"B tail", "F attention", "F experts", "B experts"}));
  EXPECT_EQ(most.load(), 1);
}

// A chunk alone has no other half to hand the turn to: while its transfer is
// in flight it runs queued weight-gradient work, one piece at a time, and
// stops as soon as the transfer is done; that time is counted as filled, not
// as exposed.
TEST(Overlap, AChunkAloneRunsWeightWorkWhileItsTransferIsInFlight) {
  WaitOnlyComm comm;
  comm.timeout = std::chrono::seconds(20);
  OverlapEngine engine;
  auto work = c10::make_intrusive<SignalWork>();
  int pieces = 0;
  engine.set_filler([&](Half h) {
    if (pieces == 10) return false;
    engine.run_piece(h, Op::W, 0, pieces, [&] {
      // The transfer completes early in the third piece, which then lasts
      // long enough for the lane to see it done.
      if (pieces == 2) work->fire();
      std::this_thread::sleep_for(std::chrono::milliseconds(pieces == 2 ? 50 : 5));
      ++pieces;
    });
    return true;
  });
  engine.begin_chunk(Half::Backward, Op::B, 0);
  engine.exchange(Half::Backward, CommPoint::CombineGrad, comm, 0, "combine gradient", signal_post(work));
  engine.end_chunk(Half::Backward);
  EXPECT_EQ(pieces, 3);
  const ExposedComm e = engine.exposed();
  EXPECT_GE(e.filled, 0.014);
  EXPECT_LT(e.all_to_all + e.peer_wait, 0.005) << "the wait ended with the transfer";
  // Without a filler the same wait is exposed.
  engine.set_filler(nullptr);
  auto late = c10::make_intrusive<SignalWork>();
  std::thread firer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
    late->fire();
  });
  engine.exchange(Half::Backward, CommPoint::CombineGrad, comm, 0, "combine gradient", signal_post(late));
  firer.join();
  EXPECT_GE(engine.exposed().all_to_all + engine.exposed().peer_wait, 0.012);
}

// Weight-gradient work run in the all-to-all waits of backward chunks
// (fill_waits) moves time, not bits: a DualPipe MoE mesh (P=2 x E=2) with
// random delays at every piece, so that transfers are in flight when
// backwards wait, ends 2 training steps with the same parameters as with the
// work done inline, and some of it did run in waits.
TEST(Overlap, WeightWorkInWaitsChangesNoBit) {
  Schedule s = lower(generate("dualpipe", Shape{2, 8, 2}));
  auto train = [&](bool fill) {
    std::atomic<unsigned> seed{7};
    TrainOptions t = jittered_moe_training(s, seed);
    t.engine.fill_waits = fill;
    MeshShape shape;
    shape.pp = s.ranks;
    shape.ep = 2;
    std::vector<RankRun> runs(shape.size());
    run_mesh_threads(shape, [&](const Mesh& m) { runs[m.rank] = train_rank(s, t, m); });
    return runs;
  };
  const auto filled = train(true), inline_ = train(false);
  double in_waits = 0;
  for (std::size_t r = 0; r < filled.size(); ++r) {
    for (const ExposedComm& e : filled[r].exposed) in_waits += e.filled;
    for (const ExposedComm& e : inline_[r].exposed) EXPECT_EQ(e.filled, 0.0);
    for (const auto& [stage, p] : filled[r].final_params)
      EXPECT_TRUE(torch::equal(p, inline_[r].final_params.at(stage))) << "rank " << r << " stage " << stage;
  }
  EXPECT_GT(in_waits, 0.0) << "no weight-gradient work ran in a wait";
}

// The halves alternate at every exchange, whatever each piece takes: the
// order of pieces and of posts on the lane is fixed, however long the
// pieces and transfers are (random delays), and a transfer that is already
// complete when its half comes back costs no extra hand-over.
TEST(Overlap, HalvesAlternateAtExchangesInAFixedOrder) {
  WaitOnlyComm comm;
  comm.timeout = std::chrono::seconds(20);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    OverlapEngine engine;
    std::vector<std::string> events;
    std::mutex mu;
    auto jitter = [&] {
      int us;
      {
        std::lock_guard<std::mutex> lock(mu);
        us = static_cast<int>(rng() % 2000);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(us));
    };
    auto half = [&](const char* name, Half h) {
      for (int k = 0; k < 3; ++k) {
        jitter();
        {
          std::lock_guard<std::mutex> lock(mu);
          events.push_back(fmt::format("{}{}", name, k));
        }
        auto w = c10::make_intrusive<SignalWork>();
        w->fire();  // already complete: the wire took no time
        engine.exchange(h, h == Half::Forward ? CommPoint::Dispatch : CommPoint::CombineGrad, comm, 0, name,
                        signal_post(w));
      }
      std::lock_guard<std::mutex> lock(mu);
      events.push_back(fmt::format("{}end", name));
    };
    engine.run_pair([&] { half("F", Half::Forward); }, [&] { half("B", Half::Backward); });
    EXPECT_EQ(events, (std::vector<std::string>{"B0", "F0", "B1", "F1", "B2", "F2", "Bend", "Fend"}));
    std::vector<LaneRecord> lane = engine.take_lane_records();
    ASSERT_EQ(lane.size(), 6u);
    for (std::size_t i = 0; i < lane.size(); ++i) {
      EXPECT_EQ(lane[i].half, i % 2 == 0 ? Half::Backward : Half::Forward) << i;
      if (i > 0) {
        EXPECT_GE(lane[i].started, lane[i - 1].done) << "two collectives on the lane at once";
      }
    }
  }
}

// The engine keeps a finished collective's ticket until the step's end for
// its record (and the wait filled in later); it must not keep what the
// collective moved: a tensor the post held is let go once it is done.
TEST(Overlap, AFinishedCollectiveLetsGoOfItsTensors) {
  WaitOnlyComm comm;
  comm.timeout = std::chrono::seconds(20);
  OverlapEngine engine;
  torch::Tensor rows = torch::zeros({1000});
  auto w = c10::make_intrusive<SignalWork>();
  w->fire();
  engine.exchange(Half::Forward, CommPoint::Dispatch, comm, 0, "a test dispatch",
                  [w, rows]() -> compat::WorkPtr { return w; });
  EXPECT_EQ(rows.use_count(), 1) << "the finished collective still holds its tensor";
  const std::vector<LaneRecord> lane = engine.take_lane_records();
  ASSERT_EQ(lane.size(), 1u);
  EXPECT_LE(lane[0].wait_from, lane[0].wait_to);
}

// On a CUDA device, autograd runs the backward's nodes (and so the MoE
// layers' combine and dispatch gradients) on its device thread while the
// backward half's thread waits in backward(). The engine knows a half by
// what it is told, not by the calling thread: backward exchanges made from
// such a thread still hand the turn to the forward, in the same order as
// from the half's own thread, and the forward computes meanwhile.
TEST(Overlap, BackwardExchangesFromAnotherThreadKeepTheTurnOrder) {
  WaitOnlyComm comm;
  comm.timeout = std::chrono::seconds(20);
  OverlapEngine engine;
  std::mutex mu;
  std::vector<std::string> events;
  std::set<std::thread::id> backward_threads;
  auto log = [&](std::string e) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(std::move(e));
  };
  auto transfer = [&](Half h, CommPoint p) {
    auto w = c10::make_intrusive<SignalWork>();
    std::thread wire([w] {
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
      w->fire();
    });
    engine.exchange(h, p, comm, 0, comm_point_name(p), signal_post(w));
    wire.join();
  };
  engine.run_pair(
      [&] {
        for (int k = 0; k < 2; ++k) {
          log(fmt::format("F{}", k));
          transfer(Half::Forward, k == 0 ? CommPoint::Dispatch : CommPoint::Combine);
        }
        log("Fend");
      },
      [&] {
        log("B tail");
        std::thread device([&] {  // stands for autograd's device thread
          {
            std::lock_guard<std::mutex> lock(mu);
            backward_threads.insert(std::this_thread::get_id());
          }
          for (int k = 0; k < 2; ++k) {
            transfer(Half::Backward, k == 0 ? CommPoint::CombineGrad : CommPoint::DispatchGrad);
            log(fmt::format("B{}", k));
          }
        });
        device.join();
        log("Bend");
      });
  EXPECT_EQ(events, (std::vector<std::string>{"B tail", "F0", "B0", "F1", "B1", "Bend", "Fend"}));
  const std::vector<LaneRecord> lane = engine.take_lane_records();
  ASSERT_EQ(lane.size(), 4u);
  const std::vector<CommPoint> order{CommPoint::CombineGrad, CommPoint::Dispatch, CommPoint::DispatchGrad,
                                     CommPoint::Combine};
  for (std::size_t i = 0; i < lane.size(); ++i) {
    EXPECT_EQ(lane[i].point, order[i]) << i;
    EXPECT_EQ(lane[i].half, i % 2 == 0 ? Half::Backward : Half::Forward) << i;
  }
  EXPECT_EQ(backward_threads.size(), 1u);
}

// An exception in either half comes out of run_pair after both ended, and
// the other half is not left waiting for its turn.
TEST(Overlap, ErrorsOfEitherHalfPropagate) {
  WaitOnlyComm comm;
  comm.timeout = std::chrono::seconds(20);
  OverlapEngine engine;
  auto done = [] {
    auto w = c10::make_intrusive<SignalWork>();
    w->fire();
    return signal_post(w);
  };
  EXPECT_THROW(engine.run_pair([&] { engine.exchange(Half::Forward, CommPoint::Dispatch, comm, 0, "d", done()); },
                               [] { throw Error("backward failed"); }),
               Error);
  EXPECT_THROW(engine.run_pair([] { throw Error("forward failed"); },
                               [&] { engine.exchange(Half::Backward, CommPoint::CombineGrad, comm, 0, "c", done()); }),
               Error);
  int ran = 0;
  engine.run_pair([&] { ++ran; }, [&] { ++ran; });  // still usable
  EXPECT_EQ(ran, 2);
}

// Device emulation: a piece lasts K times its calibrated cost, whatever its
// real compute took.
TEST(Overlap, DeviceEmulationStretchesPiecesToTheirCalibratedCost) {
  EngineOptions o;
  o.device_factor = 4;
  OverlapEngine engine(o);
  engine.set_calibration({{PieceKey{static_cast<int>(Op::F), 0, 0}, 0.005}});
  const double t0 = OverlapEngine::now();
  engine.begin_chunk(Half::Forward, Op::F, 0);
  engine.end_chunk(Half::Forward);
  const double took = OverlapEngine::now() - t0;
  EXPECT_GE(took, 0.020);
  EXPECT_LT(took, 0.5);
  // Calibrating: no emulation, the piece's CPU time is recorded.
  engine.set_calibrating(true);
  engine.begin_chunk(Half::Forward, Op::F, 1);
  volatile double x = 0;
  for (int i = 0; i < 2000000; ++i) x = x + std::sqrt(static_cast<double>(i));
  engine.end_chunk(Half::Forward);
  engine.set_calibrating(false);
  auto cal = engine.calibration();
  ASSERT_EQ(cal.count(PieceKey{static_cast<int>(Op::F), 1, 0}), 1u);
  EXPECT_GT((cal[PieceKey{static_cast<int>(Op::F), 1, 0}]), 0.0);
}

// The emulated device keeps its own clock: a sleep wakes late (0.1-0.2 ms
// here, under load), and what it overslept comes off the pieces after it.
// 500 pieces of 0.4 ms in a row take 0.2 s and not the 0.24-0.28 s that
// their wake-ups add up to (0.241 s measured without the clock); never less
// than 0.2 s.
TEST(Overlap, DeviceEmulationMakesUpWhatSleepsOverslept) {
  EngineOptions o;
  o.device_factor = 1;
  OverlapEngine engine(o);
  constexpr int kPieces = 500;
  std::map<PieceKey, double> cal;
  for (int p = 0; p < kPieces; ++p) cal[PieceKey{static_cast<int>(Op::F), 0, p}] = 0.4e-3;
  engine.set_calibration(cal);
  const double t0 = OverlapEngine::now();
  engine.begin_chunk(Half::Forward, Op::F, 0);
  for (int p = 1; p < kPieces; ++p) engine.run_piece(Half::Forward, Op::F, 0, p, [] {});
  engine.end_chunk(Half::Forward);
  const double took = OverlapEngine::now() - t0;
  EXPECT_GE(took, kPieces * 0.4e-3);
  EXPECT_LT(took, kPieces * 0.4e-3 + 0.02);
  // The sleeps did wake late (every one of them does, a little), and it is
  // counted; yet the whole took less than its targets plus that lateness.
  EXPECT_GT(engine.overslept(), 0.0);
  EXPECT_LT(took, kPieces * 0.4e-3 + engine.overslept());
}

// The all-to-all of host tensors is made of point-to-point transfers
// (receives posted first): every block reaches its member, uneven and empty
// blocks included, twice in a row on one group (the transfers of two
// exchanges share a tag and must pair in order).
TEST(Comm, AllToAllDeliversEveryBlockWithUnevenAndEmptySplits) {
  MeshShape shape;
  shape.pp = 1;
  shape.ep = 3;
  auto rows = [](int from, int to, int round) -> int64_t { return (from + 2 * to + round) % 3; };
  run_mesh_threads(shape, [&](const Mesh& m) {
    Comm& c = *m.expert;
    for (int round = 0; round < 2; ++round) {
      std::vector<int64_t> in_splits, out_splits;
      std::vector<torch::Tensor> blocks;
      for (int p = 0; p < c.world; ++p) {
        in_splits.push_back(rows(c.rank, p, round));
        out_splits.push_back(rows(p, c.rank, round));
        blocks.push_back(torch::full({in_splits.back(), 2}, 100.0 * c.rank + 10.0 * p + round));
      }
      torch::Tensor in = torch::cat(blocks);
      torch::Tensor out = torch::full({std::accumulate(out_splits.begin(), out_splits.end(), int64_t{0}), 2}, -1.0);
      c.wait(c.iall_to_all(out, in, out_splits, in_splits), -1, [] { return std::string("an all-to-all"); });
      int64_t at = 0;
      for (int p = 0; p < c.world; ++p) {
        const torch::Tensor got = out.narrow(0, at, out_splits[static_cast<std::size_t>(p)]);
        EXPECT_TRUE(torch::equal(got, torch::full_like(got, 100.0 * p + 10.0 * c.rank + round)))
            << "member " << c.rank << " from " << p << " round " << round;
        at += out_splits[static_cast<std::size_t>(p)];
      }
    }
  });
}

// A process group that records the point-to-point transfers posted on it
// (done at once) and has nothing else: a collective all-to-all would fail.
struct RecordingGroup : c10d::ProcessGroup {
  RecordingGroup(int rank, int size) : c10d::ProcessGroup(rank, size) {}
  const std::string getBackendName() const override { return "recording"; }
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& t, int peer, int) override {
    posted.push_back(fmt::format("send {} {}", peer, t[0].size(0)));
    sent.push_back(t[0].clone());
    return done();
  }
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& t, int peer, int) override {
    posted.push_back(fmt::format("recv {} {}", peer, t[0].size(0)));
    t[0].fill_(100 + peer);
    return done();
  }
  static c10::intrusive_ptr<c10d::Work> done() {
    auto w = c10::make_intrusive<SignalWork>();
    w->fire();
    return w;
  }
  std::vector<std::string> posted;
  std::vector<torch::Tensor> sent;
};

// The all-to-all of host tensors posts every receive before any send (Gloo
// sends a block only once its receiver has said it is ready, on the
// connection that carries the receiver's own block: with a send first, the
// two directions crossed the link one after the other), skips empty blocks,
// and copies its own block locally.
TEST(Comm, AllToAllPostsEveryReceiveBeforeAnySend) {
  auto group = c10::make_intrusive<RecordingGroup>(1, 3);
  C10dComm comm(group);
  comm.rank = 1;
  comm.world = 3;
  std::vector<int64_t> in_splits{2, 1, 0}, out_splits{3, 1, 2};
  torch::Tensor in = torch::arange(3, torch::kFloat).unsqueeze(1);
  torch::Tensor out = torch::full({6, 1}, -1.0);
  comm.wait(comm.iall_to_all(out, in, out_splits, in_splits), -1, [] { return std::string("an all-to-all"); });
  EXPECT_EQ(group->posted, (std::vector<std::string>{"recv 0 3", "recv 2 2", "send 0 2"}));
  ASSERT_EQ(group->sent.size(), 1u);
  EXPECT_TRUE(torch::equal(group->sent[0], in.narrow(0, 0, 2)));
  EXPECT_TRUE(torch::equal(out, torch::tensor({100.0, 100.0, 100.0, 2.0, 102.0, 102.0}).unsqueeze(1)));
}

// On a thread-rank mesh (DualPipe, P=2 x E=2, two MoE blocks per stage) with
// random delays at every piece, the collectives of every rank run one at a
// time, and expert peers post the same collectives in the same order, step
// after step and run after run.
// Lowered schedule `s` trained (no optimizer step) on a P x 2 thread mesh
// with the compute jitter drawn from `seed0`: every rank's run, by rank.
std::vector<RankRun> jittered_mesh_run(const Schedule& s, unsigned seed0, MeshShape& shape) {
  std::atomic<unsigned> seed{seed0};
  TrainOptions t = jittered_moe_training(s, seed);
  t.optimize = false;
  shape.pp = s.ranks;
  shape.ep = 2;
  std::vector<RankRun> runs(shape.size());
  run_mesh_threads(shape, [&](const Mesh& m) { runs[m.rank] = train_rank(s, t, m); });
  return runs;
}

// Three jittered runs of lowered schedule `s` on a P x 2 thread mesh: expert
// peers post the same collectives in the same order with the same bytes, one
// at a time on each rank's lane, and every run as the first.
void expect_peers_post_alike(const Schedule& s) {
  std::vector<std::vector<std::string>> first;
  for (int run = 0; run < 3; ++run) {
    MeshShape shape;
    const std::vector<RankRun> runs = jittered_mesh_run(s, static_cast<unsigned>(run * 1000 + 1), shape);
    std::vector<std::vector<std::string>> seqs(shape.size());
    std::vector<std::vector<int64_t>> bytes(shape.size());
    for (int r = 0; r < shape.size(); ++r) {
      const auto& lane = runs[r].last_lane;
      ASSERT_FALSE(lane.empty());
      double a2a_bytes = 0, a2a_count = 0;
      for (std::size_t i = 0; i < lane.size(); ++i) {
        seqs[r].push_back(fmt::format("{}:{}:{}", lane[i].group, comm_point_name(lane[i].point),
                                      static_cast<int>(lane[i].half)));
        if (is_all_to_all(lane[i].point) && lane[i].point != CommPoint::Counts) {
          bytes[r].push_back(lane[i].bytes);
          a2a_bytes += static_cast<double>(lane[i].bytes);
          a2a_count += 1;
        }
        if (i > 0) {
          EXPECT_GE(lane[i].started, lane[i - 1].done) << "rank " << r << ": two collectives at once";
        }
      }
      // The step's data all-to-alls, as the engine counts them for the simulator.
      ASSERT_FALSE(runs[r].exposed.empty());
      EXPECT_EQ(runs[r].exposed.back().a2a_exchanges, a2a_count) << "rank " << r;
      EXPECT_EQ(runs[r].exposed.back().a2a_link_bytes, a2a_bytes) << "rank " << r;
      EXPECT_GT(a2a_bytes, 0) << "rank " << r;
    }
    // Expert peers: ranks r and r + P hold the same stages. With two, what one
    // sends the other receives: the larger of the two, each one's link bytes,
    // is the same on both ends of every exchange (a rank's sends alone differ
    // whenever the routing is uneven).
    for (int r = 0; r < s.ranks; ++r) {
      EXPECT_EQ(seqs[r], seqs[r + s.ranks]) << "expert peers " << r << " and " << r + s.ranks;
      EXPECT_EQ(bytes[r], bytes[r + s.ranks]) << "expert peers " << r << " and " << r + s.ranks;
    }
    if (run == 0) {
      first = seqs;
    } else {
      EXPECT_EQ(seqs, first) << "run " << run << " posted in another order";
    }
  }
}

TEST(Overlap, ExpertPeersPostTheSameCollectivesInTheSameOrder) {
  Schedule s = generate("dualpipe", Shape{2, 8, 2});
  expect_peers_post_alike(lower(s));
  expect_peers_post_alike(lower(pair_forwards(s)));
}

// An F&F pair's two forwards take turns at their all-to-alls as an F&B
// pair's halves do: the second forward (the pair's second task) starts, and
// with two MoE blocks a stage the lane carries, halves alternating, the
// dispatch of each, the combine of each, and so on for the second block,
// whatever the compute jitter.
TEST(Overlap, ForwardPairsTakeTurnsAtTheirAllToAlls) {
  Schedule s = lower(pair_forwards(generate("dualpipe", Shape{2, 8, 2})));
  for (int run = 0; run < 3; ++run) {
    MeshShape shape;
    const std::vector<RankRun> runs = jittered_mesh_run(s, static_cast<unsigned>(run * 77 + 5), shape);
    for (int r = 0; r < shape.size(); ++r) {
      std::vector<std::string> pair;  // the pair's forward collectives, as point:half
      bool in_pair = false;
      for (const LaneRecord& rec : runs[r].last_lane) {
        const bool fwd_point = rec.point == CommPoint::Dispatch || rec.point == CommPoint::Combine;
        if (!fwd_point) continue;
        // Forward traffic of the second task only comes from an F&F pair.
        in_pair = in_pair || rec.half == Half::Backward;
        if (in_pair && pair.size() < 8)
          pair.push_back(fmt::format("{}:{}", comm_point_name(rec.point), rec.half == Half::Forward ? "first" : "second"));
      }
      EXPECT_EQ(pair, (std::vector<std::string>{"dispatch:second", "dispatch:first", "combine:second", "combine:first",
                                                "dispatch:second", "dispatch:first", "combine:second",
                                                "combine:first"}))
          << "rank " << r << ", run " << run;
    }
  }
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
                                           MethodCase{"combined-1f1b", 2, 8},
                                           MethodCase{"dualpipe", 4, 8}),
                         [](const auto& param_info) {
                           const MethodCase& c = param_info.param;
                           return test_support::case_name(c.method, "P" + std::to_string(c.ranks));
                         });

// With forwards paired (pair_forwards), every gradient is still the
// unsharded model's, with the hand-over on and off.
TEST(MoeVerify, ExactWithForwardsPaired) {
  at::set_num_threads(1);
  for (const MethodCase& mc : {MethodCase{"dualpipe", 2, 4}, MethodCase{"dualpipev", 2, 4}, MethodCase{"1f1b", 2, 4},
                               MethodCase{"dualpipe", 4, 8}}) {
    Schedule s = pair_forwards(generate(mc.method, Shape{mc.ranks, mc.micro_batches, 2}));
    int pairs = 0;
    for (const auto& list : s.actions)
      for (const Action& a : list) pairs += a.op == Op::FF;
    ASSERT_GT(pairs, 0) << mc.method << " P" << mc.ranks << ": nothing paired, nothing tested";
    ModelConfig c = small_moe(s);
    for (bool overlap : {true, false}) {
      VerifyResult r = verify_mesh(s, c, 2, overlap);
      EXPECT_LE(r.loss_error, 1e-12) << mc.method << " P" << mc.ranks << " overlap " << overlap;
      EXPECT_LE(r.grad_error, 1e-12) << mc.method << " P" << mc.ranks << " overlap " << overlap;
    }
  }
}

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
    PipelineModel model = make_model(mine, expert_group(m, nullptr));
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
  EXPECT_NE(r.out.find("moe.expertN"), std::string::npos) << r.out;  // the experts' group
}

// The emulated-device smoke run: bench on a thread-rank mesh with device
// emulation gives one JSON document on stdout with the calibration it
// emulated, the simulator fed with it, and every rank's exposed time split
// by cause; combined 1F1B runs the same way.
TEST(MoeCli, BenchWithDeviceEmulationReportsCalibrationAndExposure) {
  for (const char* method : {"-m dualpipe", "-m combined-1f1b --chunks 2"}) {
    const std::string args = fmt::format(
        "bench {} -p 2 -n 8 --model moe --ep 2 --hidden 16 --seq-len 6 --heads 2 --layers 4 --steps 5 --threads "
        "--emulate-device 2 --format json",
        method);
    // stdout alone: the mesh lines and the calibration go to stderr.
    CliRun r = test_support::run_command(std::string("(timeout -k 5 300 ") + DUALPIPE_BINARY + " " + args + " 2>/dev/null)");
    ASSERT_EQ(r.code, 0) << args << "\n" << r.out;
    const nlohmann::json j = nlohmann::json::parse(r.out);  // stdout is the JSON alone
    EXPECT_EQ(j["emulate_device"].get<double>(), 2.0);
    ASSERT_FALSE(j["calibration"].empty());
    for (const auto& c : j["calibration"]) EXPECT_GT(c["cpu_s"].get<double>(), 0.0) << c.dump();
    EXPECT_GT(j["simulated_with_a2a_s"].get<double>(), 0.0);
    EXPECT_GT(j["simulated_upload_only_s"].get<double>(), 0.0);
    // The simulator's phase from the bytes the run's exchanges carried.
    EXPECT_GT(j["a2a_yardstick_bytes"].get<double>(), 0.0);
    EXPECT_GT(j["a2a_link_bytes_mean"].get<double>(), 0.0);
    EXPECT_GT(j["simulated_a2a_phase_s"].get<double>(), 0.0);
    for (const auto& rank : j["per_rank"]) {
      const auto& e = rank["exposed_comm_s"];
      for (const char* key : {"all_to_all", "pipeline", "grad_reduce", "handover", "peer_wait"})
        EXPECT_GE(e[key].get<double>(), 0.0) << key;
      EXPECT_TRUE(e["by_point"].contains("dispatch"));
      EXPECT_GT(rank["device_overslept_s"].get<double>(), 0.0) << "its sleeps are counted";
    }
  }
}

// bench --lane-records: every rank's collectives of the last step, one CSV a
// rank; expert peers logged the same collectives in the same order (the turn
// order's promise), each posted before it started and started before it
// ended; scripts/lane_report.py pairs them into exchanges.
TEST(MoeCli, BenchLaneRecordsGiveEveryRanksCollectivesForThePeerReport) {
  const std::string dir = ::testing::TempDir() + "dualpipe_moe_lanes";  // made by bench
  std::filesystem::remove_all(dir);
  const std::string args = "bench -m dualpipe -p 2 -n 4 --model moe --ep 2 --hidden 16 --seq-len 6 --heads 2 "
                           "--steps 1 --threads --fb-overlap on --format json --lane-records " + dir;
  CliRun r = test_support::run_command(std::string("(timeout -k 5 300 ") + DUALPIPE_BINARY + " " + args + " 2>&1 >/dev/null)");
  ASSERT_EQ(r.code, 0) << r.out;
  std::map<int, std::vector<std::string>> sequence;                // rank -> "group point half bytes" per record
  size_t expert_records = 0;
  double exposed = 0;  // seconds, all ranks
  for (int rank = 0; rank < 4; ++rank) {
    std::ifstream in(fmt::format("{}/rank{}.csv", dir, rank));
    ASSERT_TRUE(in) << "no CSV for rank " << rank;
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, "rank,pp,ep,dp,group,point,half,bytes,step_start_s,posted_s,started_s,done_s,wait_from_s,wait_to_s");
    while (std::getline(in, line)) {
      std::vector<std::string> f;
      std::stringstream ss(line);
      for (std::string cell; std::getline(ss, cell, ',');) f.push_back(cell);
      ASSERT_EQ(f.size(), 14u) << line;
      EXPECT_EQ(std::stoi(f[0]), rank);
      EXPECT_GT(std::stod(f[8]), 0.0) << line;  // the step's start on the steady clock
      EXPECT_LE(std::stod(f[9]), std::stod(f[10])) << line;
      EXPECT_LE(std::stod(f[10]), std::stod(f[11])) << line;
      // The rank's exposed wait: within the step and, where there is one, not
      // past the collective's end (a wait begun after it is empty).
      EXPECT_LE(std::stod(f[12]), std::stod(f[13])) << line;
      EXPECT_GE(std::stod(f[12]), 0.0) << line;
      if (std::stod(f[13]) > std::stod(f[12])) {
        EXPECT_LE(std::stod(f[13]), std::stod(f[11]) + 1e-3) << line;
      }
      exposed += std::stod(f[13]) - std::stod(f[12]);
      sequence[rank].push_back(f[4] + " " + f[5] + " " + f[6] + " " + f[7]);
      if (f[4].rfind("expert", 0) == 0) ++expert_records;
    }
    EXPECT_FALSE(sequence[rank].empty()) << "rank " << rank << " logged nothing";
  }
  // Ranks 0 and 2 (pipeline rank 0), 1 and 3 (pipeline rank 1) are expert peers.
  EXPECT_EQ(sequence[0], sequence[2]);
  EXPECT_EQ(sequence[1], sequence[3]);
  CliRun rep = test_support::run_command(fmt::format("python3 {}/scripts/lane_report.py {} --link-rate 1gbit --format json",
                                                     DUALPIPE_SOURCE_DIR, dir));
  ASSERT_EQ(rep.code, 0) << rep.out;
  const nlohmann::json j = nlohmann::json::parse(rep.out);
  size_t exchanges = 0;
  double report_exposed = 0;
  for (const auto& [point, row] : j.items()) {
    exchanges += row["exchanges"].get<size_t>();
    EXPECT_GE(row["post_gap_ms"].get<double>(), 0.0) << point;
    EXPECT_GT(row["after_last_post_ms"].get<double>(), 0.0) << point;
    EXPECT_GT(row["wire_ms"].get<double>(), 0.0) << point;
    EXPECT_TRUE(std::isfinite(row["first_poster_lag_ms"].get<double>())) << point;
    // The exposed waits, split by when, add up.
    EXPECT_NEAR(row["exposed_wire_s"].get<double>() + row["exposed_late_peer_s"].get<double>() +
                    row["exposed_beyond_s"].get<double>(),
                row["exposed_s"].get<double>(), 1e-6)
        << point;
    report_exposed += row["exposed_s"].get<double>();
  }
  EXPECT_EQ(exchanges * 2, expert_records);  // every exchange has its two members
  // Every exposed wait in the files is an all-to-all's (the lane holds no
  // other collective here) and the report counts each once.
  EXPECT_GT(exposed, 0.0);
  EXPECT_NEAR(report_exposed, exposed, 1e-6);
  std::filesystem::remove_all(dir);
}

// bench --calibration FILE: the device emulation takes its piece costs from
// an earlier run's JSON (here tripled, so that a fresh measurement could not
// match them), so that several runs compare at one device speed.
TEST(MoeCli, BenchTakesItsPieceCostsFromAnEarlierRunsCalibration) {
  const std::string file = ::testing::TempDir() + "dualpipe_moe_calibration.json";
  const std::string args = std::string(DUALPIPE_BINARY) +
                           " bench -m dualpipe -p 2 -n 4 --model moe --ep 2 --hidden 16 --seq-len 6 --heads 2 "
                           "--steps 1 --threads --emulate-device 2 --format json";
  CliRun first = test_support::run_command("(timeout -k 5 300 " + args + " 2>/dev/null)");
  ASSERT_EQ(first.code, 0) << first.out;
  nlohmann::json given = nlohmann::json::parse(first.out);
  ASSERT_FALSE(given["calibration"].empty());
  for (auto& c : given["calibration"]) c["cpu_s"] = 3 * c["cpu_s"].get<double>();
  {
    std::ofstream(file) << given.dump();
  }
  CliRun second = test_support::run_command("(timeout -k 5 300 " + args + " --calibration " + file + " 2>/dev/null)");
  ASSERT_EQ(second.code, 0) << second.out;
  const nlohmann::json used = nlohmann::json::parse(second.out);
  ASSERT_EQ(used["calibration"].size(), given["calibration"].size());
  for (size_t i = 0; i < given["calibration"].size(); ++i) {  // averaged over the ranks again: to rounding
    const auto& u = used["calibration"][i];
    const auto& g = given["calibration"][i];
    EXPECT_EQ(u["op"], g["op"]);
    EXPECT_EQ(u["piece"], g["piece"]);
    EXPECT_NEAR(u["cpu_s"].get<double>(), g["cpu_s"].get<double>(), 1e-9 * g["cpu_s"].get<double>()) << g.dump();
  }
  EXPECT_EQ(used["calibration_from"], file);
  std::remove(file.c_str());
}

TEST(MoeCli, BadInputIsOneLineWithCode2) {
  // Calibrations measured on another model, and with weight gradients in the waits.
  const std::string other_model = ::testing::TempDir() + "dualpipe_moe_other_model.json";
  const std::string filled = ::testing::TempDir() + "dualpipe_moe_filled.json";
  std::ofstream(other_model) << R"({"model": {"name": "gpt"}, "calibration": [{"op": "F", "stage": 0, "piece": 0, "cpu_s": 0.001}]})";
  std::ofstream(filled) << R"({"fill_waits": true, "calibration": [{"op": "B", "stage": 0, "piece": 0, "cpu_s": 0.001}]})";
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
           {"verify -m 1f1b -p 2 -n 4 --emulate-device 0", "--emulate-device must be a number in (0, 1000] (got '0')"},
           {"bench -m 1f1b -p 2 -n 4 --emulate-device -2", "--emulate-device must be a number in (0, 1000]"},
           {"train -m 1f1b -p 2 -n 4 --emulate-device fast", "(got 'fast')"},
           {"bench -m 1f1b -p 2 -n 4 --emulate-device nan", "(got 'nan')"},
           {"verify -m 1f1b -p 2 -n 4 --comm-lane maybe", "--comm-lane"},
           {std::string("bench -m 1f1b -p 2 -n 4 --lane-records ") + DUALPIPE_BINARY, "is a file, not a folder"},
           {"bench -m 1f1b -p 2 -n 4 --calibration x.json", "--calibration needs --emulate-device K"},
           {std::string("bench -m 1f1b -p 2 -n 4 --emulate-device 2 --calibration ") + DUALPIPE_BINARY, "not JSON"},
           {"bench -m 1f1b -p 2 -n 4 --emulate-device 2 --calibration /nonexistent.json", "does not exist"},
           {"bench -m 1f1b -p 2 -n 4 --emulate-device 2 --calibration " + other_model,
            "was measured with model {\"name\":\"gpt\"}"},
           // A B piece holds its weight gradient only with --fill-waits off.
           {"bench -m 1f1b -p 2 -n 4 --emulate-device 2 --fill-waits off --calibration " + filled,
            "was measured with fill_waits true, this run has false"},
       }) {
    CliRun r = run_cli(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(fragment), std::string::npos) << args << "\n" << r.out;
  }
  std::remove(other_model.c_str());
  std::remove(filled.c_str());
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
