// PyTorch's stage-only actions (UNSHARD, RESHARD, REDUCE_GRAD): "0UNSHARD",
// "0RESHARD", "0REDUCE_GRAD", with no micro-batch. Files that hold them load,
// keep them, show them, and simulate as if they were not there.
#include <gtest/gtest.h>

#include <sstream>

#include "dualpipe/pictures/grid.h"
#include "dualpipe/pictures/svg.h"
#include "dualpipe/pictures/trace.h"
#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "dualpipe/sim/simulate.h"

namespace dualpipe {
namespace {

Schedule parse(const std::string& text) {
  std::istringstream in(text);
  return read_csv(in, "x.csv");
}

// 1F1B on two ranks as torch.distributed.pipelining dumps it with FSDP:
// UNSHARD before a stage's first action, RESHARD after its last, and
// REDUCE_GRAD after its last backward.
const char* const kTorchDump =
    "0UNSHARD,0F0,0F1,0B0,0B1,0REDUCE_GRAD,0RESHARD\n"
    "1UNSHARD,1F0,1B0,1F1,1B1,1REDUCE_GRAD,1RESHARD\n";

TEST(StageOnly, ParseAndPrintWithoutMicroBatch) {
  for (const char* text : {"0UNSHARD", "3RESHARD", "12REDUCE_GRAD"}) {
    Action a = parse_action(text);
    EXPECT_TRUE(is_stage_only(a.op)) << text;
    EXPECT_FALSE(is_comm(a.op)) << text;
    EXPECT_EQ(to_string(a), text);
  }
  EXPECT_EQ(parse_action("0UNSHARD").op, Op::UNSHARD);
  EXPECT_EQ(parse_action("0RESHARD").op, Op::RESHARD);
  Action r = parse_action("7REDUCE_GRAD");
  EXPECT_EQ(r.op, Op::REDUCE_GRAD);
  EXPECT_EQ(r.stage, 7);
  // The existing kinds are unchanged.
  for (Op op : {Op::F, Op::B, Op::I, Op::W, Op::FB, Op::SEND_F, Op::RECV_F, Op::SEND_B, Op::RECV_B})
    EXPECT_FALSE(is_stage_only(op));
  EXPECT_THROW(parse_action("UNSHARD"), Error);
  EXPECT_THROW(parse_action("0UNSHARDX"), Error);
}

TEST(StageOnly, TorchDumpLoadsChecksAndKeepsThem) {
  Schedule s = parse(kTorchDump);
  EXPECT_EQ(s.ranks, 2);
  EXPECT_EQ(s.stages, 2);
  EXPECT_EQ(s.micro_batches, 2);
  ASSERT_EQ(s.actions[0].size(), 7u);
  EXPECT_EQ(to_string(s.actions[0][0]), "0UNSHARD");
  CheckReport rep = check(s);
  EXPECT_TRUE(rep.ok()) << (rep.errors.empty() ? "" : rep.errors.front());
  // Written back as read.
  EXPECT_EQ(to_csv(s), kTorchDump);
  // Lowering keeps them where they were and still checks.
  Schedule low = lower(s);
  EXPECT_TRUE(check(low).ok());
  EXPECT_EQ(to_string(low.actions[1].front()), "1UNSHARD");
  EXPECT_EQ(to_string(low.actions[1].back()), "1RESHARD");
  EXPECT_EQ(compute_only(low).actions[0].size(), 7u);
}

TEST(StageOnly, SimulatorIgnoresThem) {
  Schedule with = parse(kTorchDump);
  Schedule without = one_f_one_b(Shape{2, 2});
  Costs c;
  c.latency = 0.25;
  SimResult a = simulate(with, c), b = simulate(without, c);
  EXPECT_DOUBLE_EQ(a.makespan, b.makespan);
  EXPECT_DOUBLE_EQ(a.bubble, b.bubble);
  for (int r = 0; r < 2; ++r) {
    EXPECT_DOUBLE_EQ(a.per_rank[r].busy, b.per_rank[r].busy);
    EXPECT_EQ(a.per_rank[r].peak_activations, b.per_rank[r].peak_activations);
    EXPECT_EQ(a.per_rank[r].stages_held, b.per_rank[r].stages_held);
    // They take no time: the span is empty.
    EXPECT_DOUBLE_EQ(a.timeline[r][0].end - a.timeline[r][0].start, 0);
  }
}

TEST(StageOnly, ErrorsNameRankAndPosition) {
  // A stage the rank does not run.
  CheckReport rep = check(parse("0F0,0B0,1RESHARD\n1F0,1B0\n"));
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.errors.front().find("rank 0, position 2 (1RESHARD)"), std::string::npos) << rep.errors.front();
  // A second REDUCE_GRAD of one stage on one rank.
  rep = check(parse("0F0,0B0,0REDUCE_GRAD,0REDUCE_GRAD\n1F0,1B0\n"));
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.errors.front().find("rank 0, position 3 (0REDUCE_GRAD)"), std::string::npos) << rep.errors.front();
  EXPECT_NE(rep.errors.front().find("position 2"), std::string::npos) << rep.errors.front();
  // REDUCE_GRAD before the stage's last backward on that rank.
  rep = check(parse("0F0,0F1,0B0,0REDUCE_GRAD,0B1\n1F0,1B0,1F1,1B1\n"));
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.errors.front().find("rank 0, position 3 (0REDUCE_GRAD)"), std::string::npos) << rep.errors.front();
  // Positions of other errors count the stage-only actions too.
  rep = check(parse("0UNSHARD,0F0,0F0,0B0\n1F0,1B0\n"));
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.errors.front().find("rank 0, position 2 (0F0)"), std::string::npos) << rep.errors.front();
  // A stage out of range.
  rep = check(parse("0F0,0B0,5UNSHARD\n"));
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.errors.front().find("rank 0, position 2 (5UNSHARD)"), std::string::npos) << rep.errors.front();
}

TEST(StageOnly, PicturesShowThemOrLeaveThemOut) {
  Schedule s = parse(kTorchDump);
  SimResult sim = simulate(s, Costs{});
  // The grid has no cell for them (they take no time) and no legend entry
  // for a kind the schedule lacks: 1F1B has no W.
  const std::string grid = terminal_grid(s, sim, GridOptions{});
  EXPECT_EQ(grid.find("weight"), std::string::npos) << grid;
  EXPECT_NE(grid.find("UNSHARD"), std::string::npos) << grid;  // named in the legend line
  const std::string svg = timeline_svg(s, sim);
  EXPECT_EQ(svg.find("class=\"W"), std::string::npos);
  EXPECT_EQ(svg.find("weights"), std::string::npos);
  // The trace marks them as instants.
  const std::string trace = chrome_trace(s, sim);
  EXPECT_NE(trace.find("\"name\":\"0UNSHARD\""), std::string::npos);
  EXPECT_NE(trace.find("\"ph\":\"i\""), std::string::npos);
}

}  // namespace
}  // namespace dualpipe
