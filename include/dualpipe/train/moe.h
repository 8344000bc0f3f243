#pragma once
// A mixture-of-experts layer whose routed experts are sharded over the
// expert-parallel ranks of a stage, as in DeepSeek-V3:
//
//   router:   p = softmax(x Wr^T) over X experts; each token goes to its top K
//             experts with weights p_k (not renormalised)
//   dispatch: the (token, expert) pairs are sorted by expert and sent, with
//             an all-to-all of variable split sizes, to the rank that holds
//             the expert (experts [e X/E, (e+1) X/E) live on expert rank e);
//             no capacity limit, no token is dropped, so results are exact
//   experts:  each expert is an MLP d -> f -> d with GELU
//   combine:  the outputs go back by the reverse all-to-all; a token's output
//             is sum_k p_k expert_k(x) (+ the shared expert's MLP(x), if any)
//
// Load balance (DeepSeek-V3's complementary balance loss, taken over the
// tokens of one micro-batch instead of one sequence):
//
//   L_bal = alpha * sum_j f_j P_j,  f_j = X / (K n) * (tokens routed to j),
//                                   P_j = mean over the n tokens of p_j
//
// f_j carries no gradient. L_bal is added to the training objective of its
// micro-batch; it does not travel with the activations: its gradient is
// injected where it arises (AuxInject), scaled like the micro-batch's loss.
//
// DeepSeekMoE routing (MoeConfig::deepseek), as in DeepSeek-V3:
//
//   affinity: s_j = sigmoid(x . r_j) for each of the X experts
//   hosts:    the experts are grouped on H hosts (X/H each, contiguous); a
//             token picks the M hosts with the highest sums of its top
//             max(1, K/M) values of s_j + b_j per host
//   select:   the top K experts by s_j + b_j among those on its M hosts;
//             b_j, the expert's bias, steers selection only
//   gates:    g_j = s_j / sum of s over the selected (normalised), no b_j
//   experts:  SwiGLU MLPs d -> f -> d; N_s shared experts of the same width
//             (one MLP of width N_s f: the same sum of N_s separate ones)
//   balance:  the sequence-wise loss alpha * sum_j f_j P_j per sequence of
//             T tokens (f_j = X/(K T) * its tokens routed to j, P_j = mean
//             over them of s_j / sum_i s_i), averaged over the sequences;
//             and, after each step, b_j += gamma * sign(mean load - load_j)
//             from the step's token counts summed over every rank
//             (update_expert_biases), so every holder of a layer keeps the
//             same biases. The biases are a buffer ("bias"): checkpoints
//             carry them.
//
// Communication points: the four all-to-alls (dispatch and combine forward;
// combine-gradient and dispatch-gradient backward) are the hand-over points
// of the rank's overlap engine (overlap.h), so an overlapped F&B runs the
// other half while they are on the wire. The token-count exchange that
// sizes a dispatch is posted right after routing, at once on a group of its
// own (ExpertGroup::counts), and waited for only after the local work that
// does not need it (sorting the rows, the shared expert); it keeps the turn. Forward all-to-alls use ExpertGroup::fwd and
// the forward half's turn, backward ones ExpertGroup::bwd and the backward
// half's, whichever thread autograd runs them on.
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <torch/torch.h>

#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/mesh.h"
#include "dualpipe/runtime/overlap.h"
#include "dualpipe/runtime/split_linear.h"

namespace dualpipe {

struct ExpertGroup {
  std::shared_ptr<Comm> fwd, bwd;  // null: every expert is local, no communication
  // The forward's token-count exchanges, posted at once beside the lane
  // (OverlapEngine::post_aside); null: on the lane, with fwd.
  std::shared_ptr<Comm> counts;
  // The rank's overlap engine (shared with its executor); null: plain waits.
  std::shared_ptr<OverlapEngine> engine;
};
// The expert groups of a mesh rank (Mesh::expert, expert_bwd, expert_counts)
// with its overlap engine.
ExpertGroup expert_group(const Mesh& mesh, std::shared_ptr<OverlapEngine> engine);


// Tokens routed to each expert and the balance loss, summed since they were last read and reset.
// Ownership: shared (shared_ptr) by the MoE layers of one rank. Thread-safety:
// add() locks `mu`, and so must a reader; safe from the two tasks of a pair.
struct MoeStats {
  std::mutex mu;
  std::vector<double> tokens;  // [X]
  double aux_sum = 0;          // sum of L_bal over (layer, micro-batch)
  int aux_count = 0;
  std::map<int, std::vector<double>> layer_tokens;  // block index -> [X] tokens routed to each expert
  double cross_host = 0, pairs = 0;  // (token, expert) pairs whose expert is on another host; all pairs
  // deepseek: the selection biases of the blocks built here, by block index
  // (tensors share the layers' buffers).
  std::map<int, torch::Tensor> biases;
  void add(int layer, const torch::Tensor& counts, double aux, double cross_host_pairs);
};

// Moves each bias of `stats` toward balance: b_j += speed * sign(mean_j' c - c_j),
// with c = totals[layer * experts + j], the step's tokens summed over every
// rank; layers with no tokens stay. Call with the same totals on every rank.
void update_expert_biases(MoeStats& stats, const std::vector<double>& totals, int experts, double speed);

struct MoeConfig {
  int64_t hidden = 64;
  int64_t expert_ffn = 128;  // f
  int experts = 4;           // X
  int top_k = 2;             // K
  bool shared_expert = true;
  double aux_alpha = 0.01;
  // DeepSeekMoE routing, SwiGLU experts and N_s shared experts (see above).
  bool deepseek = false;
  int shared_experts = 1;
  int hosts = 1, node_limit = 1;  // H, M
  bool recompute_activation = false;  // the experts' SwiGLU products are recomputed (recompute.h)
  double aux_grad_scale = 1.0;  // the micro-batch loss scale: 1 / (micro-batches in the global batch)
  int ep = 1, ep_rank = 0;      // experts [ep_rank X/ep, (ep_rank+1) X/ep) are local
  torch::Dtype dtype = torch::kFloat64;
  uint64_t seed = 1234;
};

// Thread-safety: as any torch::nn::Module, one thread at a time.
// GELU MLP d -> f -> d, or SwiGLU: fc gives 2f, silu(first half) * second half.
// With recompute_activation (SwiGLU only), the product and proj are
// recomputed in the backward (recompute.h): only fc's output is kept.
struct ExpertMlpImpl : torch::nn::Module {
  ExpertMlpImpl(int64_t d, int64_t f, torch::Dtype dtype, bool swiglu = false);
  torch::Tensor forward(const torch::Tensor& x) { return activation_and_proj(fc(x)); }
  torch::Tensor activation_and_proj(const torch::Tensor& h);
  torch::Tensor swiglu_proj(const torch::Tensor& h);  // proj(silu(first half) * second half)
  bool swiglu;
  bool recompute_activation = false;
  SplitLinear fc, proj;
  std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)> act_body;  // swiglu_proj, recomputed
};
TORCH_MODULE(ExpertMlp);

// Ownership: shares `group`'s Comms and `stats`. Thread-safety: one forward
// or backward at a time per layer (each rank builds its own).
struct MoeLayerImpl : torch::nn::Module {
  // `layer`: the block's index in the whole model, for the experts' seeds.
  MoeLayerImpl(const MoeConfig& c, int layer, ExpertGroup group, std::shared_ptr<MoeStats> stats);
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, d] -> [B, T, d]
  std::vector<SplitLinear> split_linears() const;
  // Draws the experts' weights, each from a generator seeded by (seed, layer,
  // expert) alone, so a sharded expert starts equal to the unsharded one.
  void init_experts(int layers);

  MoeConfig cfg;
  int layer;
  int first_local, local_count;
  struct Routing {
    torch::Tensor weights, idx, counts, aux;  // [n, K], [n, K] int64, [X] int64, scalar
  };
  Routing route(const torch::Tensor& xs, int64_t sequences);
  // The parts of forward: the step's statistics of this block; the
  // token-count exchange (posted, then waited); the experts on this rank's
  // rows when all are here, or across the expert group (dispatch, experts,
  // combine): rows sorted by expert in, their outputs in the same order out.
  void record_stats(const torch::Tensor& flat, const Routing& routed);
  struct PendingCounts {
    torch::Tensor received;  // [E * L]: rows each rank sends to each local expert
    LaneTicketPtr ticket;
    compat::WorkPtr work;
  };
  PendingCounts post_counts(const torch::Tensor& counts);
  void wait_counts(PendingCounts& pending);
  torch::Tensor local_experts(const torch::Tensor& rows, const torch::Tensor& counts);
  torch::Tensor remote_experts(const torch::Tensor& rows, const torch::Tensor& counts, PendingCounts& pending);

  SplitLinear router;
  torch::Tensor bias;  // deepseek: [X] selection biases (a buffer)
  std::vector<ExpertMlp> experts;  // local ones, registered as "expert<global index>"
  ExpertMlp shared{nullptr};
  ExpertGroup group;
  std::shared_ptr<MoeStats> stats;
};
TORCH_MODULE(MoeLayer);

// True for the parameters of routed experts ("...moe.expert<j>....").
bool is_routed_expert_param(const std::string& name);

}  // namespace dualpipe
