// GPT-2's byte-level BPE tokenizer, read from the encoder.json and vocab.bpe files OpenAI
// published (scripts/fetch_data.sh puts them in data/gpt2/).
//
// encode(text):
//  1. splits the UTF-8 text into words with GPT-2's pre-tokenisation regex
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     (splitGpt2Words, implemented by hand: no regex engine involved);
//  2. maps each word's bytes to GPT-2's printable byte alphabet (bytes_to_unicode);
//  3. merges adjacent symbols by increasing merge rank (vocab.bpe order) until no ranked pair
//     is left, and looks the symbols up in encoder.json. Results are cached per word.
// decode(ids) concatenates the tokens' bytes; the result is UTF-8 whenever the ids came from
// encode (a partial sequence of ids may end inside a multi-byte character).
//
// Where this follows GPT-2 only approximately:
//  - \p{L} and \p{N} are Unicode 14's general categories L and N, complete for every script
//    (UnicodeTables.inc, generated from Python's unicodedata); characters assigned after
//    Unicode 14 count as neither.
//  - \s is Unicode's White_Space property (what Python's `regex` module, which GPT-2 used,
//    matches); JavaScript ports differ on U+0085 (not \s there) and U+FEFF (\s there).
//  - Input that is not valid UTF-8 is still encoded: each invalid byte becomes one character
//    that is neither letter, number nor space, so decode(encode(bytes)) == bytes for any bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace einjit::data {

// GPT-2's pre-tokenisation of `text` into words (views into `text`, in order, covering it).
std::vector<std::string_view> splitGpt2Words(std::string_view text);

class BpeTokenizer {
 public:
  // Reads and checks both files; UserError naming the file for a missing file, malformed JSON,
  // an id that is negative, duplicated or leaves a gap, a token that is not in the byte
  // alphabet, a byte without a token, or a merge line that is malformed or whose result has
  // no id.
  BpeTokenizer(const std::string& encoderJsonPath, const std::string& vocabBpePath);
  // <directory>/encoder.json and <directory>/vocab.bpe.
  static BpeTokenizer fromDirectory(const std::string& directory);

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

  int vocabSize() const;  // 50257 for GPT-2

  // Safe to call from several threads at once (the word cache is locked).
  std::vector<int32_t> encode(std::string_view text) const;
  // Throws UserError for an id outside [0, vocabSize()).
  std::string decode(std::span<const int32_t> ids) const;

  // The token's bytes (UserError for an unknown id).
  const std::string& tokenBytes(int32_t id) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace einjit::data
