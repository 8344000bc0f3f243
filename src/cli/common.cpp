#include "cli/common.h"

#include <fmt/format.h>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "dualpipe/schedule/check.h"
#include "dualpipe/schedule/csv.h"
#include "dualpipe/schedule/error.h"
#include "dualpipe/schedule/generators.h"
#include "dualpipe/schedule/lower.h"
#include "cli/words.h"

namespace dualpipe::cli {

ProgramArgs program_args;

void add_source_options(CLI::App* app, SourceOptions& o) {
  std::string names;
  for (const Method& m : methods()) names += fmt::format("{}{}", names.empty() ? "" : ", ", m.name);
  o.command = app->get_name();
  // Required unless --from is given (load_schedule says which are missing);
  // a command may set defaults first, which then count as given.
  const std::string req = o.method.empty() ? " (required unless --from)" : "";
  o.method_opt = app->add_option("-m,--method", o.method, "schedule generator: " + names + req);
  o.ranks_opt = app->add_option("-p,--ranks", o.ranks,
                                "pipeline ranks P (devices)" + std::string(o.ranks ? "" : " (required unless --from)"));
  o.micro_batches_opt =
      app->add_option("-n,--micro-batches", o.micro_batches,
                      "micro-batches N per training step" + std::string(o.micro_batches ? "" : " (required unless --from)"));
  o.chunks_opt =
      app->add_option("--chunks", o.chunks, kChunksHelp)->capture_default_str();
  app->add_option("--from", o.from, "read the schedule from a CSV file (PyTorch's action-string form) instead");
  app->add_option("--pair-forwards", o.pair_forwards,
                  "on: two forwards outside F&B pairs that follow each other on a rank become one F&F pair, whose "
                  "halves take turns as an F&B pair's do (each hides the other's all-to-alls); off: the schedule as "
                  "generated or read")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
}

namespace {

bool given(const CLI::Option* opt) { return opt && opt->count() > 0; }

Schedule generate_or_read(const SourceOptions& o) {
  const std::string help = o.command.empty() ? "" : fmt::format(" (see dualpipe {} --help)", o.command);
  if (!o.from.empty()) {
    if (given(o.method_opt) || given(o.ranks_opt) || given(o.micro_batches_opt) || given(o.chunks_opt))
      throw Error("--from reads the whole schedule from the file; drop --method, --ranks, --micro-batches and --chunks" +
                  help);
    Schedule s = read_csv_file(o.from);
    CheckReport rep = check(s);
    if (!rep.ok()) {
      std::string msg = fmt::format("{}: invalid schedule: {}", o.from, rep.errors.front());
      if (o.list_errors) {
        for (std::size_t i = 1; i < rep.errors.size(); ++i)
          fmt::print(stderr, "dualpipe: {}: {}\n", o.from, rep.errors[i]);
      } else if (rep.errors.size() > 1) {
        msg += fmt::format(" (and more; 'dualpipe schedule --from {}' lists them all)", o.from);
      }
      throw Error(msg);
    }
    return s;
  }
  // Left out (and no default) is "required"; given but out of range says the value.
  std::vector<std::string> missing;
  if (o.method.empty()) missing.push_back("--method");
  if (o.ranks == 0 && !given(o.ranks_opt)) missing.push_back("--ranks");
  if (o.micro_batches == 0 && !given(o.micro_batches_opt)) missing.push_back("--micro-batches");
  if (!missing.empty())
    throw Error(fmt::format("{} {} required{}{}", listing(missing), missing.size() == 1 ? "is" : "are",
                            o.method.empty() ? ", or --from FILE.csv" : "", help));
  if (o.ranks <= 0) throw Error(fmt::format("--ranks must be at least 1 (got {}){}", o.ranks, help));
  if (o.micro_batches <= 0)
    throw Error(fmt::format("--micro-batches must be at least 1 (got {}){}", o.micro_batches, help));
  if (o.chunks <= 0) throw Error(fmt::format("--chunks must be at least 1 (got {}){}", o.chunks, help));
  // Only interleaved 1F1B has a chunk count; elsewhere --chunks would be ignored.
  const Method* method = method_named(o.method);
  if (given(o.chunks_opt) && !(method && method->takes_chunks())) {
    std::vector<std::string> takers;
    for (const Method& m : methods())
      if (m.takes_chunks()) takers.emplace_back(m.name);
    throw Error(fmt::format("--chunks applies to {} only, not {}{}", listing(takers), o.method, help));
  }
  return generate(o.method, Shape{o.ranks, o.micro_batches, o.chunks});
}

}  // namespace

Schedule load_schedule(const SourceOptions& o) {
  Schedule s = generate_or_read(o);
  return o.pair_forwards == "on" ? pair_forwards(s) : s;
}

CLI::Option* add_output_option(CLI::App* app, std::string& path) {
  return app->add_option("-o,--output", path, "file for the report ('-' for stdout)")->capture_default_str();
}

void add_cost_options(CLI::App* app, CostOptions& o) {
  app->add_option("--cost", o.cost,
                  fmt::format("action costs, e.g. F=1,B=2,W=1,FB=3 (FB: one overlapped F&B pair); per stage with "
                              "colons: F=1:1:2:1; default {}",
                              describe(Costs{})));
  app->add_option("--comm-latency", o.latency, "latency of one transfer between ranks")->capture_default_str();
  app->add_option("--comm-bandwidth", o.bandwidth, "bytes per time unit between ranks (0: unlimited)")
      ->capture_default_str();
  app->add_option("--act-bytes", o.act_bytes, "bytes of one activation crossing a stage boundary")
      ->capture_default_str();
  // Expert-parallel all-to-all phases inside each chunk (docs/simulation.md).
  app->add_option("--a2a-bytes", o.a2a_bytes,
                  "bytes all all-to-alls of one forward chunk move together (per stage with colons; default 0)");
  app->add_option("--a2a-bwd-bytes", o.a2a_bwd_bytes, "the same for a backward chunk (default: as --a2a-bytes)");
  app->add_option("--a2a-phases", o.a2a_phases,
                  "all-to-alls per chunk: 2 (dispatch, combine) x MoE layers of the stage (per stage with colons; "
                  "default 2)");
  app->add_option("--a2a-rate", o.a2a_rate, "bytes per time unit of a rank's all-to-all link")
      ->capture_default_str();
  app->add_option("--a2a-latency", o.a2a_latency, "fixed time of every all-to-all phase")->capture_default_str();
  app->add_option("--fb-overlap", o.fb_overlap, "hide each F&B pair's all-to-alls behind its other half's compute")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app->add_option("--fill-waits", o.fill_waits,
                  "on: a B's weight-gradient work (W) runs while its all-to-alls are on the wire, the rest after "
                  "its output is sent, as the runtime's --fill-waits does; off: inline, every wait exposed")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app->add_option("--link", o.link,
                  "where pipeline transfers go: apart (each takes its transfer time, off the all-to-all link), "
                  "fifo (on the sending rank's link with its all-to-alls, one at a time in posting order), "
                  "shared (on that link, sharing its rate with whatever else is in flight), duplex (as fifo, "
                  "with an upload and a download of the rate: a transfer takes the sender's upload and the "
                  "receiver's download, an all-to-all phase both of the rank's)")
      ->check(CLI::IsMember(link_names()))
      ->capture_default_str();
}

Costs make_costs(const CostOptions& o) {
  Costs c = parse_costs(o.cost);
  c.latency = o.latency;
  c.bandwidth = o.bandwidth;
  c.act_bytes = o.act_bytes;
  if (!o.a2a_bytes.empty()) c.a2a_bytes = parse_stage_values(o.a2a_bytes, "--a2a-bytes");
  if (!o.a2a_bwd_bytes.empty()) c.a2a_bwd_bytes = parse_stage_values(o.a2a_bwd_bytes, "--a2a-bwd-bytes");
  if (!o.a2a_phases.empty()) c.a2a_phases = parse_stage_counts(o.a2a_phases, "--a2a-phases");
  c.a2a_rate = o.a2a_rate;
  c.a2a_latency = o.a2a_latency;
  c.fb_overlap = o.fb_overlap == "on";
  c.fill_waits = o.fill_waits == "on";
  c.link = link_of(o.link);
  // A transfer costs latency + act_bytes / bandwidth: either of the last two
  // alone changes nothing, which would look like a result.
  if (o.bandwidth > 0 && o.act_bytes == 0)
    throw Error("--comm-bandwidth does nothing without --act-bytes (the bytes one transfer moves)");
  if (o.act_bytes > 0 && o.bandwidth == 0)
    throw Error("--act-bytes does nothing without --comm-bandwidth (bytes per time unit; 0 means unlimited)");
  return c;
}

void require_writable(const std::string& option, const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty() || path == "-") return;
  std::error_code ec;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const auto why = [&](const std::string& what) { return Error(fmt::format("{} '{}': {}", option, path, what)); };
  if (!fs::is_directory(dir, ec)) {
    // Under a file (/etc/passwd/x): the file is what is wrong, not a missing folder.
    fs::path up = dir;
    while (up.has_parent_path() && up != up.parent_path() && !fs::exists(up, ec)) up = up.parent_path();
    if (fs::exists(up, ec) && !fs::is_directory(up, ec)) throw why(fmt::format("'{}' is not a folder", up.string()));
    throw why(fmt::format("folder '{}' does not exist", dir.string()));
  }
  if (fs::is_directory(p, ec)) throw why("is a folder");
  if (fs::exists(p, ec) ? ::access(path.c_str(), W_OK) != 0 : ::access(dir.c_str(), W_OK | X_OK) != 0)
    throw why(std::strerror(errno));
}

void require_distinct_outputs(const std::vector<std::pair<std::string, std::string>>& outputs) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, fs::path>> seen;
  for (const auto& [option, path] : outputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (path.empty() || path == "-" || (fs::exists(st) && !fs::is_regular_file(st))) continue;
    fs::path where = fs::weakly_canonical(path, ec);
    if (ec || where.empty()) where = fs::absolute(path, ec).lexically_normal();
    for (const auto& [first, other] : seen)
      if (other == where)
        throw Error(fmt::format("{} and {} both name '{}': each output needs a file of its own", first, option, path));
    seen.emplace_back(option, where);
  }
}

void write_file(const std::string& path, const std::string& text, bool append) {
  // With the system's reason: a full disk (/dev/full) shows only when the
  // buffered bytes are flushed, at fclose.
  std::FILE* f = std::fopen(path.c_str(), append ? "ab" : "wb");
  if (!f) throw Error(fmt::format("cannot write '{}': {}", path, std::strerror(errno)));
  const bool wrote = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const int write_errno = errno;
  const bool closed = std::fclose(f) == 0;
  if (!wrote || !closed)
    throw Error(fmt::format("cannot write '{}': {}", path, std::strerror(wrote ? errno : write_errno)));
}

void add_svg_width_option(CLI::App* app, double& width) {
  app->add_option("--svg-width", width,
                  fmt::format("width of the SVG in px, {:g}..{:g} (0: wide enough for every micro-batch number; "
                              "numbers that do not fit their cell are left out)",
                              kMinSvgWidth, kMaxSvgWidth))
      ->capture_default_str();
}

void check_svg_width(double width) {
  if (width != 0 && !(width >= kMinSvgWidth && width <= kMaxSvgWidth))
    throw Error(fmt::format("--svg-width must be 0 (automatic) or {:g}..{:g} px (got {:g})", kMinSvgWidth,
                            kMaxSvgWidth, width));
}

plan::ProgressFn progress_lines(const std::string& command) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  auto next = std::make_shared<Clock::time_point>(start + std::chrono::seconds(1));
  return [command, start, next](const plan::Progress& p) {
    const Clock::time_point now = Clock::now();
    if (now < *next) return;
    *next = now + std::chrono::seconds(1);
    fmt::print(stderr, "{}: {} {}/{}, {:.0f} s\n", command, p.phase, p.done, p.total,
               std::chrono::duration<double>(now - start).count());
  };
}

void write_output(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  write_file(path, text, false);
}

void require_stdout_written() {
  // Output that could not be written (stdout on /dev/full, a closed pipe
  // reader) is an error, not exit 0 with the report lost.
  if (std::fflush(stdout) != 0 || std::ferror(stdout))
    throw Error(fmt::format("cannot write the output to standard output: {}", std::strerror(errno)));
}

}  // namespace dualpipe::cli
