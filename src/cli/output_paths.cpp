#include "cli/output_paths.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cli/common.h"
#include "dualpipe/schedule/error.h"

namespace dualpipe::cli {

void require_output_file(const std::string& option, const std::string& path) {
  if (path.empty()) throw Error(fmt::format("{} is empty: give a file name", option));
  if (path == "-") return;
  require_writable(option, path);  // missing folder, a folder
  // Found by trying, for real (see the header): a file that exists is opened
  // for appending; where none does, a file of our own is created beside it
  // and removed. Not the name itself: runs started at once in one folder
  // probe the same default names, and one's probe would be in another's way.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
      throw Error(fmt::format("{} '{}': cannot be written: not a regular file (a FIFO or socket)", option, path));
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
      ::close(fd);
      return;
    }
    if (errno != ENOENT) throw Error(fmt::format("{} '{}': cannot be written: {}", option, path, std::strerror(errno)));
  }
  const std::filesystem::path p(path);
  if (p.filename().string().size() > NAME_MAX)
    throw Error(fmt::format("{} '{}': cannot be written: {}", option, path, std::strerror(ENAMETOOLONG)));
  static std::atomic<unsigned> serial{0};
  const std::filesystem::path probe =
      (p.has_parent_path() ? p.parent_path() : std::filesystem::path(".")) /
      fmt::format(".dualpipe-probe-{}-{}", ::getpid(), serial++);
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(fmt::format("{} '{}': cannot be written: {}", option, path, std::strerror(errno)));
  ::close(fd);
  ::unlink(probe.c_str());
}

void require_not_an_input(const std::string& option, const std::string& path, const std::vector<NamedPath>& inputs) {
  if (path.empty() || path == "-") return;
  for (const NamedPath& in : inputs) {
    std::error_code ec;
    if (!in.path.empty() && std::filesystem::equivalent(path, in.path, ec) && !ec)
      throw Error(fmt::format("{} '{}' is the {} file: writing it would destroy the input (choose another name)",
                              option, path, in.option));
  }
}

void require_output_folder(const std::string& option, const std::string& path) {
  if (path.empty()) throw Error(fmt::format("{} is empty: give a folder name", option));
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (std::filesystem::exists(st) && !std::filesystem::is_directory(st))
    throw Error(fmt::format("{} '{}': is a file, not a folder", option, path));
}

void append_output(const std::string& path, const std::string& text) { write_file(path, text, true); }

}  // namespace dualpipe::cli
