#pragma once
// The process mesh: ranks laid out as pipeline x expert x data parallelism,
// with one process group per dimension, all met through one rendezvous store.
//
// Layout (the one place that defines it): the pipeline index varies fastest,
// then the expert index, then the data-parallel index:
//
//   rank = (dp * E + ep) * P + pp
//
// so ranks 0..P-1 are the first pipeline (with E = D = 1 the mesh is exactly
// the plain pipeline), each pipeline is a block of P consecutive ranks, and
// the expert group of a stage is every P-th rank. Example P=2, E=2:
//
//   rank 0: pp 0, ep 0    rank 1: pp 1, ep 0
//   rank 2: pp 0, ep 1    rank 3: pp 1, ep 1
//   pipelines {0,1} {2,3}; expert groups {0,2} {1,3}
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dualpipe/runtime/comm.h"

namespace dualpipe {

struct MeshShape {
  int pp = 1, ep = 1, dp = 1;
  int size() const { return pp * ep * dp; }
  // Pipelines that each read their own share of the global batch.
  int data_shards() const { return ep * dp; }
};

struct MeshCoord {
  int pp = 0, ep = 0, dp = 0;
};

int mesh_rank(const MeshShape& s, const MeshCoord& c);
MeshCoord mesh_coord(const MeshShape& s, int rank);

// The global ranks of the group through `rank` along one dimension, in order
// of that dimension's index.
enum class MeshDim { Pipeline, Expert, Data };
std::vector<int> mesh_group(const MeshShape& s, int rank, MeshDim dim);

// "rank 3: pipeline stage rank 1, expert rank 1, data replica 0" lines, one a rank.
std::string describe_layout(const MeshShape& s);

// One rank's view of the mesh. Groups of one rank are null where a dimension
// has size 1 (except `pipeline` and `world`, always set).
// Ownership: shares its groups (shared_ptr<Comm>) with whoever copies it.
// Thread-safety: one per rank; its groups follow Comm's rules.
struct Mesh {
  MeshShape shape;
  MeshCoord coord;
  int rank = 0;
  // Where this rank's model lives: the CUDA device its NCCL groups use
  // (connect_mesh with Backend::Nccl), else the CPU.
  torch::Device device = torch::kCPU;
  std::shared_ptr<Comm> world;     // every rank: loss, norm and timing reductions
  std::shared_ptr<Comm> pipeline;  // this pipeline's P ranks: the executor's transfers
  // The E ranks that hold the same stages in the pipelines of one data
  // replica: the MoE all-to-alls. Two groups, because an overlapped F&B
  // issues forward and backward all-to-alls from two threads, and each
  // group's collectives must come in one order on every member; and a third
  // for the token-count exchanges, which go out at once beside a bulk
  // all-to-all on the lane instead of queuing behind it.
  std::shared_ptr<Comm> expert, expert_bwd, expert_counts;
  std::shared_ptr<Comm> data;  // the D ranks that are the same position in every data replica

  // This pipeline's index among the E*D pipelines (its share of the batch).
  int data_shard() const { return coord.dp * shape.ep + coord.ep; }

  // Makes a group of the given job ranks (sorted; this rank among them),
  // named `key` the same on every member. Every member must call it, and a
  // rank that is in several groups must make them in one order shared by all
  // ranks (Gloo's rendezvous of a group waits for all its members). Set by
  // connect_mesh; empty for pipeline_mesh (a caller's single group).
  std::function<std::shared_ptr<Comm>(const std::vector<int>& members, const std::string& key)> make_group;
};

// Builds every group of `rank` through prefixed keys of `store`. All ranks
// must call it with the same shape and backend. NCCL: every group is an
// NCCL group on CUDA device `device` (connect), and so is Mesh::device.
Mesh connect_mesh(const compat::StorePtr& store, int rank, const MeshShape& shape, std::chrono::milliseconds timeout,
                  bool local = true, Backend backend = Backend::Gloo, int device = 0);

// A mesh that is one pipeline over an existing group (E = D = 1).
Mesh pipeline_mesh(std::shared_ptr<Comm> comm);

}  // namespace dualpipe
