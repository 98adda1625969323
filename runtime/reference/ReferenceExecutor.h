// The reference executor: plain, obviously-correct loops that run any classic einsum and any
// layer IR on the CPU. It is the oracle every compiled target is tested against, so clarity wins
// over speed. Storage is float32 or float64; every sum is accumulated in double.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "compiler/planner/ContractionPlan.h"
#include "einjit/tensor.h"
#include "frontend/einsum/BoundEinsum.h"
#include "frontend/structures/LayerIR.h"

namespace einjit {

using TensorMap = std::map<std::string, Tensor>;

// Runs `einsum` on `operands` (shapes as bound) pairwise in the order of `plan`; the result has
// `dtype`. Size-1 dimensions broadcast as in numpy.
Tensor referenceEinsum(const BoundEinsum& einsum, const ContractionPlan& plan,
                       const std::vector<const Tensor*>& operands, DType dtype);

// Convenience: parse, bind, plan and run. dtype is float64 if any operand is float64.
Tensor referenceEinsum(const std::string& spec, const std::vector<const Tensor*>& operands);

// Checks that x is (N, dIn) for the layer and returns N (UserError otherwise).
int64_t checkLayerInput(const ir::LayerProgram& program, const Tensor& x);

// The dtype of a layer's results: float64 if x, dy (may be null) or any parameter is float64,
// else float32. Every executor follows this rule.
DType layerResultDType(const TensorMap& params, const Tensor& x, const Tensor* dy);

// Forward pass of a layer: x has shape (N, dIn); params holds one tensor per Parameter, by name,
// with the declared shapes (UserError otherwise). All tensors must share one dtype.
Tensor referenceLayerForward(const ir::LayerProgram& program, const TensorMap& params,
                             const Tensor& x);

struct LayerGradients {
  Tensor y;        // the forward output
  Tensor dx;       // d sum(y * dy) / dx
  TensorMap dparams;  // by parameter name
};

// Forward and reverse pass: gradients of sum(y * dy) with respect to x and every parameter.
LayerGradients referenceLayerBackward(const ir::LayerProgram& program, const TensorMap& params,
                                      const Tensor& x, const Tensor& dy);

// muP initialisation: each parameter ~ N(0, initStd^2) (zero if zeroLast and
// zeroInitIfResidual), scalar gains = 1. Deterministic for a seed on every platform.
TensorMap initLayerParams(const ir::LayerProgram& program, uint64_t seed, DType dtype,
                          bool zeroLast = false);

}  // namespace einjit
