// Naive loops: each supported structure written straight from the formulas of docs/layouts.md,
// one plain loop nest per formula with the summed index innermost, float32 throughout. They are
// the "what you would write by hand" baseline of the benchmarks and an oracle for einjit's output
// that shares no code with the IR, the planner or the reference executor.
#pragma once

#include "frontend/structures/LayerIR.h"
#include "runtime/reference/ReferenceExecutor.h"

namespace einjit::bench {

// True for dense, lowrank, monarch and 2-core btt layers without weight normalisation.
bool hasNaiveLoops(const ir::LayerProgram& layer);

// y for x (N, dIn); params and x are float32. Throws UserError if !hasNaiveLoops(layer).
Tensor naiveForward(const ir::LayerProgram& layer, const TensorMap& params, const Tensor& x);

// y, and the gradients of sum(y * dy) with respect to x and every parameter.
LayerGradients naiveBackward(const ir::LayerProgram& layer, const TensorMap& params,
                             const Tensor& x, const Tensor& dy);

}  // namespace einjit::bench
