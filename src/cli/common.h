#pragma once
// Pieces every subcommand shares: where the schedule comes from, the cost
// options, and writing results to a file or stdout.
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "dualpipe/plan/progress.h"
#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost.h"

namespace dualpipe::cli {

struct SourceOptions {
  std::string method;
  int ranks = 0;
  int micro_batches = 0;
  int chunks = 2;
  std::string from;  // CSV file instead of a generator
  std::string pair_forwards = "off";  // on: dualpipe::pair_forwards on what was generated or read
  // `schedule --from` is the tool for finding what is wrong with a file: it
  // lists every error (one line each). Other commands stop at one line.
  bool list_errors = false;
  // Set by add_source_options: the subcommand (for "see dualpipe X --help")
  // and its options, to tell an option left out from one given as 0.
  std::string command;
  CLI::Option *method_opt = nullptr, *ranks_opt = nullptr, *micro_batches_opt = nullptr, *chunks_opt = nullptr;
};

// --chunks in every command that takes it.
inline constexpr const char* kChunksHelp = "stages per rank V, for interleaved-1f1b";

// --method/--ranks/--micro-batches/--chunks, or --from FILE; --pair-forwards.
void add_source_options(CLI::App* app, SourceOptions& o);
// Generates or reads (and checks) the schedule; throws dualpipe::Error.
Schedule load_schedule(const SourceOptions& o);

// -o/--output FILE, in every command: where the report (text or JSON) goes;
// "-", the default, is stdout. Files a command writes besides have options
// of their own (--csv, --svg, --trace, --loss-csv, ...).
CLI::Option* add_output_option(CLI::App* app, std::string& path);

struct CostOptions {
  std::string cost;  // "F=1,B=2,W=1,FB=3"
  double latency = 0, bandwidth = 0, act_bytes = 0;
  // Expert-parallel all-to-all (Costs::a2a_*); empty text keeps the default.
  std::string a2a_bytes, a2a_bwd_bytes, a2a_phases;
  double a2a_rate = 0, a2a_latency = 0;
  std::string fb_overlap = "on";
  std::string fill_waits = "off";  // Costs::fill_waits
  std::string link = "apart";  // Costs::link
};
void add_cost_options(CLI::App* app, CostOptions& o);
Costs make_costs(const CostOptions& o);

// Throws dualpipe::Error naming both options when two outputs of one command,
// {option, path}, are the same file (the one written last would replace the
// other): compared after resolving "..", links and the working folder, also
// for files not made yet. "", "-" (stdout) and devices (/dev/null) pass.
void require_distinct_outputs(const std::vector<std::pair<std::string, std::string>>& outputs);

// Writes `text` to `path`, or to stdout when path is "-". Throws dualpipe::Error.
void write_output(const std::string& path, const std::string& text);
// Writes (or appends) `text` to the file `path`; throws dualpipe::Error with
// the system's reason when any of it could not be written (a full disk).
void write_file(const std::string& path, const std::string& text, bool append);
// Throws dualpipe::Error when what was printed to stdout could not all be
// written (flushes it first). run_app calls it after every command.
void require_stdout_written();
// Throws dualpipe::Error naming `option` when `path` could not be written: its
// folder is missing or read-only, or it names a folder or read-only file.
// Long commands call this before they start, not after hours of work.
void require_writable(const std::string& option, const std::string& path);

// --svg-width PX for a command that writes an --svg timeline (simulate,
// plan, train): 0, automatic, or kMinSvgWidth..kMaxSvgWidth px, the
// narrowest picture that still shows a rank's label and a chart and the
// widest an SVG viewer opens (the automatic width stops at 16000 px of
// chart; 1e9 px wrote 1.69 GB).
inline constexpr double kMinSvgWidth = 400, kMaxSvgWidth = 100000;
void add_svg_width_option(CLI::App* app, double& width);
// Throws dualpipe::Error unless `width` is 0 or in range.
void check_svg_width(double width);

// Progress of a long plan or search: "<command>: <phase> <done>/<total>,
// <s> s" on stderr about once a second, from the first second on (a run
// shorter than that prints nothing). Never on stdout. One per run.
plan::ProgressFn progress_lines(const std::string& command);

// The program's own arguments, for commands that re-run it as rank processes.
struct ProgramArgs {
  int argc = 0;
  char** argv = nullptr;
};
extern ProgramArgs program_args;

// What the parsed command line runs, once parsing is done: set by the chosen
// command's callback (CLI11 calls it inside parse), called by run_app, which
// turns what it returns, or the dualpipe::Error it throws, into the exit code.
using CommandRun = std::function<int()>;

// Each adds its subcommand and options to `app`; the command, when chosen, sets `run`.
void add_schedule_command(CLI::App* app, CommandRun& run);
void add_simulate_command(CLI::App* app, CommandRun& run);
void add_compare_command(CLI::App* app, CommandRun& run);
void add_plan_command(CLI::App* app, CommandRun& run);    // cmd_plan.cpp
void add_search_command(CLI::App* app, CommandRun& run);  // cmd_search.cpp
// With LibTorch only (dualpipe-torch):
void add_verify_command(CLI::App* app, CommandRun& run);
void add_train_command(CLI::App* app, CommandRun& run);
void add_bench_command(CLI::App* app, CommandRun& run);
void add_profile_command(CLI::App* app, CommandRun& run);  // cmd_profile.cpp

}  // namespace dualpipe::cli
