// The command line's words and outputs: one vocabulary across commands, one
// JSON shape, messages that say what is wrong, outputs that fail loudly when
// they cannot be written.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "cli_run.h"

namespace dualpipe {
namespace {

using test_support::CliRun;
using test_support::one_line;
CliRun run(const std::string& args) { return test_support::run_cli(args, "", 60); }
void expect_error(const std::string& args, const std::string& fragment) {
  test_support::expect_cli_error(args, fragment);
}
std::string temp_path(const std::string& name) { return test_support::temp_file("dualpipe_words_", name); }

// An output that cannot be written (a full disk: /dev/full) is an error with
// the system's reason, for every file a command writes and for stdout; it
// used to exit 0 with the report lost.
TEST(CliWords, AnOutputThatCannotBeWrittenIsAnError) {
  const std::string sim = "simulate -m 1f1b -p 2 -n 2 ";
  const std::string plan = "plan --preset llama-70b --global-batch 512 ";
  for (const std::string& args : std::vector<std::string>{
           sim + "-o /dev/full", sim + "--svg /dev/full", sim + "--trace /dev/full",
           "schedule -m 1f1b -p 2 -n 2 -o /dev/full", "compare -p 2 -n 4 -o /dev/full", plan + "-o /dev/full",
           plan + "--csv /dev/full", "search -p 2 -n 4 --iterations 1 --svg /dev/full"})
    expect_error(args, "No space left on device");
  // Standard output on a full disk.
  const CliRun r = test_support::run_command(std::string("{ ") + DUALPIPE_BINARY +
                                             " schedule -m 1f1b -p 2 -n 2 > /dev/full; }");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("cannot write the output to standard output: No space left on device"), std::string::npos)
      << r.out;
  EXPECT_TRUE(one_line(r.out)) << r.out;
}

// A CSV schedule saved with a UTF-8 byte-order mark reads as without one.
TEST(CliWords, AScheduleFileWithAByteOrderMarkIsRead) {
  const std::string path = temp_path("bom.csv");
  std::ofstream(path) << "\xEF\xBB\xBF" << "0F0,0B0\n1F0,1B0\n";
  const CliRun r = run("schedule --from " + path + " --format csv");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "0F0,0B0\n1F0,1B0\n");
}

// Two outputs of one command naming the same file: the one written last
// replaced the other (simulate -o x --svg x left the report in x).
TEST(CliWords, TwoOutputsOfOneCommandMayNotBeTheSameFile) {
  const std::string x = temp_path("same_output");
  const std::string also_x = ::testing::TempDir() + "/./" + std::filesystem::path(x).filename().string();  // another spelling
  expect_error("simulate -m 1f1b -p 2 -n 2 -o " + x + " --svg " + x,
               "--output and --svg both name '" + x + "': each output needs a file of its own");
  expect_error("search -p 2 -n 4 --iterations 1 --csv " + x + " --svg " + also_x, "--csv and --svg both name");
  expect_error("plan --preset llama-70b --global-batch 512 --csv " + x + " -o " + x, "--output and --csv both name");
  // A device takes any number of writers.
  EXPECT_EQ(run("simulate -m 1f1b -p 2 -n 2 -o /dev/null --svg /dev/null").code, 0);
}

// Where an output cannot be written because a part of its path is a file,
// the message names that file; it used to say "folder '/etc/passwd/x' does
// not exist".
TEST(CliWords, AnOutputUnderAFileNamesTheFile) {
  const std::string file = temp_path("plain_file");
  std::ofstream(file) << "x";
  expect_error("plan --preset llama-70b --global-batch 512 --csv " + file + "/sub/best.csv",
               "--csv '" + file + "/sub/best.csv': '" + file + "' is not a folder");
  expect_error("plan --preset llama-70b --global-batch 512 --csv " + temp_path("no_such_folder") + "/best.csv",
               "folder '" + temp_path("no_such_folder") + "' does not exist");
}

// Text from outside quoted in a message (an argument, bytes of a binary
// file) reaches the terminal escaped: an escape sequence or a NUL never
// passes raw, valid UTF-8 does.
TEST(CliWords, MessagesEscapeControlBytesAndBrokenUtf8) {
  const std::string json = temp_path("binary.json");
  std::ofstream(json) << "{\"name\": \"\x1b[31mred\xff\"";
  for (const auto& [args, want] : std::vector<std::pair<std::string, std::string>>{
           {"simulate -m $'\\x1b[31mX\\xff' -p 2 -n 2", "unknown method '\\x1b[31mX\\xff'"},
           {"simulate -m 1f1b -p 2 -n 2 --cost $'F=\\x7f'", "'\\x7f' is not a number"},
           {"$'sim\\x1b'", "unknown command 'sim\\x1b'"},
           {"plan --preset llama-70b --global-batch 8 --model " + json, "is not valid JSON"},
           {"simulate -m 1f1b -p 2 -n 2 --bogus$'\\x07'", "--bogus\\x07"}}) {
    const CliRun r = test_support::run_command(std::string("bash -c \"") + DUALPIPE_BINARY + " " + args + "\"");
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(want), std::string::npos) << args << "\n" << r.out;
    EXPECT_TRUE(one_line(r.out)) << args << "\n" << r.out;
    for (std::size_t i = 0; i + 1 < r.out.size(); ++i) {
      const auto c = static_cast<unsigned char>(r.out[i]);
      EXPECT_TRUE(c >= 0x20 && c < 0x7f) << args << ": byte " << static_cast<int>(c) << " at " << i;
    }
  }
  // A file name in another script stays readable.
  const std::string name = temp_path("\xc3\xa9t\xc3\xa9.csv");
  std::ofstream(name) << "0F0,0Q0\n";
  const CliRun r = run("schedule --from '" + name + "'");
  EXPECT_NE(r.out.find("\xc3\xa9t\xc3\xa9.csv:1, cell 2"), std::string::npos) << r.out;
}

// The option help of every schedule command, for checks across commands.
std::string help_of(const std::string& command) { return run(command + " --help").out; }
const std::vector<std::string> kCommands = {"schedule", "simulate", "compare", "plan", "search"};

// One vocabulary: the same option has the same name and the same words in
// every command, and its default is shown.
TEST(CliWords, OptionsReadTheSameInEveryCommand) {
  for (const std::string& c : kCommands) {
    const std::string h = help_of(c);
    EXPECT_NE(h.find("-o,--output TEXT=-          file for the report ('-' for stdout)"), std::string::npos)
        << c << "\n" << h;
    EXPECT_NE(h.find("-p,--ranks"), std::string::npos) << c << "\n" << h;
    EXPECT_EQ(h.find("--pp"), std::string::npos) << c << "\n" << h;
    EXPECT_NE(h.find("-f,--format TEXT:{text,"), std::string::npos) << c << "\n" << h;
    if (c != "plan") {
      EXPECT_NE(h.find("--chunks INT=2              stages per rank V, for interleaved-1f1b"), std::string::npos)
          << c << "\n" << h;
      if (c != "schedule") {
        EXPECT_NE(h.find("default F=1 B=2 W=1 FB=F+B"), std::string::npos) << c << "\n" << h;
      }
    }
  }
  EXPECT_NE(help_of("plan").find("(default: the model's \"recompute\", else auto)"), std::string::npos);
}

// The LibTorch commands (through dualpipe, which runs dualpipe-torch for
// them) take -o as every command does, --format text|json, and --model's
// help names every model the program knows.
TEST(CliWords, LibTorchCommandsShareTheVocabulary) {
  if (std::string(DUALPIPE_TORCH_PROGRAM).empty()) GTEST_SKIP() << "built without LibTorch";
  for (const std::string c : {"train", "verify", "bench", "profile"}) {
    const std::string h = help_of(c);
    EXPECT_NE(h.find("-o,--output TEXT=-          file for the report ('-' for stdout)"), std::string::npos)
        << c << "\n" << h;
    EXPECT_NE(h.find("-f,--format TEXT:{text,json}"), std::string::npos) << c << "\n" << h;
    if (c != "profile") {
      EXPECT_NE(h.find("--chunks INT=2              stages per rank V, for interleaved-1f1b"), std::string::npos)
          << c << "\n" << h;
    }
  }
  // The models the program knows, from its own message for one it does not.
  const CliRun bad = run("verify -m 1f1b -p 2 -n 2 --model nosuch");
  const std::size_t from = bad.out.find("(known: "), to = bad.out.find(';', from);
  ASSERT_TRUE(from != std::string::npos && to != std::string::npos) << bad.out;
  const std::string help = help_of("train");
  const std::size_t at = help.find("--model TEXT");
  ASSERT_NE(at, std::string::npos) << help;
  const std::string line = help.substr(at, help.find('\n', at) - at);
  std::istringstream known(bad.out.substr(from + 8, to - from - 8));
  for (std::string name; std::getline(known, name, ',');) {
    name.erase(0, name.find_first_not_of(' '));
    EXPECT_NE(line.find(name), std::string::npos) << name << "\n" << line;
  }
}

// plan fixes the pipeline ranks with -p/--ranks as the other commands name
// them; --pp, its first name, still works and gives the same plan.
TEST(CliWords, PlanTakesTheRanksAsEveryCommandDoes) {
  const std::string plan = "plan --preset llama-70b --global-batch 512 --top 3 --format json ";
  const CliRun p = run(plan + "-p 8"), pp = run(plan + "--pp 8");
  ASSERT_EQ(p.code, 0) << p.out;
  EXPECT_EQ(p.out, pp.out);
  for (const auto& row : nlohmann::json::parse(p.out)["plans"]) EXPECT_EQ(row["pp"], 8) << row;
  expect_error("plan --preset llama-70b --global-batch 512 --ranks 3", "--ranks must divide cluster.devices");
  // Both spellings at once, or a degree given as 0 (which is leaving it out), used to pass silently.
  expect_error("plan --preset llama-70b --global-batch 512 -p 8 --pp 4", "--pp is --ranks by its first name: give one");
  for (const std::string option : {"-p", "--pp", "--ep", "--tp", "--micro-batch-size"})
    expect_error("plan --preset llama-70b --global-batch 512 " + option + " 0", "must be at least 1 (got 0)");
}

// An argument a command does not take is named as typed: CLI11 gave
// `compare -m dualpipe` as "not expected: dualpipe -m".
TEST(CliWords, UnexpectedArgumentsAreNamedAsTyped) {
  expect_error("compare -p 4 -n 8 -m dualpipe", "dualpipe compare has no option -m");
  expect_error("simulate -m 1f1b -p 2 -n 2 extra words here", "dualpipe simulate takes no argument 'extra'");
}

// schedule's grid is --format text as every command's text report; its
// first name, table, still works.
TEST(CliWords, ScheduleFormatTextIsTheGrid) {
  const CliRun text = run("schedule -m 1f1b -p 2 -n 2 --format text");
  EXPECT_EQ(text.code, 0) << text.out;
  EXPECT_EQ(text.out, run("schedule -m 1f1b -p 2 -n 2").out);
  EXPECT_EQ(text.out, run("schedule -m 1f1b -p 2 -n 2 -f table").out);
  EXPECT_NE(text.out.find("checked: valid"), std::string::npos) << text.out;
}

// One JSON shape: every command's object names the command, and no number
// carries float noise (simulate printed 29.700000000000014).
TEST(CliWords, EveryJsonNamesItsCommandAndHasNoFloatNoise) {
  const std::string cost = " --cost F=1.1,B=2.2,W=1.1 --format json";
  const std::vector<std::pair<std::string, std::string>> runs = {
      {"schedule", "schedule -m 1f1b -p 2 -n 2 --format json"},
      {"simulate", "simulate -m zb1p -p 4 -n 8" + cost},
      {"compare", "compare -p 4 -n 8 --cost F=1.1,B=2.2,W=1.1,FB=3.1 --format json"},  // FB: no warning on stderr
      {"search", "search -p 2 -n 4 --iterations 10" + cost},
      {"plan", "plan --preset llama-70b --global-batch 512 --top 2 --format json"}};
  const std::regex noise("[0-9]\\.[0-9]*(0000000|9999999)[0-9]");
  for (const auto& [command, args] : runs) {
    const CliRun r = run(args);
    ASSERT_EQ(r.code, 0) << args << "\n" << r.out;
    const nlohmann::json j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["command"], command) << args;
    EXPECT_FALSE(std::regex_search(r.out, noise)) << args << "\n" << r.out;
  }
  const nlohmann::json sim = nlohmann::json::parse(run("simulate -m zb1p -p 4 -n 8" + cost).out);
  EXPECT_EQ(sim["makespan"].dump(), "29.7");
  EXPECT_EQ(sim["bubble"].dump(), "3.3");
}

}  // namespace
}  // namespace dualpipe
