// The syntax of structure specs (grammar in Structures.h).
#include <algorithm>
#include <cctype>
#include <string>
#include <utility>

#include "frontend/structures/LayerBuilder.h"
#include "frontend/structures/Structures.h"

namespace einjit {

namespace {

// Accepted spellings that are not canonical names.
const std::vector<std::pair<std::string, std::string>>& aliases() {
  static const std::vector<std::pair<std::string, std::string>> table = {
      {"low_rank", "lowrank"}, {"kronecker", "kron"}, {"einsum", "theta"}};
  return table;
}

std::string knownList() {
  std::string text;
  for (const std::string& name : structureNames()) text += (text.empty() ? "" : ", ") + name;
  return text;
}

std::size_t editDistance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
    }
  }
  return row[b.size()];
}

bool isIdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool isIdentChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool isValueChar(char c) { return isIdentChar(c) || c == '.' || c == '+' || c == '-'; }
bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// number := [+-]? ( digits [ '.' digits? ] | '.' digits ) ( [eE] [+-]? digits )?
bool isNumberLiteral(const std::string& text) {
  std::size_t i = 0;
  auto digits = [&] {
    const std::size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    return i - start;
  };
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
  std::size_t mantissa = digits();
  if (i < text.size() && text[i] == '.') {
    ++i;
    mantissa += digits();
  }
  if (mantissa == 0) return false;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == text.size();
}

// Scans the spec left to right, keeping the 1-based line and column of the next character.
class Parser {
 public:
  explicit Parser(const std::string& source) : source_(source) {}

  StructureSpec parse() {
    StructureSpec spec;
    spec.source = source_;
    skipSpace();
    spec.nameLoc = here();
    if (atEnd() || !isIdentStart(peek()))
      fail("expected a structure name (one of " + knownList() + "), found " + found());
    spec.name = canonicalName(identifier(), spec.nameLoc);
    skipSpace();
    if (atEnd() || peek() != '(')
      fail("expected '(' after '" + spec.name + "', found " + found());
    advance();
    skipSpace();
    if (!atEnd() && peek() == ')') {
      advance();
    } else {
      while (true) {
        spec.args.push_back(argument());
        skipSpace();
        if (!atEnd() && peek() == ',') {
          advance();
          continue;
        }
        if (!atEnd() && peek() == ')') {
          advance();
          break;
        }
        fail("expected ',' or ')' after the argument '" + spec.args.back().key + "', found " +
             found());
      }
    }
    skipSpace();
    if (!atEnd()) fail("expected the end of the spec after ')', found " + found());
    return spec;
  }

 private:
  bool atEnd() const { return pos_ >= source_.size(); }
  char peek() const { return source_[pos_]; }
  SourceLoc here() const { return {line_, column_}; }

  void advance() {
    if (source_[pos_] == '\n') {
      ++line_;
      column_ = 1;
    } else {
      ++column_;
    }
    ++pos_;
  }

  void skipSpace() {
    while (!atEnd() && isSpace(peek())) advance();
  }

  // How the next character is shown in a message.
  std::string found() const {
    if (atEnd()) return "the end of the spec";
    const auto byte = static_cast<unsigned char>(peek());
    if (byte >= 0x20 && byte < 0x7f) return std::string("'") + peek() + "'";
    static const char* hex = "0123456789abcdef";
    return std::string("byte 0x") + hex[byte >> 4] + hex[byte & 0xf];
  }

  [[noreturn]] void fail(const std::string& message) const { throw SpecError(source_, here(), message); }

  std::string identifier() {
    std::string text;
    while (!atEnd() && isIdentChar(peek())) {
      text += peek();
      advance();
    }
    return text;
  }

  std::string canonicalName(const std::string& name, SourceLoc loc) const {
    const std::vector<std::string>& names = structureNames();
    if (std::find(names.begin(), names.end(), name) != names.end()) return name;
    for (const auto& [alias, canonical] : aliases())
      if (alias == name) return canonical;
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::vector<std::string> candidates = names;
    for (const auto& [alias, canonical] : aliases()) candidates.push_back(alias);
    std::string message = "unknown structure '" + name + "'";
    if (const auto nearest = structures::nearestName(lower, candidates)) {
      // Suggest the canonical spelling of the nearest name or alias.
      std::string suggestion = *nearest;
      for (const auto& [alias, canonical] : aliases())
        if (alias == suggestion) suggestion = canonical;
      message += "; did you mean '" + suggestion + "'?";
    }
    message += " (known structures: " + knownList() + ")";
    throw SpecError(source_, loc, message);
  }

  StructureArg argument() {
    StructureArg arg;
    skipSpace();
    arg.keyLoc = here();
    if (atEnd() || !isIdentStart(peek()))
      fail("expected an argument name (such as in, out, rank) or ')', found " + found());
    arg.key = identifier();
    skipSpace();
    if (atEnd() || peek() != '=') {
      // A bare key means key=true.
      arg.value = "true";
      arg.valueLoc = arg.keyLoc;
      if (!atEnd() && peek() != ',' && peek() != ')')
        fail("expected '=', ',' or ')' after the argument name '" + arg.key + "', found " +
             found());
      return arg;
    }
    advance();
    skipSpace();
    arg.valueLoc = here();
    while (!atEnd() && isValueChar(peek())) {
      arg.value += peek();
      advance();
    }
    if (arg.value.empty())
      fail("expected a value (a number, true, false or a name) after '" + arg.key + "=', found " +
           found());
    const bool isIdentifier =
        isIdentStart(arg.value[0]) &&
        std::all_of(arg.value.begin(), arg.value.end(), [](char c) { return isIdentChar(c); });
    if (!isIdentifier && !isNumberLiteral(arg.value))
      throw SpecError(source_, arg.valueLoc,
                      "expected a number, true, false or a name as the value of '" + arg.key +
                          "', found '" + arg.value + "'");
    return arg;
  }

  const std::string& source_;
  std::size_t pos_ = 0;
  int line_ = 1;
  int column_ = 1;
};

}  // namespace

namespace structures {

std::optional<std::string> nearestName(const std::string& word,
                                       const std::vector<std::string>& candidates) {
  auto commonPrefix = [&](const std::string& candidate) {
    std::size_t n = 0;
    while (n < word.size() && n < candidate.size() && word[n] == candidate[n]) ++n;
    return n;
  };
  std::optional<std::string> best;
  std::size_t bestDistance = 0;
  for (const std::string& candidate : candidates) {
    const std::size_t distance = editDistance(word, candidate);
    // Ties go to the longer common prefix: "bt" suggests "btt", not "tt".
    if (!best || distance < bestDistance ||
        (distance == bestDistance && commonPrefix(candidate) > commonPrefix(*best))) {
      best = candidate;
      bestDistance = distance;
    }
  }
  // Only a plausible typo: at most 2 edits, and fewer edits than half the longer word.
  if (!best || bestDistance > 2 || 2 * bestDistance > std::max(word.size(), best->size()))
    return std::nullopt;
  return best;
}

}  // namespace structures

const std::vector<std::string>& structureNames() {
  static const std::vector<std::string> names = {"dense", "lowrank", "kron", "tt",
                                                 "monarch", "btt", "theta"};
  return names;
}

StructureSpec parseStructureSpec(const std::string& spec) { return Parser(spec).parse(); }

}  // namespace einjit
