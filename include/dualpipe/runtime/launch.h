#pragma once
// Starting ranks: as threads of one process (tests), as local processes
// spawned by `dualpipe train`/`verify`, or as one process started by torchrun
// (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "dualpipe/cluster/supervise.h"  // supervise_ranks, the waiting half of spawn_local_ranks
#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/mesh.h"

namespace dualpipe {

struct RankEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// The torchrun-style variables, if RANK is set; throws dualpipe::Error if they are
// incomplete or inconsistent.
std::optional<RankEnv> rank_from_env();

// Rendezvous of this process as `env.rank` through a TCPStore at master_addr:master_port.
std::shared_ptr<Comm> connect_env(const RankEnv& env, std::chrono::milliseconds timeout);
// The same for a mesh of env.world = shape.size() ranks: every group of this
// rank, built through the one store.
Mesh connect_env_mesh(const RankEnv& env, const MeshShape& shape, std::chrono::milliseconds timeout);

// Re-runs this program (same arguments) as `world` local rank processes with
// the torchrun variables set, one intra-op thread each, and waits for them.
// Returns 0 if all succeed, else the first failing rank's exit code (128 +
// signal if it was killed), after one line on stderr naming that rank and how
// it failed. The others get a second to exit by themselves, then SIGTERM, then
// SIGKILL, so that this returns even if a rank hangs.
int spawn_local_ranks(int world, int argc, char** argv);

// Switches the calling thread to SCHED_BATCH, the kernel's policy for
// throughput work that should not preempt on wake-up; threads and processes
// it starts afterwards (Gloo's I/O thread, spawned ranks) inherit it. Same
// priority as normal, no privilege needed. On small machines where a rank's
// compute thread and Gloo's I/O threads share cores, every transfer wakes a
// thread; under the normal policy those wake-ups preempt and bounce threads
// between cores, and a tiny-model step was 2.9x slower (docs/BENCHMARKS.md).
// Throws dualpipe::Error if the kernel refuses.
void use_batch_scheduling();

// True in a rank process started by spawn_local_ranks (its launcher already
// printed what every rank would print before training, such as warnings).
bool is_spawned_rank();

// A loopback TCP port that was free a moment ago (the kernel picks it);
// throws dualpipe::Error if there is none.
int free_local_port();

// Runs fn(comm) on `world` threads of this process, connected through an
// in-process store; rethrows the first exception any rank threw.
void run_thread_ranks(int world, const std::function<void(std::shared_ptr<Comm>)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::minutes(2));
// The same for a whole mesh: shape.size() threads, each with its groups.
void run_mesh_threads(const MeshShape& shape, const std::function<void(const Mesh&)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::minutes(2));

}  // namespace dualpipe
