#include "models/data/CharTokenizer.h"

#include <fmt/format.h>

#include "einjit/error.h"

namespace einjit::data {

namespace {

// "'x'" for printable ASCII, "'\t'"-style escapes for common controls, "byte 0xNN" otherwise
// (a byte of a multi-byte UTF-8 character, say).
std::string describeChar(char c) {
  const auto byte = static_cast<unsigned char>(c);
  switch (c) {
    case '\t':
      return "'\\t' (0x09)";
    case '\r':
      return "'\\r' (0x0D)";
    default:
      break;
  }
  if (byte >= 32 && byte <= 126) return fmt::format("'{}'", c);
  return fmt::format("byte 0x{:02X}", byte);
}

}  // namespace

std::vector<int32_t> CharTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  int64_t line = 1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!inVocabulary(c)) {
      throw UserError(fmt::format(
          "character {} at offset {} (line {}) is not in the 96-symbol character vocabulary "
          "(newline and printable ASCII 32..126)",
          describeChar(c), i, line));
    }
    if (c == '\n') {
      ids.push_back(0);
      ++line;
    } else {
      ids.push_back(static_cast<int32_t>(c) - 31);
    }
  }
  return ids;
}

std::string CharTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= kVocabSize) {
      throw UserError(
          fmt::format("token id {} at position {} is outside the character vocabulary "
                      "[0, {})",
                      id, i, kVocabSize));
    }
    text.push_back(id == 0 ? '\n' : static_cast<char>(id + 31));
  }
  return text;
}

}  // namespace einjit::data
