// Internal to the reference executor: what each IR op does to float64 arrays, shared by the
// layer interpreter (ReferenceLayer.cpp), the kernel-program interpreter
// (ReferenceKernelProgram.cpp) and the host-side weight normalisation (WeightNorm.cpp), so that
// every op has exactly one implementation.
#pragma once

#include <cstdint>
#include <vector>

#include "frontend/einsum/BoundEinsum.h"
#include "frontend/structures/LayerIR.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/reference/ReferenceKernel.h"

namespace einjit::reference {

// The result of `op` on `inputs` (one array per op input); `rows` stands for kRows in a
// Reshape's shape. For a Contract, `einsum` (when not null) receives the bound equation, which
// its gradient needs. Throws UserError when the op does not fit its inputs; the message does not
// name the op (callers say where it happened).
Array evaluateOp(const ir::Op& op, const std::vector<const Array*>& inputs, int64_t rows,
                 BoundEinsum* einsum = nullptr);

// Result axis k = input axis perm[k] (perm must be a permutation of the axes).
Array permute(const Array& in, const std::vector<int>& perm);
std::vector<int> inversePermutation(const std::vector<int>& perm);
// `in` with `axis` cut to, or zero-padded at its end up to, `size` entries.
Array resizeAxis(const Array& in, int axis, int64_t size);

// Weight normalisation W~ = gamma * W / max(1, RMS(W) / sigma), RMS(W) = sqrt(mean(W^2) + eps),
// with op.normSigma and op.normEps; gamma is 1 when `gamma` is null. Throws UserError unless
// sigma > 0, eps >= 0 (both finite) and gamma holds one element.
Array weightNormForward(const ir::Op& op, const Array& w, const Array* gamma);

struct WeightNormGradient {
  Array dw;
  double dgamma = 0;  // meaningful when a gamma was given
};
// Gradients of sum(W~ * gradient) with respect to W and gamma; `gradient` has W's shape.
WeightNormGradient weightNormBackward(const ir::Op& op, const Array& w, const Array* gamma,
                                      const Array& gradient);

// Throws UserError unless `params` holds exactly the layer's parameters, by name, with their
// declared shapes.
void checkLayerParams(const ir::LayerProgram& program, const TensorMap& params);

}  // namespace einjit::reference
