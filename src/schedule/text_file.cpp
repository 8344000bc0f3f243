#include "schedule/text_file.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "dualpipe/schedule/error.h"

namespace dualpipe {

std::string read_text_file(const std::string& path, std::uint64_t max_bytes, const std::string& what) {
  namespace fs = std::filesystem;
  const std::string limit = max_bytes % (1 << 20) == 0 ? fmt::format("{} MiB", max_bytes >> 20)
                                                       : fmt::format("{} bytes", max_bytes);
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(fmt::format("{} '{}' does not exist", what, path));
  if (fs::is_directory(path, ec)) throw Error(fmt::format("{} '{}' is a directory", what, path));
  const auto type = fs::status(path, ec).type();
  if (type == fs::file_type::fifo || type == fs::file_type::socket)
    throw Error(fmt::format("{} '{}' is not a regular file (a FIFO or socket): save it to a file first", what, path));
  if (fs::is_regular_file(path, ec)) {
    const auto size = fs::file_size(path, ec);
    if (!ec && size > max_bytes)
      throw Error(fmt::format("{} '{}' has {} bytes, more than the limit of {}", what, path, size, limit));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{} '{}' cannot be opened for reading", what, path));
  std::string text;
  std::vector<char> block(1 << 16);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    if (text.size() + got > max_bytes)
      throw Error(fmt::format("{} '{}' is larger than the limit of {}; stopped reading there", what, path, limit));
    text.append(block.data(), got);
  }
  if (in.bad()) throw Error(fmt::format("{} '{}' could not be read", what, path));
  return text;
}

}  // namespace dualpipe
