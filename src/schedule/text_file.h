#pragma once
// Reading a whole text file with a size limit, for inputs that are small by
// nature (a training corpus). A regular file over the limit is refused before
// reading; anything else (a pipe, /dev/zero) is read up to the limit and then
// refused, so no input can grow memory without end.
#include <cstdint>
#include <string>

namespace dualpipe {

// Throws dualpipe::Error with one line naming `what` ("corpus file") and `path`:
// "... does not exist", "... is a directory", "... is not a regular file"
// (a FIFO or socket: opening one waits for a writer, and each reader would
// take part of it), "... cannot be opened for reading", "... could not be
// read", or "... is larger than the limit of N MiB".
std::string read_text_file(const std::string& path, std::uint64_t max_bytes, const std::string& what);

}  // namespace dualpipe
