#pragma once
// One gradient reduction for every source of replicated parameters.
//
// A parameter's gradient is summed over all its holders: the ranks that hold
// the same parameter and saw different data. For a stage on this rank they
// are, in the mesh P x E x D,
//   - the stage's replicas in the pipeline (DualPipe and Chimera keep two
//     copies of every stage; other methods one),
//   - for dense parameters, every expert rank E (they see different tokens;
//     expert parameters are each rank's own experts),
//   - every data-parallel replica D.
// So each (stage, dense or expert) is one holder group, made once from the
// mesh and the schedule's placement, and reduced the same way whatever the
// source: its parameters in registration order, cut into buckets of whole
// parameters of about a configurable size (a parameter larger than that is a
// bucket of its own), one collective per bucket in bucket order. The result
// is the same on every holder and from run to run.
//
// Sharding (ZeRO-1): each holder owns an equal chunk of every bucket. The
// bucket is reduce-scattered (each holder ends with the sum of its own chunk
// only), the optimizer updates the owned chunk of the parameters, and an
// all-gather brings every holder the new parameters. For that the
// parameters of a bucket are views of one flat buffer (as PyTorch's FSDP
// does), so that the owned chunk is a view too: the optimizer state is the
// only per-chunk memory. Without sharding the bucket is all-reduced. Either way the global gradient norm is the sum, over
// ranks, of the squares of the chunks they own: each element counts once.
//
// Overlap: start(stage) may be called as soon as the stage's gradients are
// final on this rank (ExecutorOptions::on_grads_done), so its buckets reduce
// while the rest of the step runs; finish() starts what is left and waits.
//
// Thread-safety: one thread calls every method. Ownership: the reducer keeps
// the holder groups it made and refers to the stages' parameters.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/runtime/stage.h"

namespace dualpipe {

struct GradReduceOptions {
  int64_t bucket_bytes = 25 << 20;  // as PyTorch DDP's default
  bool shard = false;               // ZeRO-1: reduce-scatter, owned chunks, all-gather
};

// A bucket: parameters [first, last) of its group, elements [begin, end) of
// the group's flat layout.
struct GradBucket {
  std::size_t first = 0, last = 0;
  int64_t begin = 0, end = 0;
  int64_t chunk = 0;     // each holder's share: ceil((end - begin) / holders)
  torch::Tensor flat;    // gradients, chunk * holders elements (zero-padded): in flight, then reduced
  torch::Tensor values;  // sharded: the parameters' storage, laid out as `flat`
  compat::WorkPtr work;
};

// One group of ranks holding the same parameters. Plain data (shares its
// tensors and Comm); owned and used by one GradReducer.
struct HolderGroup {
  int stage = 0;
  bool expert = false;                // expert parameters (else dense)
  std::vector<int> members;           // job ranks, sorted
  int index = 0;                      // this rank among them
  std::vector<torch::Tensor> params;  // in registration order
  std::shared_ptr<Comm> comm;         // null: a group of one
  std::vector<GradBucket> buckets;
  bool started = false;
  int holders() const { return static_cast<int>(members.size()); }
};

// The job ranks that hold `stage`'s dense (expert = false) or expert
// parameters of this rank's expert index, sorted; `replicas`: the pipeline
// ranks that run the stage.
std::vector<int> stage_holders(const Mesh& mesh, const std::vector<int>& replicas, bool expert);

class GradReducer {
 public:
  // `replicas[s]`: the pipeline ranks running stage s (RankExecutor::replicas).
  // Every rank of the mesh must construct its reducer at the same point: the
  // holder groups are made here, in one order shared by all ranks. A mesh
  // without make_group (a caller's single pipeline group) supports only
  // replicas within the pipeline, summed by point-to-point exchange
  // (`replica_sum`), and no sharding.
  GradReducer(const Mesh& mesh, const std::map<int, Stage>& stages, const std::vector<std::vector<int>>& replicas,
              GradReduceOptions options, std::function<void()> replica_sum = {});

  // Starts reducing `stage`'s gradients (both of its groups); once per step.
  void start(int stage);
  // Starts the rest and waits for all. Unsharded: every holder's gradients
  // are the sums. Sharded: each bucket's owned chunk holds the sum.
  void finish();
  // Sum of squares of the reduced elements this rank owns (after finish()).
  double owned_sq_norm() const;
  // Multiplies the reduced gradients (owned chunks when sharded) by `factor`.
  void scale(double factor);

  // Sharded: this rank's chunk of every bucket's gradient and parameters, as
  // matching lists (for an optimizer over the owned chunks). The parameter
  // chunks are views of the parameters' storage: write_back_params()
  // all-gathers every holder's updated chunk into it.
  std::vector<torch::Tensor>& owned_params() { return owned_params_; }
  const std::vector<torch::Tensor>& owned_params() const { return owned_params_; }
  std::vector<torch::Tensor> owned_grads() const;
  void write_back_params();

  const std::vector<HolderGroup>& groups() const { return groups_; }
  bool sharded() const { return opt_.shard; }

 private:
  void launch(HolderGroup& g);
  void share_storage(HolderGroup& g);
  std::string what(const HolderGroup& g, std::size_t bucket) const;
  GradReduceOptions opt_;
  std::vector<HolderGroup> groups_;
  std::map<int, std::vector<std::size_t>> by_stage_;  // stage -> its groups
  std::vector<torch::Tensor> owned_params_;
  std::function<void()> replica_sum_;
};

}  // namespace dualpipe
