// The character-level tokenizer of the char-level GPT: 96 symbols, '\n' = 0 and the printable
// ASCII characters 32..126 (' ' .. '~') = 1..95, in code order.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace einjit::data {

class CharTokenizer {
 public:
  static constexpr int kVocabSize = 96;

  int vocabSize() const { return kVocabSize; }

  // Throws UserError naming the first character outside the vocabulary (as a quoted character
  // or a hex byte) with its byte offset and line.
  std::vector<int32_t> encode(std::string_view text) const;
  // Throws UserError for an id outside [0, 96).
  std::string decode(std::span<const int32_t> ids) const;

  static bool inVocabulary(char c) { return c == '\n' || (c >= 32 && c <= 126); }
};

}  // namespace einjit::data
