// The syntax of a classic (numpy) einsum, as written, before any operand shapes are known.
// "ab,b...->a..." parses to two operands and an explicit output; labels keep their location
// so later errors (a size mismatch found when binding shapes) can point at the column.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "einjit/error.h"

namespace einjit {

// One subscript of an operand: a letter label (a-z, A-Z) or the ellipsis "...".
struct Subscript {
  bool isEllipsis = false;
  char label = 0;  // valid when !isEllipsis
  SourceLoc loc;
};

struct OperandSubscripts {
  std::vector<Subscript> subscripts;  // empty for a scalar operand
  SourceLoc loc;                      // where the operand's term starts
};

struct EinsumAST {
  std::string source;                     // the spec exactly as given
  std::vector<OperandSubscripts> inputs;  // at least one
  std::optional<OperandSubscripts> output;  // nullopt: implicit output ("ab,bc")
};

// Parses the syntax of a classic einsum. Spaces are allowed anywhere between tokens.
// Throws SpecError on malformed input (bad character, stray '.', missing operand, two ellipses
// in one term, "->" twice, ...). Does not check the output against the inputs: bindEinsum does.
EinsumAST parseEinsum(const std::string& spec);

}  // namespace einjit
