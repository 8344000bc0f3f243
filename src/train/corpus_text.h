#pragma once
// The text of a corpus file, read the one way the loader and the run's
// identity both read it. Internal to the train layer.
#include <string>

namespace dualpipe {

// The whole file, at most 128 MiB: every character becomes an 8-byte token
// id, so the cap (enwik8's 100 MB fits) keeps a corpus under about 1 GiB in
// memory, and `--data /dev/zero` ends with one line instead of growing
// without end. Throws dualpipe::Error (read_text_file's lines, as "corpus file").
std::string read_corpus_text(const std::string& path);

}  // namespace dualpipe
