#include "dualpipe/train/corpus.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "dualpipe/schedule/error.h"
#include "schedule/text_file.h"
#include "train/corpus_text.h"

namespace dualpipe {
namespace {

// Original prose written for this project (no third-party text). Kept as
// separate paragraphs because ISO C++ only promises string literals of up to
// 4095 characters, and -Wpedantic holds us to it.
const char* const kParagraphs[] = {
    "The lighthouse on the northern point was kept by a woman named Ada, who counted the ships as other people "
    "count sheep. In the morning she climbed the stairs, one hundred and twelve of them, and wiped the great lens "
    "until it shone. In the evening she climbed them again and lit the lamp. Between the morning and the evening "
    "she wrote in her book: the wind, the weather, the ships that passed, and the birds that rested on the rail.",

    "The baker in the village rose before the sun. He mixed the flour and the water and the salt, and he let the "
    "dough rest while he swept the floor. When the dough had risen he folded it, and when it had risen again he "
    "shaped it into loaves. The first loaves went into the oven as the first light came over the hill, and the "
    "smell of bread went down the street and woke the children one by one.",

    "A river does not hurry and does not wait. It takes the rain from the hills and the snow from the mountains "
    "and carries them to the sea, a little at a time. Where the ground is steep the river runs fast and white; "
    "where the ground is flat it grows wide and slow and brown. The fish know every stone of it, and the herons "
    "know every fish.",

    "In the spring the fields were green and the lambs were loud. In the summer the fields were gold and the "
    "farmers were tired. In the autumn the fields were brown and the barns were full. In the winter the fields "
    "were white and quiet, and the farmers sat by the fire and mended the tools they would need in the spring.",

    "Ada liked the winter best. The ships were fewer, but each one mattered more. On the longest night of the "
    "year a small boat came round the point with its sail torn and its lamp out. Ada saw it in the beam of the "
    "lighthouse, turned, and saw it again. She rang the bell, and the men of the village came down to the "
    "harbour with ropes and lanterns, and the boat came in safe.",

    "The baker sent up a basket of bread the next morning, still warm, with a note that said only: for the "
    "keeper of the light. Ada ate one loaf at the top of the stairs, looking at the sea, and kept the note in "
    "her book between the page for the wind and the page for the birds.",

    "A pipeline is a line of workers, each of whom does one part of a job and passes the rest along. The first "
    "worker cannot rest while the last is busy, and the last cannot start until the first has finished. A good "
    "schedule keeps every worker busy: while one piece of work moves forward, another moves back, and the gaps "
    "between them, which are called bubbles, grow small. Counting the bubbles is easy; removing them is the "
    "whole art.",

    "The children of the village learned to count with pebbles from the river. One pebble for each boat in the "
    "harbour, two for each loaf on the table, three for each step of the old stone bridge. When they had learned "
    "to count to one hundred they climbed the lighthouse stairs with Ada and counted every step aloud, and at "
    "the top they counted the ships on the sea until the numbers ran out.",

    "Seven ships passed the point on the first day of the month, and nine on the second. On the third day the "
    "fog came in and no ships passed at all. On the fourth day the fog lifted, the wind turned to the west, and "
    "eleven ships passed before noon. Ada wrote each number in her book, and under the numbers she wrote: the "
    "sea keeps its own time, and we keep ours.",

    "When the old stone bridge needed mending, the whole village came to help. The farmers brought carts of "
    "stone, the baker brought bread and tea, and the children carried small stones in their pockets and laid "
    "them where they were told. It took nine days. On the tenth day the first cart rolled across, slowly, and "
    "everyone cheered, and the river went on under the bridge as if nothing had happened at all.",

    "Years later, when Ada was old, a young man named Tom came to learn the work of the light. She showed him "
    "how to wipe the lens, how to trim the wick, how to read the sky in the evening and the sea in the morning. "
    "She gave him her book, and he began a new one. On the first page he wrote the wind, the weather, the ships "
    "that passed, and the birds that rested on the rail, just as she had done.",
};

// SplitMix64: a small, well-mixed integer hash, the same on every machine.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

const std::string& builtin_text() {
  static const std::string text = [] {
    std::string t;
    for (const char* p : kParagraphs) t += std::string(p) + "\n\n";
    return t;
  }();
  return text;
}

Corpus::Corpus(const std::string& text, std::string name) : name_(std::move(name)) {
  std::array<bool, 256> seen{};
  for (char ch : text) seen[static_cast<unsigned char>(ch)] = true;
  std::array<int64_t, 256> id{};
  for (int b = 0; b < 256; ++b)
    if (seen[b]) {
      id[b] = static_cast<int64_t>(alphabet_.size());
      alphabet_.push_back(static_cast<unsigned char>(b));
    }
  ids_ = torch::empty({static_cast<int64_t>(text.size())}, torch::kInt64);
  auto* out = ids_.data_ptr<int64_t>();
  for (std::size_t i = 0; i < text.size(); ++i) out[i] = id[static_cast<unsigned char>(text[i])];
}

int64_t Corpus::window_start(uint64_t seed, int64_t step, int mb, int64_t row, int64_t len) const {
  uint64_t h = mix(seed);
  h = mix(h ^ static_cast<uint64_t>(step));
  h = mix(h ^ static_cast<uint64_t>(mb));
  h = mix(h ^ static_cast<uint64_t>(row));
  const auto starts = static_cast<uint64_t>(size() - len + 1);  // every window that fits
  return static_cast<int64_t>(h % starts);
}

torch::Tensor Corpus::windows(uint64_t seed, int64_t step, int mb, int64_t rows, int64_t len) const {
  std::vector<torch::Tensor> r;
  for (int64_t i = 0; i < rows; ++i) r.push_back(ids_.narrow(0, window_start(seed, step, mb, i, len), len));
  return torch::stack(r);
}

std::string Corpus::decode(const torch::Tensor& ids) const {
  torch::Tensor flat = ids.to(torch::kInt64).contiguous().view({-1});
  std::string s;
  for (int64_t i = 0; i < flat.numel(); ++i) s += static_cast<char>(alphabet_.at(flat[i].item<int64_t>()));
  return s;
}

std::string read_corpus_text(const std::string& path) {
  return read_text_file(path, std::uint64_t{128} << 20, "corpus file");
}

Corpus load_corpus(const std::string& path, int64_t min_chars) {
  if (path.empty()) {
    Corpus c(builtin_text(), "built-in corpus");
    if (c.size() < min_chars)
      throw Error(
          fmt::format("the built-in corpus has {} characters, fewer than the {} one window needs "
                      "(seq_len + 1): use a smaller --seq-len or a data file",
                      c.size(), min_chars));
    return c;
  }
  const std::string text = read_corpus_text(path);
  if (text.empty()) throw Error(fmt::format("corpus file '{}' is empty", path));
  if (static_cast<int64_t>(text.size()) < min_chars)
    throw Error(fmt::format("corpus file '{}' has {} characters, fewer than the {} one window needs (seq_len + 1)",
                            path, text.size(), min_chars));
  return Corpus(text, path);
}

}  // namespace dualpipe
