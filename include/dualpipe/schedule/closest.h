#pragma once
// The known name closest to a misspelt one, for "did you mean ...?" in
// errors (JSON fields, command-line options). Pure functions.
#include <cstddef>
#include <string>
#include <vector>

namespace dualpipe {

// Levenshtein distance: single-character insertions, deletions and substitutions.
std::size_t edit_distance(const std::string& a, const std::string& b);

// The name in `known` nearest to `word`, if it is within `max_edits`
// edits (the first of equals); "" otherwise.
std::string closest_word(const std::string& word, const std::vector<std::string>& known, std::size_t max_edits = 3);

}  // namespace dualpipe
