// The reference interpreter of a layer program: forward, and reverse mode for sum(y * dy).
//
// Dtypes: every value is computed in double. The results (y, dx, every dparam) are float64 if
// any given tensor (x, dy or a parameter) is float64, and float32 otherwise — the promise the
// CLI makes — so mixed inputs are accepted rather than rejected.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "einjit/error.h"
#include "frontend/einsum/BoundEinsum.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/reference/ReferenceKernel.h"
#include "runtime/reference/ReferenceOps.h"

namespace einjit {
namespace {

using reference::Array;

class ProgramError : public UserError {
 public:
  ProgramError(const ir::LayerProgram& program, const std::string& message)
      : UserError("layer program '" + program.spec + "': " + message) {}
};

std::string opName(const ir::LayerProgram& program, std::size_t index) {
  const ir::Op& op = program.ops[index];
  std::string name = "op " + std::to_string(index) + " (" + ir::opKindName(op.kind);
  if (op.kind == ir::OpKind::Contract) name += " \"" + op.equation + "\"";
  return name + ")";
}

// The program's value ids are in range and every value is defined once, before it is used.
void validateProgram(const ir::LayerProgram& program) {
  const int numValues = static_cast<int>(program.values.size());
  auto checkId = [&](ir::ValueId id, const std::string& what) {
    if (id < 0 || id >= numValues)
      throw ProgramError(program, what + " refers to value id " + std::to_string(id) +
                                      ", outside [0, " + std::to_string(numValues) + ")");
  };
  std::vector<bool> defined(program.values.size(), false);
  checkId(program.input, "the input");
  defined[program.input] = true;
  for (const ir::Parameter& param : program.params) {
    checkId(param.value, "parameter '" + param.name + "'");
    if (defined[param.value])
      throw ProgramError(program, "parameter '" + param.name + "' reuses value '" +
                                      program.values[param.value].name + "'");
    if (program.values[param.value].shape != param.shape)
      throw ProgramError(program, "parameter '" + param.name + "' is declared with shape " +
                                      shapeToString(param.shape) + " but its value has shape " +
                                      shapeToString(program.values[param.value].shape));
    for (const ir::Parameter& other : program.params)
      if (&other != &param && other.name == param.name)
        throw ProgramError(program, "two parameters are named '" + param.name + "'");
    defined[param.value] = true;
  }
  for (std::size_t k = 0; k < program.ops.size(); ++k) {
    const ir::Op& op = program.ops[k];
    if (op.inputs.empty()) throw ProgramError(program, opName(program, k) + " has no inputs");
    for (ir::ValueId id : op.inputs) {
      checkId(id, opName(program, k));
      if (!defined[id])
        throw ProgramError(program, opName(program, k) + " uses value '" + program.values[id].name +
                                        "' before it is defined");
    }
    checkId(op.result, opName(program, k));
    if (defined[op.result])
      throw ProgramError(program, opName(program, k) + " redefines value '" +
                                      program.values[op.result].name + "'");
    defined[op.result] = true;
  }
  checkId(program.output, "the output");
  if (!defined[program.output]) throw ProgramError(program, "the output is never computed");
}

// A declared shape with the symbolic row count replaced by `rows`.
Shape concreteShape(const ir::LayerProgram& program, const Shape& declared, int64_t rows) {
  Shape shape = declared;
  for (int64_t& extent : shape) {
    if (extent == ir::kRows)
      extent = rows;
    else if (extent < 0)
      throw ProgramError(program, "invalid extent " + std::to_string(extent) + " in shape " +
                                      shapeToString(declared));
  }
  return shape;
}

// ---- forward ----

struct ForwardPass {
  int64_t rows = 0;
  std::vector<std::optional<Array>> values;
  std::vector<std::optional<BoundEinsum>> einsums;  // per op: Contract ops only
};

ForwardPass runForward(const ir::LayerProgram& program, const TensorMap& params, const Tensor& x) {
  validateProgram(program);
  ForwardPass pass;
  pass.rows = checkLayerInput(program, x);
  reference::checkLayerParams(program, params);

  pass.values.resize(program.values.size());
  pass.einsums.resize(program.ops.size());
  auto checkDeclaredShape = [&](ir::ValueId id, const std::string& producer) {
    const Shape declared = concreteShape(program, program.values[id].shape, pass.rows);
    if (pass.values[id]->shape != declared)
      throw ProgramError(program, producer + " gives value '" + program.values[id].name +
                                      "' the shape " + shapeToString(pass.values[id]->shape) +
                                      " but it is declared " + shapeToString(declared));
  };
  pass.values[program.input] = reference::toArray(x);
  checkDeclaredShape(program.input, "the input");
  for (const ir::Parameter& param : program.params)
    pass.values[param.value] = reference::toArray(params.at(param.name));

  for (std::size_t k = 0; k < program.ops.size(); ++k) {
    const ir::Op& op = program.ops[k];
    std::vector<const Array*> inputs;
    for (ir::ValueId id : op.inputs) inputs.push_back(&*pass.values[id]);
    BoundEinsum einsum;
    Array result;
    try {
      result = reference::evaluateOp(op, inputs, pass.rows, &einsum);
    } catch (const UserError& error) {
      throw ProgramError(program, opName(program, k) + ": " + error.what());
    }
    if (op.kind == ir::OpKind::Contract) pass.einsums[k] = std::move(einsum);
    pass.values[op.result] = std::move(result);
    checkDeclaredShape(op.result, opName(program, k));
  }
  const Shape outputShape = {pass.rows, program.dOut};
  if (pass.values[program.output]->shape != outputShape)
    throw ProgramError(program, "the output has shape " +
                                    shapeToString(pass.values[program.output]->shape) +
                                    ", expected " + shapeToString(outputShape));
  return pass;
}

// ---- reverse mode ----

void addGradient(std::optional<Array>& gradient, Array contribution) {
  if (!gradient) {
    gradient = std::move(contribution);
    return;
  }
  for (std::size_t i = 0; i < gradient->data.size(); ++i) gradient->data[i] += contribution.data[i];
}

}  // namespace

int64_t checkLayerInput(const ir::LayerProgram& program, const Tensor& x) {
  if (x.rank() != 2 || x.shape()[1] != program.dIn)
    throw UserError("x has shape " + shapeToString(x.shape()) + ", expected (N, " +
                    std::to_string(program.dIn) + ") for " + program.spec);
  return x.shape()[0];
}

DType layerResultDType(const TensorMap& params, const Tensor& x, const Tensor* dy) {
  bool anyF64 = x.dtype() == DType::F64 || (dy != nullptr && dy->dtype() == DType::F64);
  for (const auto& [name, tensor] : params) anyF64 = anyF64 || tensor.dtype() == DType::F64;
  return anyF64 ? DType::F64 : DType::F32;
}

Tensor referenceLayerForward(const ir::LayerProgram& program, const TensorMap& params,
                             const Tensor& x) {
  ForwardPass pass = runForward(program, params, x);
  return reference::toTensor(*pass.values[program.output], layerResultDType(params, x, nullptr));
}

LayerGradients referenceLayerBackward(const ir::LayerProgram& program, const TensorMap& params,
                                      const Tensor& x, const Tensor& dy) {
  ForwardPass pass = runForward(program, params, x);
  const Shape outputShape = {pass.rows, program.dOut};
  if (dy.shape() != outputShape)
    throw UserError("dy has shape " + shapeToString(dy.shape()) + ", expected " +
                    shapeToString(outputShape) + " for " + program.spec);

  std::vector<std::optional<Array>> gradients(program.values.size());
  gradients[program.output] = reference::toArray(dy);
  for (std::size_t k = program.ops.size(); k-- > 0;) {
    const ir::Op& op = program.ops[k];
    if (!gradients[op.result]) continue;  // does not reach the output
    const Array& gradient = *gradients[op.result];
    const Array& in = *pass.values[op.inputs[0]];
    switch (op.kind) {
      case ir::OpKind::Contract: {
        // d/d(operand j) of sum(result * gradient): the einsum of the gradient with every other
        // operand into operand j's labels (repeated labels land on its diagonal, size-1
        // broadcast dimensions sum).
        const BoundEinsum& einsum = *pass.einsums[k];
        for (std::size_t j = 0; j < op.inputs.size(); ++j) {
          std::vector<reference::LabeledArray> factors;
          for (std::size_t other = 0; other < op.inputs.size(); ++other)
            if (other != j)
              factors.push_back({&*pass.values[op.inputs[other]], &einsum.inputLabels[other]});
          factors.push_back({&gradient, &einsum.outputLabels});
          Array contribution = reference::zeros(pass.values[op.inputs[j]]->shape);
          reference::accumulateProduct(einsum.labelSize, factors, einsum.inputLabels[j],
                                       contribution);
          addGradient(gradients[op.inputs[j]], std::move(contribution));
        }
        break;
      }
      case ir::OpKind::Reshape: {
        Array contribution = gradient;
        contribution.shape = in.shape;
        addGradient(gradients[op.inputs[0]], std::move(contribution));
        break;
      }
      case ir::OpKind::Permute:
        addGradient(gradients[op.inputs[0]],
                    reference::permute(gradient, reference::inversePermutation(op.perm)));
        break;
      case ir::OpKind::Pad:
      case ir::OpKind::Truncate:
        addGradient(gradients[op.inputs[0]],
                    reference::resizeAxis(gradient, op.axis, in.shape[op.axis]));
        break;
      case ir::OpKind::WeightNorm: {
        const bool hasGamma = op.inputs.size() == 2;
        reference::WeightNormGradient weightGradient = reference::weightNormBackward(
            op, in, hasGamma ? &*pass.values[op.inputs[1]] : nullptr, gradient);
        addGradient(gradients[op.inputs[0]], std::move(weightGradient.dw));
        if (hasGamma) {
          Array dgamma = reference::zeros(pass.values[op.inputs[1]]->shape);
          dgamma.data[0] = weightGradient.dgamma;
          addGradient(gradients[op.inputs[1]], std::move(dgamma));
        }
        break;
      }
      case ir::OpKind::Add:
        addGradient(gradients[op.inputs[0]], gradient);
        addGradient(gradients[op.inputs[1]], gradient);
        break;
    }
  }

  const DType dtype = layerResultDType(params, x, &dy);
  LayerGradients result;
  result.y = reference::toTensor(*pass.values[program.output], dtype);
  auto gradientOf = [&](ir::ValueId id) {
    return reference::toTensor(
        gradients[id] ? *gradients[id] : reference::zeros(pass.values[id]->shape), dtype);
  };
  result.dx = gradientOf(program.input);
  for (const ir::Parameter& param : program.params)
    result.dparams[param.name] = gradientOf(param.value);
  return result;
}

}  // namespace einjit
