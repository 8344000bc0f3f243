#pragma once
// Schedule generators: each one is a small pure function of the shape.
// They throw dualpipe::Error with the valid range when a shape is not supported.
#include <string>
#include <vector>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe {

struct Shape {
  int ranks = 0;          // P
  int micro_batches = 0;  // N
  int chunks = 2;         // stages per rank, for interleaved-1f1b only
};

Schedule gpipe(const Shape& shape);
Schedule one_f_one_b(const Shape& shape);
Schedule interleaved_1f1b(const Shape& shape);
// Interleaved 1F1B with its steady-state forwards and backwards merged into F&B pairs.
Schedule combined_1f1b(const Shape& shape);
Schedule zb1p(const Shape& shape);
Schedule zbv(const Shape& shape);
Schedule dualpipe(const Shape& shape);
Schedule dualpipev(const Shape& shape);
Schedule chimera(const Shape& shape);

// How a method lays its stages on the ranks: what the planner, the
// comparison table and the pictures need to know before (or without) a
// schedule. The placement of a built schedule is schedule/placement.h.
enum class PlacementStyle {
  OnePerRank,   // P stages, stage r on rank r
  TwoWay,       // P stages, stages r and P-1-r on rank r, each for half of the
                // micro-batches (two pipelines in opposite directions)
  V,            // 2P stages, stages r and 2P-1-r on rank r
  Interleaved,  // V*P stages (--chunks V), stages r, r+P, ..., r+(V-1)P on rank r
};
// Stages a method of `style` cuts the model into on `ranks` ranks.
int stage_count(PlacementStyle style, int ranks, int chunks);
// The rank that runs micro-batch `mb` of `stage` under `style` (P ranks, N
// micro-batches): the rule each generator of that style follows, for those
// that place work before a schedule exists (the schedule search). A built
// schedule's own placement is placement_of (schedule/placement.h); the tests
// hold the two equal for every method.
int style_rank(PlacementStyle style, int ranks, int micro_batches, int stage, int mb);

// The inputs of the published formulas (docs/design.md): PP pipeline stages,
// S the stages of the method's own cut (a finer cut's stage is PP/S of a
// PP-stage), N micro-batches, interleaved's V chunks, and the costs of one
// uniform stage.
struct PublishedTerms {
  int PP = 0, S = 0, N = 0, chunks = 1;
  double F = 0, B = 0, W = 0, FB = 0;
};
// The literature's peak activations in units of one PP-stage: a value (the
// low end of a range), the high end of a range, and whether it is approximate.
struct PublishedActivations {
  double value = 0;
  double max = -1;  // < 0: not a range
  bool approx = false;
};

// Registry: name -> generator and the method's facts, so the command line,
// the tests, the benchmarks, the comparison table, the planner and the
// pictures enumerate one list. Adding a schedule is one generator function
// plus one entry here.
// Plain data; the registry (methods()) is immutable, safe to read from any
// thread.
struct Method {
  const char* name;
  Schedule (*generate)(const Shape&);
  const char* summary;
  PlacementStyle placement;
  // Published bubble and activations; nullptr where the literature gives none.
  double (*published_bubble)(const PublishedTerms&);
  PublishedActivations (*published_activations)(const PublishedTerms&);
  // Words for a rank's first and second stage in pictures ("direction 0");
  // nullptr: none beyond "stage = rank" and "the rank's other stage".
  const char* directions[2];

  int stage_count(int ranks, int chunks) const { return dualpipe::stage_count(placement, ranks, chunks); }
  bool takes_chunks() const { return placement == PlacementStyle::Interleaved; }
  bool v_shaped() const { return placement == PlacementStyle::V; }
};
const std::vector<Method>& methods();
// Throws dualpipe::Error listing the known names.
const Method& find_method(const std::string& name);
// nullptr for a name that is not a method ("file", "search", ...). Names
// match in any case ("DualPipe" is dualpipe).
const Method* method_named(const std::string& name);
Schedule generate(const std::string& method, const Shape& shape);

// The largest schedule generate() builds: stages x micro-batches (stage,
// micro-batch) pairs, each of which costs about 120 bytes through generation,
// checking and simulation (three actions and the checker's tables), so the
// limit is about 2 GB. Without it, "-p 99999999" runs for hours or exhausts
// memory instead of saying no. DualPipe at P=512, N=8192 (the benchmark's
// largest case) needs 4.2 M.
inline constexpr long long kMaxGeneratedCells = 1LL << 24;
// Throws dualpipe::Error, stating the limit, when `method` at `shape` would exceed
// it. Counts the stages the method uses (V*P, 2P or P) and at least 2P
// micro-batches, because DualPipe and ZB-V build that many for small N.
void require_feasible_size(const std::string& method, const Shape& shape);

// For generator implementations: throws unless ranks >= 1 and N >= 1.
void require_basic_shape(const char* method, const Shape& shape);

}  // namespace dualpipe
