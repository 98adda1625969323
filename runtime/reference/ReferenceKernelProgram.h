// The reference interpreter of kernel programs (compiler/kernel/KernelProgram.h): the oracle for
// compiled kernels. Plain loops over float64, with the op semantics of the layer interpreter.
#pragma once

#include <cstdint>
#include <vector>

#include "compiler/kernel/KernelProgram.h"
#include "einjit/tensor.h"

namespace einjit {

// Runs `program` with `rows` for the row axis. `inputs`: one tensor per program input, in order,
// with the declared shape (kRows replaced by `rows`), of any dtype. Returns the outputs in order,
// in program.dtype. Throws UserError for a malformed program or mismatching inputs.
std::vector<Tensor> referenceRunKernel(const KernelProgram& program, int64_t rows,
                                       const std::vector<const Tensor*>& inputs);

}  // namespace einjit
