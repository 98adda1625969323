#include "runtime/reference/WeightNorm.h"

#include <map>
#include <optional>
#include <string>
#include <utility>

#include "compiler/kernel/KernelProgram.h"
#include "einjit/error.h"
#include "runtime/reference/ReferenceKernel.h"
#include "runtime/reference/ReferenceOps.h"

namespace einjit {
namespace {

using reference::Array;

// The parameter whose value is `id` (kernelParameterInputs has checked that there is one).
const ir::Parameter& parameterOfValue(const ir::LayerProgram& layer, ir::ValueId id) {
  for (const ir::Parameter& param : layer.params)
    if (param.value == id) return param;
  throw UserError("layer program '" + layer.spec + "': value id " + std::to_string(id) +
                  " is not a parameter");
}

// The gain of a WeightNorm op, or nullopt when it has none.
std::optional<Array> gainOf(const ir::LayerProgram& layer, const TensorMap& params,
                            const ir::Op& op) {
  if (op.inputs.size() < 2) return std::nullopt;
  return reference::toArray(params.at(parameterOfValue(layer, op.inputs[1]).name));
}

}  // namespace

std::vector<Tensor> kernelParameterTensors(const ir::LayerProgram& layer, const TensorMap& params,
                                           DType dtype) {
  const std::vector<KernelParameterInput> inputs = kernelParameterInputs(layer);
  reference::checkLayerParams(layer, params);
  std::vector<Tensor> tensors;
  for (const KernelParameterInput& input : inputs) {
    const Tensor& param = params.at(layer.params[input.param].name);
    if (input.weightNormOp < 0) {
      tensors.push_back(param.to(dtype));
      continue;
    }
    const ir::Op& op = layer.ops[input.weightNormOp];
    const std::optional<Array> gain = gainOf(layer, params, op);
    try {
      tensors.push_back(reference::toTensor(
          reference::weightNormForward(op, reference::toArray(param), gain ? &*gain : nullptr),
          dtype));
    } catch (const UserError& error) {
      throw UserError("layer program '" + layer.spec + "', parameter '" +
                      layer.params[input.param].name + "': " + error.what());
    }
  }
  return tensors;
}

TensorMap layerParameterGradients(const ir::LayerProgram& layer, const TensorMap& params,
                                  const std::vector<const Tensor*>& kernelGradients, DType dtype) {
  const std::vector<KernelParameterInput> inputs = kernelParameterInputs(layer);
  reference::checkLayerParams(layer, params);
  if (kernelGradients.size() != inputs.size())
    throw UserError("layer program '" + layer.spec + "': " + std::to_string(inputs.size()) +
                    " kernel parameter gradients expected, got " +
                    std::to_string(kernelGradients.size()));

  // A parameter that the kernel takes as it is, once, and that is no weight norm's gain, has the
  // kernel's gradient as its own: it is copied in `dtype`, not summed in the float64 arrays
  // below (whose allocation and conversions took a dense layer at d = 4096 ~0.5 s a call).
  std::map<std::string, int> uses;
  for (const KernelParameterInput& input : inputs) {
    uses[layer.params[input.param].name] += input.weightNormOp < 0 ? 1 : 2;
    const ir::Op* norm = input.weightNormOp < 0 ? nullptr : &layer.ops[input.weightNormOp];
    if (norm != nullptr && norm->inputs.size() >= 2) uses[parameterOfValue(layer, norm->inputs[1]).name] += 2;
  }
  TensorMap result;
  std::map<std::string, Array> gradients;
  for (const ir::Parameter& param : layer.params)
    if (uses[param.name] != 1) gradients[param.name] = reference::zeros(param.shape);
  auto accumulate = [](Array& total, const Array& contribution) {
    for (std::size_t i = 0; i < total.data.size(); ++i) total.data[i] += contribution.data[i];
  };
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const ir::Parameter& param = layer.params[inputs[k].param];
    const Tensor* gradient = kernelGradients[k];
    if (gradient == nullptr || gradient->shape() != param.shape)
      throw UserError("the gradient for parameter '" + param.name + "' of " + layer.spec +
                      (gradient == nullptr ? " is missing"
                                           : " has shape " + shapeToString(gradient->shape()) +
                                                 ", expected " + shapeToString(param.shape)));
    if (uses[param.name] == 1) {
      result[param.name] = gradient->to(dtype);
      continue;
    }
    if (inputs[k].weightNormOp < 0) {
      accumulate(gradients[param.name], reference::toArray(*gradient));
      continue;
    }
    const ir::Op& op = layer.ops[inputs[k].weightNormOp];
    const std::optional<Array> gain = gainOf(layer, params, op);
    reference::WeightNormGradient chained;
    try {
      chained =
          reference::weightNormBackward(op, reference::toArray(params.at(param.name)),
                                        gain ? &*gain : nullptr, reference::toArray(*gradient));
    } catch (const UserError& error) {
      throw UserError("layer program '" + layer.spec + "', parameter '" + param.name +
                      "': " + error.what());
    }
    accumulate(gradients[param.name], chained.dw);
    if (gain) gradients[parameterOfValue(layer, op.inputs[1]).name].data[0] += chained.dgamma;
  }

  for (auto& [name, gradient] : gradients) result[name] = reference::toTensor(gradient, dtype);
  return result;
}

}  // namespace einjit
