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
// A parameter several stages share (PipelineModel::tied) is taken out of its
// stages' groups and reduced in a group of its own, over every holder of any
// of those stages, after the stages' groups (in finish()); a rank that holds
// two of the copies adds them first. Every copy then has the same gradient.
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
// Overlap, as PyTorch DDP's autograd hooks do it. arm(stage) is called just
// before the rank's last action that adds to the stage's gradients
// (ExecutorOptions::before_last_grads); during that action every parameter
// whose gradient is written is reported to grad_written() (hooks on
// autograd's gradient accumulators, registered here, and SplitLinear's
// WeightGradStore::on_written). A bucket whose parameters have all been
// written there is final and starts at once, inside the backward or W. The
// buckets of a group start in one fixed order, last bucket first (a backward
// writes the last layers first): a bucket that is final waits for the ones
// after it, so every holder posts the same sequence. start(stage), called
// right after that action (ExecutorOptions::on_grads_done), starts the rest
// of the stage's buckets (parameters the action did not touch: their
// gradients were final before it); finish() starts what is left and waits.
// With an engine, collectives are posted on its lane in their turn without
// holding it (OverlapEngine::post_background).
//
// Thread-safety: every method is internally locked; grad_written() may come
// from the thread that runs the backward half of an F&B pair. Ownership: the
// reducer keeps the holder groups it made and refers to the stages'
// parameters; the hooks it leaves on them do nothing once it is gone.
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/runtime/overlap.h"
#include "dualpipe/runtime/stage.h"

namespace dualpipe {

struct GradReduceOptions {
  int64_t bucket_bytes = 25 << 20;  // as PyTorch DDP's default
  bool shard = false;               // ZeRO-1: reduce-scatter, owned chunks, all-gather
  // The rank's overlap engine: collectives go on its lane (in the
  // background). Null: posted directly.
  std::shared_ptr<OverlapEngine> engine;
  // Sharded: write_back_params() returns with the all-gathers in flight.
  bool defer_gather = false;
};

// A bucket: parameters [first, last) of its group, elements [begin, end) of
// the group's flat layout.
struct GradBucket {
  std::size_t first = 0, last = 0;
  int64_t begin = 0, end = 0;
  int64_t chunk = 0;     // each holder's share: ceil((end - begin) / holders)
  torch::Tensor flat;    // gradients, chunk * holders elements (zero-padded): in flight, then reduced
  torch::Tensor values;  // sharded: the parameters' storage, laid out as `flat`
  compat::WorkPtr work;   // posted directly
  LaneTicketPtr ticket;   // posted on the engine's lane
  LaneTicketPtr gather;   // sharded: the parameters' all-gather in flight (on the lane)
  compat::WorkPtr gather_work;  // ... or posted directly
  int written = 0;        // of its parameters, written during the armed action
};

// One group of ranks holding the same parameters. Plain data (shares its
// tensors and Comm); owned and used by one GradReducer.
struct HolderGroup {
  int stage = 0;
  bool expert = false;                // expert parameters (else dense)
  std::vector<int> members;           // job ranks, sorted
  int index = 0;                      // this rank among them
  std::vector<torch::Tensor> params;  // in registration order
  std::vector<std::pair<int, std::string>> names;  // (stage, name) of each parameter
  // Empty for a stage's own group; for a tied parameter's (PipelineModel::
  // tied), per parameter, this rank's other copies of it (none where it
  // holds one). Their gradients are added to the first's before the
  // reduction, and they receive the sum too.
  std::vector<std::vector<torch::Tensor>> copies;
  bool tied() const { return !copies.empty(); }
  std::shared_ptr<Comm> comm;         // null: a group of one
  std::vector<GradBucket> buckets;
  std::vector<std::size_t> bucket_of;  // per parameter
  std::vector<char> seen;              // per parameter: written during the armed action
  bool armed = false;
  std::size_t posted = 0;              // buckets posted, from the last one down
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
  // `tied`: the model's parameters shared between stages (groups need a
  // mesh with make_group).
  GradReducer(const Mesh& mesh, const std::map<int, Stage>& stages, const std::vector<std::vector<int>>& replicas,
              const std::vector<TiedParameter>& tied, GradReduceOptions options,
              std::function<void()> replica_sum = {});

  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;
  ~GradReducer();

  // The last action adding to `stage`'s gradients on this rank begins.
  void arm(int stage);
  // `param`'s gradient was written (any parameter; others are ignored).
  void grad_written(const torch::Tensor& param);
  // Starts reducing `stage`'s gradients (both of its groups): what the
  // armed action has not started yet. Once per step.
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
  // Posts the all-gathers; waits for them unless options' defer_gather
  // (then wait_params waits, stage by stage as the next step first uses a
  // stage, so that the gathers overlap what runs before).
  void write_back_params();
  // Waits for `stage`'s pending all-gathers (none: returns at once).
  void wait_params(int stage);
  // Waits for every pending all-gather (before anything reads all parameters).
  void wait_params();

  // Buckets of `stage` posted so far in this step (they start in
  // bucket order from the last; finish() resets).
  int buckets_started(int stage);

  const std::vector<HolderGroup>& groups() const { return groups_; }
  bool sharded() const { return opt_.shard; }

 private:
  void add_group(const Mesh& mesh, HolderGroup g, const std::string& key);
  void add_tied_group(const Mesh& mesh, const std::map<int, Stage>& stages,
                      const std::vector<std::vector<int>>& replicas, const TiedParameter& t, int index);
  void write_sums(HolderGroup& g);
  void launch(HolderGroup& g);
  void post_ready(HolderGroup& g);
  void post_bucket(HolderGroup& g, std::size_t i);
  void written(const c10::TensorImpl* param);
  void wait_gathers(HolderGroup& g);
  void add_hooks();
  void share_storage(HolderGroup& g);
  std::string what(const HolderGroup& g, std::size_t bucket) const;
  GradReduceOptions opt_;
  std::vector<HolderGroup> groups_;
  std::map<int, std::vector<std::size_t>> by_stage_;  // stage -> its groups
  std::vector<torch::Tensor> owned_params_;
  std::function<void()> replica_sum_;
  std::mutex mu_;
  // parameter -> (group, index in it), for grad_written
  std::unordered_map<const c10::TensorImpl*, std::pair<std::size_t, std::size_t>> param_at_;
  // The hooks hold a weak reference: they find the reducer through it while it lives.
  std::shared_ptr<GradReducer*> self_;
  std::vector<compat::NodePtr> accumulators_;  // kept alive, as DDP does
};

}  // namespace dualpipe
