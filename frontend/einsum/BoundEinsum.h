// A classic einsum bound to concrete operand shapes: every label (including the dimensions an
// ellipsis stands for) becomes a dense label id with one size, the output is explicit, and
// every dimension of every operand is known. Executors and the planner work on this form.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "einjit/tensor.h"
#include "frontend/einsum/EinsumAST.h"

namespace einjit {

struct BoundEinsum {
  std::vector<int64_t> labelSize;   // label id -> size (the broadcast size, max over operands)
  std::vector<std::string> labelName;  // label id -> "a", "B", or "...0" for ellipsis dims
  std::vector<std::vector<int>> inputLabels;  // operand -> per dimension, the label id
  std::vector<Shape> inputShapes;             // operand -> its shape as given (dims may be 1
                                              // where the label is larger: numpy broadcasting)
  std::vector<int> outputLabels;              // output dims, in order
  Shape outputShape;

  int numLabels() const { return static_cast<int>(labelSize.size()); }
  // "ab,bc->ac" with ellipsis dims spelled out, for messages and cache keys.
  std::string canonical() const;
};

// Binds parsed subscripts to operand shapes, following numpy.einsum exactly:
// - implicit output: labels that appear exactly once, in ASCII order (upper case first), with
//   the broadcast ellipsis dims first;
// - a label's size is the same in every place it appears, except that a size-1 dimension
//   broadcasts against a larger one; ellipsis dims broadcast right-aligned, as in numpy;
// - repeated labels inside one operand take a diagonal; labels absent from the output are summed.
// Throws SpecError pointing at the offending label for: wrong operand count, rank mismatch,
// size mismatch, an output label that no input has, a label repeated in the output. As in
// numpy, "..." in the output when no input has one stands for zero dimensions.
BoundEinsum bindEinsum(const EinsumAST& ast, const std::vector<Shape>& shapes);

}  // namespace einjit
