#include "train/remove_tree.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cstdio>

namespace dualpipe {
namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return std::remove(path) == 0 ? 0 : -1; }

}  // namespace

bool remove_tree(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return true;  // nothing there
  // Depth first (children before their folder), without following links.
  return nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

}  // namespace dualpipe
