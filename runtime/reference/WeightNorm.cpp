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

  std::map<std::string, Array> gradients;
  for (const ir::Parameter& param : layer.params)
    gradients[param.name] = reference::zeros(param.shape);
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

  TensorMap result;
  for (auto& [name, gradient] : gradients) result[name] = reference::toTensor(gradient, dtype);
  return result;
}

}  // namespace einjit
