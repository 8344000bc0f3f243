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

// A group along `dim` through `rank`, named by the dimension and the
// coordinates it does not span, so that every member derives the same key prefix.
std::shared_ptr<Comm> subgroup(const compat::StorePtr& store, const MeshShape& s, int rank, MeshDim dim,
                               const std::string& tag, std::chrono::milliseconds timeout, bool local) {
  const std::vector<int> members = mesh_group(s, rank, dim);
  const int first = members.front();
  int index = 0;
  while (members[index] != rank) ++index;
  auto pg = compat::make_gloo(compat::make_prefix_store(fmt::format("{}/{}", tag, first), store), index,
                              static_cast<int>(members.size()), timeout, local);
  return wrap_group(pg, timeout, members, tag);
}

}  // namespace

Mesh connect_mesh(const compat::StorePtr& store, int rank, const MeshShape& shape, std::chrono::milliseconds timeout,
                  bool local) {
  if (shape.pp < 1 || shape.ep < 1 || shape.dp < 1)
    throw Error(fmt::format("mesh sizes must be at least 1 (got pipeline {}, expert {}, data {})", shape.pp,
                            shape.ep, shape.dp));
  if (rank < 0 || rank >= shape.size())
    throw Error(fmt::format("rank {} is outside the mesh of {} ranks", rank, shape.size()));
  Mesh m;
  m.shape = shape;
  m.rank = rank;
  m.coord = mesh_coord(shape, rank);
  // Every group is created in the same order on every rank: Gloo's
  // rendezvous of one group waits for all its members.
  m.world = wrap_group(compat::make_gloo(compat::make_prefix_store("world", store), rank, shape.size(), timeout, local),
                       timeout, {}, "world");
  m.pipeline = shape.size() == shape.pp ? m.world : subgroup(store, shape, rank, MeshDim::Pipeline, "pipeline", timeout, local);
  if (shape.ep > 1) {
    m.expert = subgroup(store, shape, rank, MeshDim::Expert, "expert", timeout, local);
    m.expert_bwd = subgroup(store, shape, rank, MeshDim::Expert, "expert-bwd", timeout, local);
  }
  if (shape.dp > 1) m.data = subgroup(store, shape, rank, MeshDim::Data, "data", timeout, local);
  m.make_group = [store, rank, timeout, local](const std::vector<int>& members, const std::string& key) {
    const auto it = std::find(members.begin(), members.end(), rank);
    if (it == members.end()) throw Error(fmt::format("rank {} is not a member of group {}", rank, key));
    auto pg = compat::make_gloo(compat::make_prefix_store("group/" + key, store),
                                static_cast<int>(it - members.begin()), static_cast<int>(members.size()), timeout,
                                local);
    return wrap_group(pg, timeout, members, key);
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
