#include "dualpipe/runtime/mesh.h"

#include <fmt/format.h>

#include <algorithm>

namespace dualpipe {

int mesh_rank(const MeshShape& s, const MeshCoord& c) { return (c.dp * s.ep + c.ep) * s.pp + c.pp; }

MeshCoord mesh_coord(const MeshShape& s, int rank) {
  MeshCoord c;
  c.pp = rank % s.pp;
  c.ep = rank / s.pp % s.ep;
  c.dp = rank / (s.pp * s.ep);
  return c;
}

std::vector<int> mesh_group(const MeshShape& s, int rank, MeshDim dim) {
  const MeshCoord me = mesh_coord(s, rank);
  const int n = dim == MeshDim::Pipeline ? s.pp : dim == MeshDim::Expert ? s.ep : s.dp;
  std::vector<int> ranks;
  for (int i = 0; i < n; ++i) {
    MeshCoord c = me;
    (dim == MeshDim::Pipeline ? c.pp : dim == MeshDim::Expert ? c.ep : c.dp) = i;
    ranks.push_back(mesh_rank(s, c));
  }
  return ranks;
}

std::string describe_layout(const MeshShape& s) {
  std::string t = fmt::format("mesh: {} ranks = {} pipeline x {} expert x {} data (rank = (dp*{} + ep)*{} + pp)\n",
                              s.size(), s.pp, s.ep, s.dp, s.ep, s.pp);
  for (int r = 0; r < s.size(); ++r) {
    const MeshCoord c = mesh_coord(s, r);
    t += fmt::format("  rank {}: pipeline rank {}, expert rank {}, data replica {}\n", r, c.pp, c.ep, c.dp);
  }
  return t;
}

namespace {

// How every group of one rank is made: its backend and device, over prefixed keys of one store.
struct GroupMaker {
  compat::StorePtr store;
  std::chrono::milliseconds timeout;
  bool local;
  Backend backend;
  int device;
  // Member `index` of a group of `world` ranks under "prefix/".
  std::shared_ptr<Comm> operator()(const std::string& prefix, int index, int world) const {
    return connect(compat::make_prefix_store(prefix, store), index, world, timeout, local, backend, device);
  }
  // `rank`'s group of the job ranks `members` (sorted, `rank` among them),
  // named `name` in errors, under "prefix/".
  std::shared_ptr<Comm> members(const std::string& prefix, const std::vector<int>& members, int rank,
                                const std::string& name) const {
    const int index = static_cast<int>(std::find(members.begin(), members.end(), rank) - members.begin());
    auto c = (*this)(prefix, index, static_cast<int>(members.size()));
    c->global_ranks = members;
    c->name = name;
    return c;
  }
};

// A group along `dim` through `rank`, named by the dimension and the
// coordinates it does not span, so that every member derives the same key prefix.
std::shared_ptr<Comm> subgroup(const GroupMaker& make, const MeshShape& s, int rank, MeshDim dim, const std::string& tag) {
  const std::vector<int> members = mesh_group(s, rank, dim);
  return make.members(fmt::format("{}/{}", tag, members.front()), members, rank, tag);
}

}  // namespace

Mesh connect_mesh(const compat::StorePtr& store, int rank, const MeshShape& shape, std::chrono::milliseconds timeout,
                  bool local, Backend backend, int device) {
  if (shape.pp < 1 || shape.ep < 1 || shape.dp < 1)
    throw Error(fmt::format("mesh sizes must be at least 1 (got pipeline {}, expert {}, data {})", shape.pp,
                            shape.ep, shape.dp));
  if (rank < 0 || rank >= shape.size())
    throw Error(fmt::format("rank {} is outside the mesh of {} ranks", rank, shape.size()));
  Mesh m;
  m.shape = shape;
  m.rank = rank;
  m.coord = mesh_coord(shape, rank);
  if (backend == Backend::Nccl) m.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device));
  const GroupMaker make{store, timeout, local, backend, device};
  // Every group is created in the same order on every rank: Gloo's
  // rendezvous of one group waits for all its members.
  m.world = make("world", rank, shape.size());
  m.pipeline = shape.size() == shape.pp ? m.world : subgroup(make, shape, rank, MeshDim::Pipeline, "pipeline");
  if (shape.ep > 1) {
    m.expert = subgroup(make, shape, rank, MeshDim::Expert, "expert");
    m.expert_bwd = subgroup(make, shape, rank, MeshDim::Expert, "expert-bwd");
    m.expert_counts = subgroup(make, shape, rank, MeshDim::Expert, "expert-counts");
  }
  if (shape.dp > 1) m.data = subgroup(make, shape, rank, MeshDim::Data, "data");
  m.make_group = [make, rank](const std::vector<int>& members, const std::string& key) {
    if (std::find(members.begin(), members.end(), rank) == members.end())
      throw Error(fmt::format("rank {} is not a member of group {}", rank, key));
    return make.members("group/" + key, members, rank, key);
  };
  return m;
}

Mesh pipeline_mesh(std::shared_ptr<Comm> comm) {
  Mesh m;
  m.shape.pp = comm->world;
  m.rank = comm->rank;
  m.coord.pp = comm->rank;
  m.world = comm;
  m.pipeline = comm;
  return m;
}

}  // namespace dualpipe
