#include "cli/torch_program.h"

#include <fmt/format.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "cli/torch_commands.h"

// Set by CMakeLists.txt from the install folders (bin/ to libexec/dualpipe/).
#ifndef DUALPIPE_TORCH_PROGRAM_RELPATH
#define DUALPIPE_TORCH_PROGRAM_RELPATH "../libexec/dualpipe/dualpipe-torch"
#endif

namespace dualpipe::cli {

bool is_torch_command(const std::string& name) { return !torch_command_summary(name).empty(); }

void add_torch_command_entries(CLI::App* app) {
  for (const CommandSummary& c : torch_commands) app->add_subcommand(std::string(c.name), std::string(c.summary));
}

std::string find_torch_program(const std::string& self, const std::string& relpath) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(self).parent_path();
  // Next to it first: a build folder, or both installed into one folder.
  for (const fs::path& p : {dir / "dualpipe-torch", dir / relpath})
    if (::access(p.c_str(), X_OK) == 0) return p.lexically_normal().string();
  return {};
}

int exec_torch_program(int argc, char** argv) {
  std::error_code ec;
  // The program's real file, also when started through a symbolic link or PATH.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  const std::string program = ec ? std::string() : find_torch_program(self, DUALPIPE_TORCH_PROGRAM_RELPATH);
  if (program.empty()) {
    fmt::print(stderr,
               "dualpipe: error: '{}' runs the LibTorch program dualpipe-torch, which is neither next to {} nor at "
               "{} from it (reinstall dualpipe)\n",
               argv[1], self.empty() ? std::string("this program") : self, DUALPIPE_TORCH_PROGRAM_RELPATH);
    return 2;
  }
  std::vector<char*> args(argv, argv + argc);
  args.push_back(nullptr);
  execv(program.c_str(), args.data());
  fmt::print(stderr, "dualpipe: error: cannot run {}: {}\n", program, std::strerror(errno));
  return 2;
}

}  // namespace dualpipe::cli
