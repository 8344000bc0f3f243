// Schedule search: on uneven costs it must find a checked schedule strictly
// faster than every built-in generator that fits the same activation limit,
// never a slower one, and the same one for the same seed.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "dualpipe/plan/search.h"
#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe::plan {
namespace {

struct Case {
  const char* name;
  int P, N, S;
  const char* costs;
  int max_activations;
  const char* from_method;
  double latency;
};

// Uneven costs: a slow last or first stage, costs growing along the
// pipeline, a cheap weight gradient, transfers that take time, an activation
// limit. Each is one the generators' fixed orders do not fit.
const Case kUneven[] = {
    {"costs grow along the pipeline", 4, 16, 0, "F=1:1.2:1.4:1.6,B=2:2.4:2.8:3.2,W=1:1.2:1.4:1.6", 0, "", 0},
    {"slow last stage, 8 activations", 8, 16, 0, "F=1:1:1:1:1:1:1:1.5,B=2,W=1", 8, "", 0},
    {"slow first stage against zb1p", 4, 12, 0, "F=1.5:1:1:1,B=3:2:2:2,W=1.5:1:1:1", 0, "zb1p", 0},
    {"slow last stage against 1f1b", 6, 12, 0, "F=1:1:1:1:1:1.5,B=2:2:2:2:2:3,W=1:1:1:1:1:1.5", 0, "1f1b", 0},
    {"backward far above 2F, small W", 4, 8, 0, "F=1,B=3,W=0.5", 0, "", 0},
    {"transfers of half a forward", 4, 8, 0, "F=1,B=2,W=1", 0, "", 0.5},
    {"F&B below F+B, V placement, W half a forward", 4, 8, 8, "F=1,B=2,W=0.5,FB=2.4", 0, "", 0},
    {"F&B above F+B (the overlap slower than one after the other)", 4, 8, 0, "F=1,B=2,W=1,FB=3.5", 0, "", 0},
};

SearchRequest request(const Case& c) {
  SearchRequest r;
  r.ranks = c.P;
  r.micro_batches = c.N;
  r.stages = c.S;
  r.costs = parse_costs(c.costs);
  r.costs.latency = c.latency;
  r.max_activations = c.max_activations;
  r.from_method = c.from_method;
  r.iterations = 500;
  return r;
}

// The best generator, computed here independently of search().
double best_generator(const SearchRequest& r, std::string& name) {
  double best = -1;
  for (const Method& m : methods()) {
    if (!r.from_method.empty() && r.from_method != m.name) continue;
    Schedule s;
    try {
      s = generate(m.name, Shape{r.ranks, r.micro_batches, r.chunks});
    } catch (const Error&) {
      continue;
    }
    if (s.stages != search_stages(r)) continue;
    const SimResult sim = simulate(s, r.costs);
    int peak = 0;
    for (const RankStats& st : sim.per_rank) peak = std::max(peak, st.peak_activations);
    if (r.max_activations > 0 && peak > r.max_activations) continue;
    if (best < 0 || sim.makespan < best) {
      best = sim.makespan;
      name = m.name;
    }
  }
  return best;
}

TEST(Search, StrictlyBeatsTheBestGeneratorOnUnevenCosts) {
  for (const Case& c : kUneven) {
    SCOPED_TRACE(c.name);
    const SearchRequest req = request(c);
    std::string name;
    const double baseline = best_generator(req, name);
    ASSERT_GT(baseline, 0);
    const SearchResult res = search(req);
    EXPECT_TRUE(check(res.schedule).ok());
    EXPECT_EQ(res.baseline_method, name);
    EXPECT_DOUBLE_EQ(res.baseline_makespan, baseline);
    // The makespan reported is the simulator's on the returned schedule.
    EXPECT_DOUBLE_EQ(simulate(res.schedule, req.costs).makespan, res.sim.makespan);
    EXPECT_LT(res.sim.makespan, baseline * (1 - 1e-9)) << "found " << res.sim.makespan << " by " << res.found_by;
    if (c.max_activations) {
      for (int p : res.peak_activations) EXPECT_LE(p, c.max_activations);
    }
  }
}

TEST(Search, NeverWorseThanTheBestGeneratorOnEvenCosts) {
  for (const char* costs : {"F=1,B=2,W=1", "F=1,B=2,W=1,FB=2.5", "F=1,B=1,W=0"}) {
    for (int P : {2, 4}) {
      SCOPED_TRACE(std::string(costs) + " P=" + std::to_string(P));
      SearchRequest req;
      req.ranks = P;
      req.micro_batches = 2 * P;
      req.costs = parse_costs(costs);
      req.iterations = 200;
      std::string name;
      const double baseline = best_generator(req, name);
      const SearchResult res = search(req);
      EXPECT_LE(res.sim.makespan, baseline * (1 + 1e-12));
      EXPECT_TRUE(check(res.schedule).ok());
    }
  }
}

TEST(Search, SameSeedSameScheduleAndVPlacementKeepsStages) {
  SearchRequest req;
  req.ranks = 4;
  req.micro_batches = 8;
  req.stages = 8;
  req.costs = parse_costs("F=1:1:1:1:1:1:1:2,B=2:2:2:2:2:2:2:4,W=1:1:1:1:1:1:1:2");
  req.iterations = 300;
  const SearchResult a = search(req), b = search(req);
  EXPECT_EQ(to_csv(a.schedule), to_csv(b.schedule));
  EXPECT_EQ(a.schedule.stages, 8);
  // Every stage stays on the rank the V placement gives it.
  for (int r = 0; r < 4; ++r)
    for (const Action& act : a.schedule.actions[r])
      if (act.op == Op::F) {
        EXPECT_TRUE(act.stage == r || act.stage == 7 - r) << to_string(act) << " on rank " << r;
      }
}

TEST(Search, BadRequestsAreErrors) {
  SearchRequest req;
  req.ranks = 4;
  req.micro_batches = 8;
  EXPECT_THROW(
      {
        req.ranks = 0;
        search(req);
      },
      Error);
  req.ranks = 4;
  req.from_method = "nosuch";
  EXPECT_THROW(search(req), Error);
  req.from_method = "";
  req.stages = 5;
  EXPECT_THROW(search(req), Error);
  req.stages = 0;
  req.costs = parse_costs("F=1:1:1");
  EXPECT_THROW(search(req), Error);  // 3 stages on 4 ranks
}

}  // namespace
}  // namespace dualpipe::plan

namespace dualpipe::plan {
namespace {

// The search tells its caller how far it is: every list-scheduling pass,
// then every local-search move, counting up to their totals.
TEST(Search, ProgressCountsPassesThenMoves) {
  SearchRequest r;
  r.ranks = 4;
  r.micro_batches = 8;
  r.iterations = 50;
  std::vector<std::tuple<std::string, long long, long long>> seen;
  r.progress = [&](const Progress& p) { seen.emplace_back(p.phase, p.done, p.total); };
  search(r);
  ASSERT_FALSE(seen.empty());
  long long passes = 0, moves = 0;
  for (const auto& [phase, done, total] : seen) {
    if (phase == "list scheduling") {
      EXPECT_EQ(moves, 0) << "passes come first";
      EXPECT_EQ(done, passes++);
      EXPECT_LT(done, total);
    } else {
      ASSERT_EQ(phase, "local search");
      EXPECT_EQ(done, moves++);
      EXPECT_EQ(total, 50);
    }
  }
  EXPECT_GT(passes, 0);
  EXPECT_EQ(moves, 50);
}

}  // namespace
}  // namespace dualpipe::plan
