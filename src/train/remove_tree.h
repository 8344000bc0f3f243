#pragma once
// Removes a file or a folder with everything in it; a missing path is no
// error. Returns false if something could not be removed.
//
// Not std::filesystem::remove_all: LibTorch 2.x as shipped in PyTorch's
// wheels exports its own copy of that function from libtorch.so, which the
// dynamic linker binds ahead of libstdc++'s, and that copy crashed (a call
// through a null pointer) under a program built with the system compiler.
#include <string>

namespace dualpipe {

bool remove_tree(const std::string& path);

}  // namespace dualpipe
