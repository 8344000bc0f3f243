// dualpipe_emulate: runs a torchrun-style program (one that reads RANK,
// WORLD_SIZE, MASTER_ADDR, MASTER_PORT) as ranks spread over an emulated
// cluster network, e.g.
//   dualpipe_emulate --emulate-hosts 2 --link-rate 100mbit --ranks 2 -- dualpipe train -p 2 -n 4
// Builds the cluster, places the ranks (placement.h), starts them in their
// hosts, waits, removes everything. Exit code: 0, or the first failing rank's
// (128 + signal if killed); 2 with one line for a usage or setup error.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdlib>

#include "dualpipe/cluster/emulated_cluster.h"
#include "dualpipe/cluster/supervise.h"

namespace {

struct Args {
  int hosts = 2;
  std::string rate = "1gbit";
  int pipeline = 0, experts = 1;
  int port = 29500;
  std::vector<std::string> command;
};

int run(const Args& a) {
  const int pipeline = a.pipeline;
  const dualpipe::LinkRate rate = dualpipe::parse_link_rate(a.rate);
  const std::vector<int> host_of = dualpipe::place_ranks(pipeline, a.experts, a.hosts);  // checks P x E
  const int world = pipeline * a.experts;
  if (a.command.empty()) throw dualpipe::Error("no program to run (put it after --)");
  dualpipe::require_root_and_netns();
  dualpipe::EmulatedCluster cluster(a.hosts, rate);
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    auto env = dualpipe::emulated_rank_env(cluster, host_of, r, a.port);
    if (!std::getenv("OMP_NUM_THREADS")) env.emplace_back("OMP_NUM_THREADS", "1");
    pids.push_back(cluster.spawn(host_of[static_cast<std::size_t>(r)], a.command, env));
  }
  return dualpipe::supervise_ranks(pids, "dualpipe_emulate");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"run a torchrun-style program as ranks over an emulated cluster network (needs root)"};
  Args a;
  int ranks = 0;
  app.add_option("--emulate-hosts,--hosts", a.hosts, "emulated hosts (network namespaces)")->capture_default_str();
  app.add_option("--link-rate", a.rate, "bandwidth of every host's link, each way (tc units: 100mbit, 1gbit, 10mbps)")
      ->capture_default_str();
  // -p/--ranks and --ep as dualpipe train names them; --pipeline-ranks and
  // --expert-ranks, their first spellings here, still work.
  app.add_option("-p,--ranks", ranks, "pipeline ranks P (with --ep E: a P x E mesh, rank = expert * P + stage)");
  CLI::Option* ep =
      app.add_option("--ep", a.experts, "expert-parallel degree E: the run has P x E ranks")->capture_default_str();
  app.add_option("--pipeline-ranks", a.pipeline, "the same as --ranks")->group("");
  CLI::Option* expert_ranks = app.add_option("--expert-ranks", a.experts, "the same as --ep")->group("");
  app.add_option("--master-port", a.port, "rendezvous port (any: every host's namespace is fresh)")->capture_default_str();
  app.add_option("command", a.command, "the program and its arguments, after --");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // One line, as every other error here (CLI11 adds "Run with --help ...").
    if (e.get_exit_code() == 0) return app.exit(e);
    fmt::print(stderr, "dualpipe_emulate: error: {} (see dualpipe_emulate --help)\n", e.what());
    return 2;
  }
  try {
    if (ep->count() > 0 && expert_ranks->count() > 0)
      throw dualpipe::Error("--expert-ranks is --ep by its first name: give one");
    if (ranks > 0 && a.pipeline > 0) throw dualpipe::Error("--ranks and --pipeline-ranks both give the pipeline ranks: use one");
    if (a.pipeline == 0) a.pipeline = ranks;
    if (a.pipeline < 1) throw dualpipe::Error("give the ranks: --ranks P (and --ep E for a P x E mesh)");
    if (a.port < 1 || a.port > 65535)
      throw dualpipe::Error(fmt::format("--master-port must be in 1..65535 (got {})", a.port));
    return run(a);
  } catch (const dualpipe::Error& e) {
    fmt::print(stderr, "dualpipe_emulate: error: {}\n", e.what());
    return 2;
  }
}
