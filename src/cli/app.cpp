#include "cli/app.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <new>
#include <set>
#include <sstream>
#include <string>

#include "cli/common.h"
#include "cli/words.h"
#include "dualpipe/schedule/error.h"

#include <dualpipe/version.h>

namespace dualpipe::cli {

void setup_app(CLI::App& app) {
  app.description(
      "dualpipe: generate, check, simulate and compare pipeline-parallel schedules "
      "(DualPipe, DualPipeV, 1F1B, GPipe, interleaved 1F1B, ZB1P, ZBV, Chimera)");
  app.name("dualpipe");
  app.require_subcommand(1);
  app.set_version_flag("--version", "dualpipe " DUALPIPE_VERSION);
}

void add_schedule_commands(CLI::App* app, CommandRun& run) {
  add_schedule_command(app, run);
  add_simulate_command(app, run);
  add_compare_command(app, run);
  add_plan_command(app, run);
  add_search_command(app, run);
}

void add_version_command(CLI::App* app, CommandRun& run) {
  auto* cmd = app->add_subcommand("version", "print the version of dualpipe");
  cmd->callback([&run] {
    run = [] {
      fmt::print("dualpipe {}\n", DUALPIPE_VERSION);
      return 0;
    };
  });
}

namespace {

// No dualpipe option takes NaN, infinity or an empty value, and no
// unsigned one a negative value; but CLI11 reads "nan", "inf" and "1e999"
// into a double (and NaN passes every "x < 0" range check), "" as 0, and -1
// into an unsigned integer as its largest value. So every numeric option (by
// the type CLI11 gives it) gets this validator, which also covers options
// added later.
void refuse_unreadable_numbers(CLI::App& app) {
  auto number = [](bool is_unsigned) {
    return CLI::Validator(
        [is_unsigned](std::string& text) -> std::string {
          // CLI11 reads '' into a number as 0: `--clip ''` turned clipping off.
          if (text.empty()) return "an empty value is not a number";
          char* end = nullptr;
          const double v = std::strtod(text.c_str(), &end);
          if (*end == '\0' && !std::isfinite(v)) return "'" + text + "' is not a finite number";
          if (is_unsigned && text.find('-') != std::string::npos) return "'" + text + "' is negative";
          return "";
        },
        "", "NUMBER");
  };
  const CLI::Validator signed_number = number(false), unsigned_number = number(true);
  for (CLI::App* sub : app.get_subcommands({}))
    for (CLI::Option* opt : sub->get_options()) {
      const std::string type = opt->get_type_name();
      if (type == "UINT") opt->check(unsigned_number);
      else if (type == "INT" || type == "FLOAT" || type == "NUMBER") opt->check(signed_number);
    }
}

// False after one line naming the commands when argv[1] is none of them.
bool known_command(CLI::App& app, int argc, char** argv) {
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({})) {
      known = known || sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      fmt::print(stderr, "dualpipe: error: unknown command '{}' (commands: {})\n", terminal_text(argv[1]), names);
      return false;
    }
  }
  return true;
}

// CLI11 lists the arguments it did not expect last first ("dualpipe -m"
// for `compare -m dualpipe`): the same list, in the order they were typed.
std::string extras_in_order(const CLI::ExtrasError& e, int argc, char** argv) {
  const std::string what = e.what();
  const std::size_t colon = what.find(": ");
  if (colon == std::string::npos) return what;
  std::multiset<std::string> left;
  std::istringstream words(what.substr(colon + 2));
  for (std::string w; words >> w;) left.insert(w);
  std::string typed;
  for (int i = 1; i < argc; ++i) {
    const auto it = left.find(argv[i]);
    if (it == left.end()) continue;
    typed += (typed.empty() ? "" : " ") + *it;
    left.erase(it);
  }
  return left.empty() ? what.substr(0, colon + 2) + typed : what;
}

}  // namespace

int run_app(CLI::App& app, const CommandRun& run, int argc, char** argv) {
  refuse_unreadable_numbers(app);
  program_args = {argc, argv};
  if (argc <= 1) {
    fmt::print("{}", app.help());
    return 0;
  }
  if (!known_command(app, argc, argv)) return 2;
  try {
    app.parse(argc, argv);
    const int code = run ? run() : 0;
    require_stdout_written();
    return code;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Point to the subcommand's own help where there is one.
    const bool sub = argc > 1 && argv[1][0] != '-';
    const auto* extras = dynamic_cast<const CLI::ExtrasError*>(&e);
    fmt::print(stderr, "dualpipe: error: {} (see dualpipe {}--help)\n",
               terminal_text(extras ? extras_in_order(*extras, argc, argv) : e.what()),
               sub ? std::string(argv[1]) + " " : "");
    return 2;
  } catch (const dualpipe::Error& e) {
    // From parsing or from the command; what it quotes from the input is
    // printed safe (binary files, escape sequences in arguments).
    fmt::print(stderr, "dualpipe: error: {}\n", terminal_text(e.what()));
    return 2;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "dualpipe: error: out of memory (try fewer ranks or micro-batches)\n");
    return 2;
  } catch (const std::exception& e) {
    // Anything else (a LibTorch c10::Error, whose message carries a stack
    // trace over many lines) still ends as one line and exit code 2, not as
    // std::terminate's abort.
    const std::string what = e.what();
    fmt::print(stderr, "dualpipe: error: {}\n", terminal_text(what.substr(0, what.find('\n'))));
    return 2;
  }
}

}  // namespace dualpipe::cli
