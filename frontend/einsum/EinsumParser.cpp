#include <cstddef>
#include <string>

#include "frontend/einsum/EinsumAST.h"

namespace einjit {

namespace {

bool isLabel(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

bool isWhitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// How a character is shown in a message: 'x' when printable ASCII, its byte value otherwise.
std::string quoted(char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (byte >= 0x20 && byte < 0x7f) return std::string("'") + c + "'";
  static const char* hex = "0123456789abcdef";
  return std::string("byte 0x") + hex[byte >> 4] + hex[byte & 0xf];
}

// Scans the spec left to right, one character at a time, keeping the 1-based line and column.
class Parser {
 public:
  explicit Parser(const std::string& spec) : spec_(spec) {}

  EinsumAST parse() {
    EinsumAST ast;
    ast.source = spec_;
    ast.inputs.push_back(parseTerm(/*isOutput=*/false));
    while (!atEnd() && peek() == ',') {
      advance();
      ast.inputs.push_back(parseTerm(/*isOutput=*/false));
    }
    if (atEnd()) return ast;
    // parseTerm stops only at ',', '-' or the end: this is the '-' of "->".
    const SourceLoc arrow = here();
    expectArrow();
    ast.output = parseTerm(/*isOutput=*/true);
    if (atEnd()) return ast;
    if (peek() == ',')
      fail("expected a letter, '...' or the end of the spec: the output after '->' is a single "
           "term, so ',' cannot appear there");
    if (pos_ + 1 < spec_.size() && spec_[pos_ + 1] == '>')
      fail("expected a letter, '...' or the end of the spec: '->' may appear only once (the "
           "first is at " + describe(arrow) + ")");
    fail("unexpected '-' in the output: expected a letter, '...' or the end of the spec");
  }

 private:
  bool atEnd() const { return pos_ >= spec_.size(); }
  char peek() const { return spec_[pos_]; }

  void advance() {
    if (spec_[pos_] == '\n') {
      ++line_;
      column_ = 1;
    } else {
      ++column_;
    }
    ++pos_;
  }

  SourceLoc here() const { return SourceLoc{line_, column_}; }

  [[noreturn]] void fail(const std::string& message) const { fail(here(), message); }
  [[noreturn]] void fail(SourceLoc loc, const std::string& message) const {
    throw SpecError(spec_, loc, message);
  }

  static std::string describe(SourceLoc loc) {
    return "line " + std::to_string(loc.line) + ", column " + std::to_string(loc.column);
  }

  void skipWhitespace() {
    while (!atEnd() && isWhitespace(peek())) advance();
  }

  void expectArrow() {
    const SourceLoc dash = here();
    advance();  // the '-'
    if (atEnd() || peek() != '>')
      fail(dash, "expected '->': '-' must be followed directly by '>'");
    advance();
  }

  // One operand or output term: letters, at most one "...", whitespace anywhere between them.
  // Stops (without consuming) at ',', '-' or the end of the spec.
  OperandSubscripts parseTerm(bool isOutput) {
    OperandSubscripts term;
    skipWhitespace();
    term.loc = here();
    std::optional<SourceLoc> ellipsisLoc;
    while (!atEnd()) {
      const char c = peek();
      if (c == ',' || c == '-') break;
      if (isWhitespace(c)) {
        advance();
      } else if (isLabel(c)) {
        term.subscripts.push_back(Subscript{false, c, here()});
        advance();
      } else if (c == '.') {
        const SourceLoc start = here();
        parseEllipsis(start);
        if (ellipsisLoc)
          fail(start, "expected a letter or the end of the term: a term may contain at most one "
                      "'...' (the first is at " + describe(*ellipsisLoc) + ")");
        ellipsisLoc = start;
        term.subscripts.push_back(Subscript{true, 0, start});
      } else if (c == '>') {
        fail("unexpected '>': the output arrow is written '->'");
      } else {
        fail("invalid character " + quoted(c) + ": expected a letter (a-z, A-Z), '...'" +
             (isOutput ? std::string(" or the end of the spec") : std::string(", ',' or '->'")));
      }
    }
    return term;
  }

  // Consumes "..." starting at `start`; any shorter run of dots is an error at its first dot.
  void parseEllipsis(SourceLoc start) {
    for (int dot = 0; dot < 3; ++dot) {
      if (atEnd() || peek() != '.')
        fail(start, "'.' is not part of an ellipsis: expected '...' (three dots in a row)");
      advance();
    }
  }

  const std::string& spec_;
  std::size_t pos_ = 0;
  int line_ = 1;
  int column_ = 1;
};

}  // namespace

EinsumAST parseEinsum(const std::string& spec) { return Parser(spec).parse(); }

}  // namespace einjit
