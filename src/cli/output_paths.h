#pragma once
// Checks of the files and folders a long command writes, made before any
// rank starts: a run must not train for an hour and then fail to save.
#include <string>
#include <vector>

namespace dualpipe::cli {

// Throws dualpipe::Error naming `option` when no file can be written at `path`:
// an empty name, a missing folder, a folder, or a place where creating the
// file fails (tried for real, so that a read-only file system or folder is
// found also when running as root, whom access() always answers yes). A file
// that exists is opened for appending, never truncated; where none does, a
// file of the process's own is created in its folder and removed (never the
// name itself, which another run may be probing at the same time). "-"
// (standard output) passes. A FIFO or socket is refused (opening one for
// writing waits for a reader, without end); a device such as /dev/null
// passes.
void require_output_file(const std::string& option, const std::string& path);

// An input of the run, by its option: {"--data", path}.
struct NamedPath {
  std::string option, path;
};

// Throws dualpipe::Error naming both options when `path` (an output) is the
// same file as one of `inputs` (by device and inode: also through a link or
// another spelling), which writing it would destroy. Inputs not given ("")
// and paths that do not exist yet pass.
void require_not_an_input(const std::string& option, const std::string& path, const std::vector<NamedPath>& inputs);

// Throws dualpipe::Error naming `option` when `path` cannot be a folder to write
// into: an empty name, or an existing file. (Whether the folder can be made
// and written is found by creating it, e.g. by CheckpointLock.)
void require_output_folder(const std::string& option, const std::string& path);

// Appends `text` to the file at `path` and flushes it; throws dualpipe::Error.
// For results written as they come (the loss curve, one row a step), so
// that a run that fails later still leaves what it measured.
void append_output(const std::string& path, const std::string& text);

}  // namespace dualpipe::cli
