// Host-side weight normalisation around kernel programs. forwardKernel / backwardKernel take the
// normalised weights as inputs (compiler/kernel/KernelProgram.h); these helpers make those inputs
// from a layer's parameters and carry the kernel's gradients back to every parameter, with the
// same arithmetic as referenceLayerForward / referenceLayerBackward (one implementation:
// runtime/reference/ReferenceOps.h).
#pragma once

#include <vector>

#include "einjit/tensor.h"
#include "frontend/structures/LayerIR.h"
#include "runtime/reference/ReferenceExecutor.h"

namespace einjit {

// The tensors for the parameter inputs of forwardKernel(layer) / backwardKernel(layer), in
// kernelParameterInputs order: the normalised weight where the layer normalises a parameter,
// else the parameter itself; in `dtype`. `params` as for referenceLayerForward (UserError
// otherwise).
std::vector<Tensor> kernelParameterTensors(const ir::LayerProgram& layer, const TensorMap& params,
                                           DType dtype);

// The gradients of every parameter of `layer`, scalar gains included, by name and in `dtype`,
// from `kernelGradients`: the gradients with respect to the kernel's parameter inputs, in
// kernelParameterInputs order (the outputs of backwardKernel after dx). Equals the dparams of
// referenceLayerBackward for the same x and dy.
TensorMap layerParameterGradients(const ir::LayerProgram& layer, const TensorMap& params,
                                  const std::vector<const Tensor*>& kernelGradients, DType dtype);

}  // namespace einjit
