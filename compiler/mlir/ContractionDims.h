// The iteration space of one Contract op of a kernel program, as the code generator sees it.
// No MLIR types: MLIRGen turns this into a linalg.generic (loop dims, indexing maps, operand
// reshapes), and it is plain enough to unit-test on its own.
//
// Labels that always travel together (adjacent, in the same order, in every term that has
// them, never broadcast, never repeated) are coalesced into one loop dim: BTT's 'zab,abcr->zacr'
// becomes 'zab,abq->zaq' with q = c*r = 128, so the innermost loop is long enough to fill vector
// registers. Operands are viewed through collapse_shape accordingly (free: all buffers are
// contiguous row-major).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "einjit/tensor.h"

namespace einjit::cpu {

struct LoopDim {
  std::string labels;    // the equation labels this dim stands for, outermost first
  int64_t size = 0;      // product of the label sizes; unused when dynamic
  bool dynamic = false;  // the row axis (its extent is only known at run time)
  bool reduction = false;
};

// How one operand (or the result) is indexed by the loop dims.
struct OperandAccess {
  // Reassociation from the operand's declared dims to its collapsed dims: collapsed dim k is
  // the product of declared dims groups[k] (consecutive).
  std::vector<std::vector<int>> groups;
  // Per collapsed dim: the loop dim that indexes it, or -1 for a size-1 dim that broadcasts
  // (always index 0). A loop dim may appear twice in one operand (a diagonal).
  std::vector<int> loopDim;
  Shape collapsedShape;  // kRows where dynamic

  // True if some collapsed dim stands for more than one declared dim.
  bool mergesDims() const;
};

struct ContractionDims {
  // Output dims first (in output order), then reduction dims in order of first appearance.
  std::vector<LoopDim> loops;
  std::vector<OperandAccess> inputs;
  OperandAccess output;
  int rowLoop = -1;  // the dynamic loop dim, if any
};

// Analyses `equation` ("ab,bc->ac": letters only, one term per input, explicit "->") for
// operands and a result of the given shapes, where kRows marks the dynamic row extent.
// Throws UserError (SpecError for syntax) when the equation does not fit the shapes: wrong
// term count or rank, inconsistent label sizes (size-1 dims broadcast, as in numpy), an output
// label missing from the inputs or repeated, an ellipsis, or a static size where the row axis is.
ContractionDims analyzeContraction(const std::string& equation, const std::vector<Shape>& inputShapes,
                                   const Shape& outputShape);

}  // namespace einjit::cpu
