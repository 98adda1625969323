#include "models/data/BpeTokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "einjit/error.h"

namespace einjit::data {

namespace {

struct CodePointRange {
  char32_t lo, hi;
};

#include "models/data/UnicodeTables.inc"

bool inRanges(std::span<const CodePointRange> ranges, char32_t cp) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                             [](char32_t c, const CodePointRange& r) { return c < r.lo; });
  return it != ranges.begin() && cp <= std::prev(it)->hi;
}

// A byte that is not part of a valid UTF-8 sequence; classified as neither letter, number
// nor space.
constexpr char32_t kInvalidByte = 0xFFFFFFFF;

bool isLetter(char32_t cp) { return inRanges(kLetterRanges, cp); }
bool isNumber(char32_t cp) { return inRanges(kNumberRanges, cp); }
// Unicode's White_Space property.
bool isSpace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}
bool isOther(char32_t cp) { return !isSpace(cp) && !isLetter(cp) && !isNumber(cp); }

// Decodes one strict UTF-8 character at text[pos] (no overlong forms, surrogates or code
// points above U+10FFFF); returns its code point and byte length, or (kInvalidByte, 1).
std::pair<char32_t, std::size_t> decodeUtf8(std::string_view text, std::size_t pos) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char b0 = byte(pos);
  if (b0 < 0x80) return {b0, 1};
  std::size_t length = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  char32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {kInvalidByte, 1};
  }
  if (pos + length > text.size()) return {kInvalidByte, 1};
  for (std::size_t i = 1; i < length; ++i) {
    const unsigned char b = byte(pos + i);
    if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return {kInvalidByte, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, length};
}

std::string encodeUtf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

// GPT-2's bytes_to_unicode: the printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for
// themselves; the other 68 bytes map, in byte order, to U+0100, U+0101, ...
std::array<char32_t, 256> byteAlphabet() {
  std::array<char32_t, 256> symbols{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    symbols[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return symbols;
}

std::string readFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw UserError(
        fmt::format("cannot open the GPT-2 {} '{}' (run scripts/fetch_data.sh to "
                    "download it)",
                    what, path));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) throw UserError(fmt::format("cannot read '{}'", path));
  return contents.str();
}

uint64_t pairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Entries above this many are dropped at once: a bound on memory for unbounded input.
constexpr std::size_t kMaxCachedWords = 1 << 18;

}  // namespace

std::vector<std::string_view> splitGpt2Words(std::string_view text) {
  struct Char {
    char32_t cp;
    std::size_t offset;
  };
  std::vector<Char> chars;
  chars.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    const auto [cp, length] = decodeUtf8(text, pos);
    chars.push_back({cp, pos});
    pos += length;
  }
  const std::size_t n = chars.size();
  const auto offsetOf = [&](std::size_t i) { return i < n ? chars[i].offset : text.size(); };
  const auto runEnd = [&](std::size_t i, bool (*inClass)(char32_t)) {
    while (i < n && inClass(chars[i].cp)) ++i;
    return i;
  };

  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < n) {
    std::size_t end = i;
    const char32_t c = chars[i].cp;
    const auto next = [&](std::size_t k) { return i + k < n ? chars[i + k].cp : 0; };
    if (c == U'\'' && (next(1) == U's' || next(1) == U't' || next(1) == U'm' || next(1) == U'd')) {
      end = i + 2;  // 's 't 'm 'd
    } else if (c == U'\'' &&
               ((next(1) == U'r' && next(2) == U'e') || (next(1) == U'v' && next(2) == U'e') ||
                (next(1) == U'l' && next(2) == U'l'))) {
      end = i + 3;  // 're 've 'll
    } else {
      // " ?X+" for X = letters, numbers, others: one optional leading ASCII space.
      const std::size_t start = (c == U' ') ? i + 1 : i;
      const char32_t first = start < n ? chars[start].cp : U' ';
      if (isLetter(first)) {
        end = runEnd(start, isLetter);
      } else if (isNumber(first)) {
        end = runEnd(start, isNumber);
      } else if (!isSpace(first)) {
        end = runEnd(start, isOther);
      } else {
        // c is whitespace. "\s+(?!\S)": the whole run if it ends the text, else the run less
        // its last character (which then leads the next word); "\s+" when that leaves nothing.
        const std::size_t run = runEnd(i, isSpace);
        end = (run == n || run - i == 1) ? run : run - 1;
      }
    }
    words.push_back(text.substr(offsetOf(i), offsetOf(end) - offsetOf(i)));
    i = end;
  }
  return words;
}

struct BpeTokenizer::State {
  std::vector<std::string> tokenBytes;  // id -> raw bytes
  std::array<int32_t, 256> byteIds{};   // single-byte token ids
  // (left id, right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;

  mutable std::mutex cacheMutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  std::vector<int32_t> encodeWord(std::string_view word) const;
};

std::vector<int32_t> BpeTokenizer::State::encodeWord(std::string_view word) const {
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  for (char c : word) symbols.push_back(byteIds[static_cast<unsigned char>(c)]);
  std::vector<int32_t> merged;
  while (symbols.size() > 1) {
    // The adjacent pair with the lowest rank; then merge each of its occurrences, left to right.
    int32_t bestRank = std::numeric_limits<int32_t>::max();
    int32_t left = -1, right = -1, result = -1;
    for (std::size_t k = 0; k + 1 < symbols.size(); ++k) {
      auto it = merges.find(pairKey(symbols[k], symbols[k + 1]));
      if (it != merges.end() && it->second.first < bestRank) {
        bestRank = it->second.first;
        left = symbols[k], right = symbols[k + 1], result = it->second.second;
      }
    }
    if (result < 0) break;
    merged.clear();
    for (std::size_t k = 0; k < symbols.size(); ++k) {
      if (k + 1 < symbols.size() && symbols[k] == left && symbols[k + 1] == right) {
        merged.push_back(result);
        ++k;
      } else {
        merged.push_back(symbols[k]);
      }
    }
    symbols.swap(merged);
  }
  return symbols;
}

BpeTokenizer::BpeTokenizer(const std::string& encoderJsonPath, const std::string& vocabBpePath)
    : state_(std::make_unique<State>()) {
  const std::array<char32_t, 256> alphabet = byteAlphabet();
  std::unordered_map<char32_t, unsigned char> byteOfSymbol;
  for (int b = 0; b < 256; ++b) byteOfSymbol[alphabet[b]] = static_cast<unsigned char>(b);

  // encoder.json: {"token in the byte alphabet": id, ...}, ids 0..N-1.
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(readFile(encoderJsonPath, "vocabulary (encoder.json)"));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("'{}' is not valid JSON: {}", encoderJsonPath, e.what()));
  }
  if (!encoder.is_object() || encoder.empty()) {
    throw UserError(
        fmt::format("'{}' must be a non-empty JSON object mapping tokens to ids", encoderJsonPath));
  }
  if (encoder.size() > static_cast<std::size_t>(std::numeric_limits<int32_t>::max())) {
    throw UserError(fmt::format("'{}' has too many tokens", encoderJsonPath));
  }
  const auto count = static_cast<int64_t>(encoder.size());
  std::unordered_map<std::string, int32_t> idOfToken;
  idOfToken.reserve(encoder.size());
  state_->tokenBytes.assign(encoder.size(), std::string());
  std::vector<bool> seen(encoder.size(), false);
  for (const auto& [token, value] : encoder.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= count) {
      throw UserError(
          fmt::format("'{}': the id of token \"{}\" is {}, expected an integer in "
                      "[0, {}) (ids must number the tokens densely)",
                      encoderJsonPath, token, value.dump(), count));
    }
    const auto id = static_cast<int32_t>(value.get<int64_t>());
    if (seen[id]) {
      throw UserError(
          fmt::format("'{}': id {} is used by more than one token", encoderJsonPath, id));
    }
    seen[id] = true;
    std::string bytes;
    for (std::size_t pos = 0; pos < token.size();) {
      const auto [cp, length] = decodeUtf8(token, pos);
      auto it = byteOfSymbol.find(cp);
      if (it == byteOfSymbol.end()) {
        throw UserError(
            fmt::format("'{}': token \"{}\" (id {}) has a character outside GPT-2's "
                        "byte alphabet",
                        encoderJsonPath, token, id));
      }
      bytes.push_back(static_cast<char>(it->second));
      pos += length;
    }
    if (bytes.empty()) {
      throw UserError(fmt::format("'{}': id {} has an empty token", encoderJsonPath, id));
    }
    state_->tokenBytes[id] = std::move(bytes);
    idOfToken.emplace(token, id);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = idOfToken.find(encodeUtf8(alphabet[b]));
    if (it == idOfToken.end()) {
      throw UserError(fmt::format("'{}' has no token for byte 0x{:02X}", encoderJsonPath, b));
    }
    state_->byteIds[b] = it->second;
  }

  // vocab.bpe: "#version: ..." and then one merge "left right" per line, by increasing rank.
  const std::string merges = readFile(vocabBpePath, "merges (vocab.bpe)");
  std::istringstream lines(merges);
  std::string line;
  if (!std::getline(lines, line) || line.rfind("#version", 0) != 0) {
    throw UserError(
        fmt::format("'{}' must start with a '#version' line (GPT-2's vocab.bpe)", vocabBpePath));
  }
  int32_t rank = 0;
  for (int64_t lineNo = 2; std::getline(lines, line); ++lineNo) {
    std::istringstream fields(line);
    std::string left, right, extra;
    if (!(fields >> left)) continue;  // blank line (the file ends with a newline)
    if (!(fields >> right) || (fields >> extra)) {
      throw UserError(
          fmt::format("'{}' line {}: expected a merge of two tokens separated by a "
                      "space, got \"{}\"",
                      vocabBpePath, lineNo, line));
    }
    const auto lookup = [&](const std::string& token, const char* role) {
      auto it = idOfToken.find(token);
      if (it == idOfToken.end()) {
        throw UserError(fmt::format("'{}' line {}: {} \"{}\" is not in '{}'", vocabBpePath, lineNo,
                                    role, token, encoderJsonPath));
      }
      return it->second;
    };
    const int32_t leftId = lookup(left, "token");
    const int32_t rightId = lookup(right, "token");
    const int32_t mergedId = lookup(left + right, "the merged token");
    // As in GPT-2 (a dict built from the list), a repeated merge takes its later rank.
    state_->merges[pairKey(leftId, rightId)] = {rank++, mergedId};
  }
}

BpeTokenizer BpeTokenizer::fromDirectory(const std::string& directory) {
  return BpeTokenizer(directory + "/encoder.json", directory + "/vocab.bpe");
}

BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

int BpeTokenizer::vocabSize() const { return static_cast<int>(state_->tokenBytes.size()); }

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  for (std::string_view word : splitGpt2Words(text)) {
    {
      std::lock_guard<std::mutex> lock(state_->cacheMutex);
      auto it = state_->cache.find(std::string(word));
      if (it != state_->cache.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    std::vector<int32_t> wordIds = state_->encodeWord(word);
    ids.insert(ids.end(), wordIds.begin(), wordIds.end());
    std::lock_guard<std::mutex> lock(state_->cacheMutex);
    if (state_->cache.size() >= kMaxCachedWords) state_->cache.clear();
    state_->cache.emplace(std::string(word), std::move(wordIds));
  }
  return ids;
}

const std::string& BpeTokenizer::tokenBytes(int32_t id) const {
  if (id < 0 || id >= vocabSize()) {
    throw UserError(
        fmt::format("token id {} is outside the BPE vocabulary [0, {})", id, vocabSize()));
  }
  return state_->tokenBytes[id];
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (int32_t id : ids) text += tokenBytes(id);
  return text;
}

}  // namespace einjit::data
