#pragma once
// Starting the ranks of a mesh, one launcher for every way: as threads of
// one process, as local processes, as processes on emulated hosts (network
// namespaces), or as one process started by torchrun (or any launcher that
// sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). launch() is the whole of
// it for a program: examples/launch_ranks.cpp uses it; dualpipe's commands
// do the same.
//
// Process launches re-run this program (/proc/self/exe) with the arguments
// given, as torchrun does: each rank process runs the program's main again,
// finds RANK in its environment, and launch() there connects it and runs the
// body. Threads: the calling thread waits; the body runs once per rank
// thread, concurrently.
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

#include "dualpipe/cluster/supervise.h"  // supervise_ranks, the waiting half of spawn_local_ranks
#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/mesh.h"

namespace dualpipe {

// How to start the ranks of one run.
struct LaunchOptions {
  MeshShape shape;            // P x E x D ranks
  bool threads = false;       // threads of this process (the rank processes' alternative)
  int emulate_hosts = 0;      // > 0: rank processes on that many emulated hosts (needs root and network namespaces)
  std::string link_rate = "1gbit";  // with emulate_hosts: each host's link, as tc writes it
  // A peer that stalls is reported after this long (a dead one at once).
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  int intra_op_threads = 1;   // compute threads of each rank (set_compute_threads)
  // Rank processes only (ours, not threads nor an outside launcher's): when
  // a rank fails, the others are stopped and all start again, up to this
  // many times, as torchrun's --max-restarts does. A restarted rank process
  // sees restart_count() > 0 and decides itself where to go on from (train
  // resumes from its last checkpoint). A stop the ranks agreed on
  // (kAgreedStopExitCode, kInterruptedExitCode) or a Ctrl-C of the launcher
  // is never restarted.
  int max_restarts = 0;
  // The command line of a rank process; args[0] is replaced by this
  // program's own file. Usually the program's own argv.
  std::vector<std::string> args;
  // The ranks' process groups: Gloo, or NCCL with each rank on CUDA device
  // (local rank % visible devices), where its Mesh::device says.
  Backend backend = Backend::Gloo;
};

// Throws dualpipe::Error, naming the setting, for options no launch can take
// (NCCL: also where it is not compiled in, or the ranks this launch starts
// on this machine need more CUDA devices than are visible).
void check_launch_options(const LaunchOptions& o);

// Runs body(mesh) on every rank of o.shape and returns the exit code to
// leave with:
// - RANK set (a rank process, ours or an outside launcher's): connects
//   this process as that rank (bounded by o.timeout, one-line errors for a
//   missing store, a port held by another program, a name that does not
//   resolve) and returns body's code; a PeerError ends the process at once
//   with one line and exit code 2 (unwinding would wait on the dead peer);
// - threads: runs the mesh on threads of this process, returns rank 0's code;
// - otherwise starts o.shape.size() rank processes (on emulated hosts when
//   emulate_hosts > 0), waits for them, and returns as spawn_local_ranks does,
//   after up to o.max_restarts restarts of them all.
// Throws dualpipe::Error for bad options or a failed start.
int launch(const LaunchOptions& o, const std::function<int(const Mesh&)>& body);

// Which start of the run this process belongs to: 0 for the first, k after
// k restarts (DUALPIPE_RESTART_COUNT, set by launch(); torchrun's
// TORCHELASTIC_RESTART_COUNT where that is set instead).
int restart_count();

// True in the process that speaks for the run (prints, writes files, holds
// locks): the one that launches (or runs thread ranks), or rank 0 of an
// outside launcher's ranks; false in the rank processes launch() started.
bool is_lead_process();

// Named settings every rank of a run must share ("dtype" -> "float32").
using RankSettings = std::vector<std::pair<std::string, std::string>>;
// Refuses a run whose ranks were started with different settings (each rank
// of a torchrun-style launch has its own command line): every rank's settings
// travel to all in one all-reduce of a fixed-size buffer, before any model
// tensor (whose dtype or size may differ). Throws dualpipe::Error, on every
// rank, naming the first differing setting and both values.
void check_same_settings(const RankSettings& mine, Comm& world);

// Compute threads of one rank: LibTorch's intra-op pool and OpenBLAS's own
// threads, which LibTorch's setting does not reach (OpenBLAS sizes its pool
// from OMP_NUM_THREADS when it is loaded: a torchrun-style rank without that
// variable ran every matrix product on every core, 2-3.6x slower steps).
// Process-wide.
void set_compute_threads(int n);
struct ComputeThreads {
  int intra_op = 0;  // at::get_num_threads()
  int blas = -1;     // openblas_get_num_threads(); -1: not OpenBLAS
};
ComputeThreads compute_threads();

// LibTorch's c10d and Gloo log through glog, straight to stderr: a rank
// waiting for an unreachable MASTER_ADDR printed one warning a second, and a
// timeout two more lines before dualpipe's own. Errors reach the user as
// dualpipe's one line (the exception's text), so glog is limited to FATAL.
// A user who sets GLOG_minloglevel keeps what they asked for. Process-wide.
void quiet_library_logging();

struct RankEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// The torchrun-style variables, if RANK is set; throws dualpipe::Error if they are
// incomplete or inconsistent.
std::optional<RankEnv> rank_from_env();

// Rendezvous of this process as `env.rank` through a TCPStore at
// master_addr:master_port, where it first marks its arrival (so that a
// failed rendezvous can name the ranks that never came). NCCL: on CUDA
// device rank_device_index(env.local_rank).
std::shared_ptr<Comm> connect_env(const RankEnv& env, std::chrono::milliseconds timeout,
                                  Backend backend = Backend::Gloo);
// The same for a mesh of env.world = shape.size() ranks: every group of this
// rank, built through the one store.
Mesh connect_env_mesh(const RankEnv& env, const MeshShape& shape, std::chrono::milliseconds timeout,
                      Backend backend = Backend::Gloo);

// Re-runs this program (args, args[0] replaced by this program's file) as
// `world` local rank processes with the torchrun variables set,
// `intra_op_threads` each, and waits for them.
// Returns 0 if all succeed, else the first failing rank's exit code (128 +
// signal if it was killed), after one line on stderr naming that rank and how
// it failed. The others get a second to exit by themselves, then SIGTERM, then
// SIGKILL, so that this returns even if a rank hangs.
int spawn_local_ranks(int world, const std::vector<std::string>& args, int intra_op_threads = 1);

// Switches the calling thread to SCHED_BATCH, the kernel's policy for
// throughput work that should not preempt on wake-up; threads and processes
// it starts afterwards (Gloo's I/O thread, spawned ranks) inherit it. Same
// priority as normal, no privilege needed. On small machines where a rank's
// compute thread and Gloo's I/O threads share cores, every transfer wakes a
// thread; under the normal policy those wake-ups preempt and bounce threads
// between cores, and a tiny-model step was 2.9x slower (docs/BENCHMARKS.md).
// Throws dualpipe::Error if the kernel refuses.
void use_batch_scheduling();

// True in a rank process started by launch() or spawn_local_ranks (its
// launcher already printed what every rank would print, such as warnings).
bool is_spawned_rank();

// A loopback TCP port that was free a moment ago (the kernel picks it);
// throws dualpipe::Error if there is none.
int free_local_port();

// Runs fn(comm) on `world` threads of this process, connected through an
// in-process store; rethrows the first exception any rank threw. NCCL
// (require_backend and require_devices first): thread rank r on CUDA device r.
void run_thread_ranks(int world, const std::function<void(std::shared_ptr<Comm>)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::minutes(2), Backend backend = Backend::Gloo);
// The same for a whole mesh: shape.size() threads, each with its groups.
void run_mesh_threads(const MeshShape& shape, const std::function<void(const Mesh&)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::minutes(2), Backend backend = Backend::Gloo);

}  // namespace dualpipe
