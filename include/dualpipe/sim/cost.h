#pragma once
// What one action costs, for the simulator. Times are in any unit the user
// likes (the default F=1, B=2, W=1 reads as "units of one forward").
#include <optional>
#include <string>
#include <vector>

namespace dualpipe {

struct Costs {
  // One value for every stage, or one per stage.
  std::vector<double> F{1.0}, B{2.0}, W{1.0};
  // Time of one overlapped F&B pair; unset means no overlap: F + B.
  std::optional<double> FB;
  // Or one time per pair of stages, [forward stage * FB_pair_stages +
  // backward stage], where stages differ (the planner's); empty: FB above.
  std::vector<double> FB_pair;
  int FB_pair_stages = 0;
  // Point-to-point transfer between different ranks: latency + bytes / bandwidth.
  double latency = 0.0;
  double bandwidth = 0.0;  // bytes per time unit; 0 means unlimited
  double act_bytes = 0.0;  // bytes of one activation (or its gradient) crossing a stage boundary

  // Expert-parallel all-to-all (MoE), docs/simulation.md "Communication
  // phases". A chunk (F, B or I of one stage on one micro-batch) is its
  // compute cut into phases+1 equal pieces with one all-to-all between each
  // two: F is attention, dispatch, experts, combine, ...; B and I run the two
  // gradient all-to-alls of each MoE layer; W has none. One phase takes
  // a2a_latency + bytes / a2a_phases / a2a_rate. The peers of an all-to-all
  // are the rank's expert-parallel group (same stage, other nodes) running
  // the same schedule, so it depends on nothing else in the pipeline; a rank
  // has one all-to-all link, which carries one all-to-all at a time.
  // Defaults (no bytes, no latency) simulate exactly as without this model.
  std::vector<double> a2a_bytes{0.0};  // bytes of all all-to-alls of one forward chunk together; per stage
  std::vector<double> a2a_bwd_bytes;   // the same for a backward chunk (B or I); empty: same as forward
  std::vector<int> a2a_phases{2};      // all-to-alls per chunk: 2 (dispatch, combine) x MoE layers; per stage
  double a2a_rate = 0.0;               // bytes per time unit of a rank's all-to-all link
  double a2a_latency = 0.0;            // fixed time of every all-to-all phase
  // F&B pairs overlap the all-to-alls of one half with the compute of the
  // other (DualPipe's runtime); off: the halves run one after the other,
  // every all-to-all exposed. Without all-to-all costs it changes nothing.
  bool fb_overlap = true;
  // How the halves of an overlapped pair take turns: alternate (the
  // runtime's overlap engine: they swap at every all-to-all post, in a fixed
  // order) or first_ready (whichever half can compute first; the runtime
  // before the engine).
  enum class PairTurns { Alternate, FirstReady };
  PairTurns pair_turns = PairTurns::Alternate;
  // A full B's weight-gradient work (W of its stage) runs while its
  // all-to-alls are on the wire: it is queued as the B's input-gradient
  // pieces run (in proportion to them), a wait of the turn holder first runs
  // what is queued, and what is left runs after the B's output is sent (the
  // runtime's --fill-waits). b_pieces are then the input-gradient pieces.
  // Off: the weight gradients run inline, every wait exposed.
  bool fill_waits = false;
  // Relative sizes of a chunk's compute pieces (phases + 1 of them) per
  // stage, for the F and B halves of pairs, e.g. measured (the runtime's calibration);
  // empty: equal pieces.
  std::vector<std::vector<double>> f_pieces, b_pieces;
  // Where pipeline transfers go. apart: each takes transfer() on its own
  // edge, off the rank's all-to-all link (transfers never contend). fifo:
  // a rank's sends (act_bytes / bandwidth each, then latency) go on its link
  // with its all-to-alls, one transfer at a time in posting order (the
  // runtime's lane); a send is posted when the chunk or pair half that
  // produced it ends. shared: the same transfers, but all those in flight on
  // a link share its rate equally (processor sharing; a transfer's finish is
  // computed when it is posted, from the transfers posted before it).
  // duplex: as fifo, but a link has two directions of the rate: a pipeline
  // transfer takes the sender's upload and the receiver's download at once,
  // an all-to-all phase the rank's upload and download (what its peer sends
  // comes down while its own block goes up); each direction carries one
  // transfer at a time, and a transfer waits until both it needs are free.
  enum class Link { Apart, Fifo, Shared, Duplex };
  Link link = Link::Apart;

  double f(int stage) const { return pick(F, stage); }
  double b(int stage) const { return pick(B, stage); }
  double w(int stage) const { return pick(W, stage); }
  double i(int stage) const { return b(stage) - w(stage); }  // input-gradient half of B
  double fb(int f_stage, int b_stage) const {
    if (!FB_pair.empty()) return FB_pair[static_cast<std::size_t>(f_stage * FB_pair_stages + b_stage)];
    return FB ? *FB : f(f_stage) + b(b_stage);
  }
  double transfer() const { return latency + (bandwidth > 0 ? act_bytes / bandwidth : 0.0); }

  // All-to-all phases of one chunk of `stage`, and the time of one of them,
  // for a forward (F) and for a backward (B or I).
  int phases(int stage) const { return a2a_phases.size() == 1 ? a2a_phases[0] : a2a_phases[stage]; }
  double a2a_fwd(int stage) const { return phase_time(pick(a2a_bytes, stage), stage); }
  double a2a_bwd(int stage) const {
    return phase_time(a2a_bwd_bytes.empty() ? pick(a2a_bytes, stage) : pick(a2a_bwd_bytes, stage), stage);
  }
  // A chunk's compute pieces from relative sizes `rel` (one list for all
  // stages, or one per stage) scaled to `compute`; empty where none are given
  // or they do not fit the chunk's phases.
  template <class Work>
  std::vector<double> pieces_of(const std::vector<std::vector<double>>& rel, int stage, const Work& w) const {
    if (rel.empty()) return {};
    const std::vector<double>& r = rel.size() == 1 ? rel[0] : rel[static_cast<std::size_t>(stage)];
    if (static_cast<int>(r.size()) != w.phases + 1) return {};
    double sum = 0;
    for (double x : r) sum += x;
    if (!(sum > 0)) return {};
    std::vector<double> out;
    for (double x : r) out.push_back(w.compute * x / sum);
    return out;
  }
  // True when some stage's chunks spend time in all-to-alls.
  bool has_a2a() const;

  // Throws dualpipe::Error unless every list has 1 or `stages` entries and all
  // values make sense (non-negative, W <= B).
  void validate(int stages) const;

 private:
  static double pick(const std::vector<double>& v, int stage) { return v.size() == 1 ? v[0] : v[stage]; }
  double phase_time(double bytes, int stage) const {
    const int k = phases(stage);
    if (k <= 0) return 0.0;
    return a2a_latency + (bytes > 0 ? bytes / k / a2a_rate : 0.0);
  }
};

// Parses "F=1,B=2,W=1,FB=3"; a per-stage list is written with colons:
// "F=1:1:1.5:1". Keys not given keep their defaults. Throws dualpipe::Error.
Costs parse_costs(const std::string& spec);

// "1e6" or "1e6:2e6:..." (one value for all stages, or one per stage) for
// the all-to-all options; `what` names the option in errors. Throws dualpipe::Error.
std::vector<double> parse_stage_values(const std::string& text, const std::string& what);
std::vector<int> parse_stage_counts(const std::string& text, const std::string& what);

// A link model's name ("apart", "fifo", "shared", "duplex"), and the model
// of a name (throws dualpipe::Error for any other).
const char* link_name(Costs::Link link);
Costs::Link link_of(const std::string& name);
inline const std::vector<std::string>& link_names() {
  static const std::vector<std::string> names{"apart", "fifo", "shared", "duplex"};
  return names;
}

// "F=1 B=2 W=1 FB=3" for headings.
std::string describe(const Costs& c);

// Measured chunk times of one stage, per kind of compute action (any unit);
// negative where the stage ran none of that kind.
struct StageTimes {
  double F = -1, B = -1, I = -1, W = -1;
};
// The simulator's per-stage F, B and W from measured chunk times: B is the
// whole backward where the stage ran one, else I + W (the split backward's
// halves); W never exceeds B; a kind not measured costs 0. The one place
// where the runtime's measurements become Costs (train's report, bench's
// device calibration).
Costs costs_from_stage_times(const std::vector<StageTimes>& stages);

}  // namespace dualpipe
