#include "cli/app.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <new>
#include <string>

#include "cli/common.h"
#include "cli/words.h"
#include "dualpipe/schedule/closest.h"
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

// An argument CLI11 could not place ("The following arguments were not
// expected: 1 --warmup-steps", last first), in our words: the option (an
// unknown option leaves its value behind it too) with the closest known
// one where one is near, or the stray argument.
std::string unexpected_argument_words(const CLI::App& cmd, const std::string& name, const std::string& what) {
  const std::vector<std::string> extra = cmd.remaining();
  if (extra.empty()) return what;
  auto is_option = [](const std::string& a) {
    return a.size() > 1 && a[0] == '-' && !std::isdigit(static_cast<unsigned char>(a[1])) && a[1] != '.';
  };
  const auto found = std::find_if(extra.begin(), extra.end(), is_option);
  if (found == extra.end()) return fmt::format("{} takes no argument '{}' (options only)", name, extra.front());
  std::vector<std::string> options;
  for (const CLI::Option* opt : cmd.get_options()) {
    for (const std::string& l : opt->get_lnames()) options.push_back("--" + l);
    for (const std::string& s : opt->get_snames()) options.push_back("-" + s);
  }
  const std::string flag = found->substr(0, found->find('='));
  const std::string near = closest_word(flag, options);
  return fmt::format("{} has no option {}{}", name, flag, near.empty() ? "" : fmt::format(" (did you mean {}?)", near));
}

// "Could not convert: --steps = 1.5" in our words, by the option's type;
// "" when the text is not of that form.
std::string conversion_words(const CLI::App& cmd, const std::string& what) {
  const std::string convert = "Could not convert: ";
  const auto eq = what.find(" = ");
  if (what.rfind(convert, 0) != 0 || eq == std::string::npos) return "";
  const std::string option = what.substr(convert.size(), eq - convert.size()), value = what.substr(eq + 3);
  const CLI::Option* opt = cmd.get_option_no_throw(option);
  const std::string type = opt ? opt->get_type_name() : "";
  const bool whole = type.find("INT") != std::string::npos;
  return fmt::format("{}: '{}' is not {}", option, value,
                     whole ? "a whole number" : type.find("FLOAT") != std::string::npos ? "a number" : "valid");
}

// CLI11's parse errors in our words: an argument it cannot place, a value
// of the wrong type, an option given twice ("At Most 1 required but
// received 2"); anything else as CLI11 says it.
std::string parse_error_words(const CLI::App& app, const CLI::ParseError& e) {
  const std::vector<CLI::App*> parsed = app.get_subcommands();
  const CLI::App& cmd = parsed.empty() ? app : *parsed.front();
  const std::string name = parsed.empty() ? "dualpipe" : "dualpipe " + cmd.get_name();
  const std::string what = e.what();
  if (dynamic_cast<const CLI::ExtrasError*>(&e)) return unexpected_argument_words(cmd, name, what);
  if (dynamic_cast<const CLI::ConversionError*>(&e)) {
    const std::string words = conversion_words(cmd, what);
    if (!words.empty()) return words;
  }
  const auto twice = what.find(": At Most 1 required but received");
  if (twice != std::string::npos) return fmt::format("{} is given more than once", what.substr(0, twice));
  return what;
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
    fmt::print(stderr, "dualpipe: error: {} (see dualpipe {}--help)\n", terminal_text(parse_error_words(app, e)),
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
