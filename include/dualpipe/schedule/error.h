#pragma once
// One error type for everything a user can get wrong (arguments, files,
// shapes). Its message is a single line meant to be printed as is; the
// command line maps it to exit code 2.
#include <stdexcept>
#include <string>

namespace dualpipe {

// A user error with a one-line message. Copyable, as any exception.
struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace dualpipe
