// The reference interpreter of a layer program: forward, and reverse mode for sum(y * dy).
//
// Dtypes: every value is computed in double. The results (y, dx, every dparam) are float64 if
// any given tensor (x, dy or a parameter) is float64, and float32 otherwise — the promise the
// CLI makes — so mixed inputs are accepted rather than rejected.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "compiler/planner/ContractionPlan.h"
#include "einjit/error.h"
#include "frontend/einsum/BoundEinsum.h"
#include "frontend/einsum/EinsumAST.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/reference/ReferenceKernel.h"

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

int64_t checkX(const ir::LayerProgram& program, const Tensor& x) {
  if (x.rank() != 2 || x.shape()[1] != program.dIn)
    throw UserError("x has shape " + shapeToString(x.shape()) + ", expected (N, " +
                    std::to_string(program.dIn) + ") for " + program.spec);
  return x.shape()[0];
}

void checkParams(const ir::LayerProgram& program, const TensorMap& params) {
  for (const ir::Parameter& param : program.params) {
    const auto found = params.find(param.name);
    if (found == params.end())
      throw UserError("missing parameter '" + param.name + "' of shape " +
                      shapeToString(param.shape) + " for " + program.spec);
    if (found->second.shape() != param.shape)
      throw UserError("parameter '" + param.name + "' has shape " +
                      shapeToString(found->second.shape()) + ", expected " +
                      shapeToString(param.shape) + " for " + program.spec);
  }
  for (const auto& [name, tensor] : params)
    if (program.findParam(name) == nullptr) {
      std::string known;
      for (const ir::Parameter& param : program.params)
        known += (known.empty() ? "" : ", ") + param.name;
      throw UserError("unknown parameter '" + name + "' for " + program.spec +
                      " (its parameters: " + (known.empty() ? "none" : known) + ")");
    }
}

DType resultDType(const TensorMap& params, const Tensor& x, const Tensor* dy) {
  bool anyF64 = x.dtype() == DType::F64 || (dy != nullptr && dy->dtype() == DType::F64);
  for (const auto& [name, tensor] : params) anyF64 = anyF64 || tensor.dtype() == DType::F64;
  return anyF64 ? DType::F64 : DType::F32;
}

// ---- the array operations behind Permute and Pad / Truncate ----

Array permute(const Array& in, const std::vector<int>& perm) {
  const int rank = static_cast<int>(in.shape.size());
  Shape outShape(rank);
  for (int k = 0; k < rank; ++k) outShape[k] = in.shape[perm[k]];
  std::vector<int64_t> inStride(rank, 1);
  for (int d = rank - 2; d >= 0; --d) inStride[d] = inStride[d + 1] * in.shape[d + 1];
  Array out = reference::zeros(outShape);
  std::vector<int64_t> index(rank, 0);  // over the output's axes
  for (std::size_t flat = 0; flat < out.data.size(); ++flat) {
    int64_t source = 0;
    for (int k = 0; k < rank; ++k) source += index[k] * inStride[perm[k]];
    out.data[flat] = in.data[source];
    for (int k = rank - 1; k >= 0 && ++index[k] == outShape[k]; --k) index[k] = 0;
  }
  return out;
}

std::vector<int> inversePermutation(const std::vector<int>& perm) {
  std::vector<int> inverse(perm.size());
  for (std::size_t k = 0; k < perm.size(); ++k) inverse[perm[k]] = static_cast<int>(k);
  return inverse;
}

// `in` with `axis` cut to, or zero-padded at its end up to, `size` entries.
Array resizeAxis(const Array& in, int axis, int64_t size) {
  Shape outShape = in.shape;
  outShape[axis] = size;
  Array out = reference::zeros(outShape);
  const int64_t outer = shapeNumel(Shape(in.shape.begin(), in.shape.begin() + axis));
  const int64_t inner = shapeNumel(Shape(in.shape.begin() + axis + 1, in.shape.end()));
  const int64_t kept = std::min(in.shape[axis], size);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t a = 0; a < kept; ++a)
      std::copy_n(in.data.begin() + (o * in.shape[axis] + a) * inner, inner,
                  out.data.begin() + (o * size + a) * inner);
  return out;
}

// ---- weight normalisation: W~ = gamma * W / max(1, RMS(W) / sigma) ----

struct WeightNormFactors {
  double rms = 0;
  double ratio = 0;  // RMS / sigma; the scaled branch is taken where it exceeds 1
  double gamma = 1;
};

WeightNormFactors weightNormFactors(const ir::LayerProgram& program, std::size_t index,
                                    const std::vector<std::optional<Array>>& values) {
  const ir::Op& op = program.ops[index];
  if (op.inputs.size() > 2)
    throw ProgramError(program, opName(program, index) + " takes W and an optional gamma");
  if (!(op.normSigma > 0) || !std::isfinite(op.normSigma) || !(op.normEps >= 0) ||
      !std::isfinite(op.normEps))
    throw ProgramError(program, opName(program, index) + " needs sigma > 0 and eps >= 0");
  const Array& w = *values[op.inputs[0]];
  WeightNormFactors factors;
  if (op.inputs.size() == 2) {
    const Array& gamma = *values[op.inputs[1]];
    if (gamma.data.size() != 1)
      throw ProgramError(program, opName(program, index) + ": gamma must be a scalar, not " +
                                      shapeToString(gamma.shape));
    factors.gamma = gamma.data[0];
  }
  double sumOfSquares = 0;
  for (double v : w.data) sumOfSquares += v * v;
  const double meanSquare =
      w.data.empty() ? 0.0 : sumOfSquares / static_cast<double>(w.data.size());
  factors.rms = std::sqrt(meanSquare + op.normEps);
  factors.ratio = factors.rms / op.normSigma;
  return factors;
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
  pass.rows = checkX(program, x);
  checkParams(program, params);

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
    const Array& in = *pass.values[op.inputs[0]];
    const int rank = static_cast<int>(in.shape.size());
    auto requireOneInput = [&] {
      if (op.inputs.size() != 1)
        throw ProgramError(program, opName(program, k) + " takes exactly one input");
    };
    auto requireAxis = [&] {
      if (op.axis < 0 || op.axis >= rank)
        throw ProgramError(program, opName(program, k) + ": axis " + std::to_string(op.axis) +
                                        " out of range for shape " + shapeToString(in.shape));
    };
    Array result;
    switch (op.kind) {
      case ir::OpKind::Contract: {
        std::vector<Shape> shapes;
        std::vector<Array> operands;
        for (ir::ValueId id : op.inputs) {
          shapes.push_back(pass.values[id]->shape);
          operands.push_back(*pass.values[id]);
        }
        try {
          pass.einsums[k] = bindEinsum(parseEinsum(op.equation), shapes);
        } catch (const UserError& error) {
          throw ProgramError(program, opName(program, k) + ": " + error.what());
        }
        const BoundEinsum& einsum = *pass.einsums[k];
        const ContractionPlan plan =
            planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
        result = reference::executePlan(einsum, plan, std::move(operands));
        break;
      }
      case ir::OpKind::Reshape: {
        requireOneInput();
        result = in;
        result.shape = concreteShape(program, op.shape, pass.rows);
        if (shapeNumel(result.shape) != static_cast<int64_t>(in.data.size()))
          throw ProgramError(program, opName(program, k) + " cannot view " +
                                          shapeToString(in.shape) + " as " +
                                          shapeToString(result.shape));
        break;
      }
      case ir::OpKind::Permute: {
        requireOneInput();
        std::vector<int> sorted = op.perm;
        std::sort(sorted.begin(), sorted.end());
        std::vector<int> identity(rank);
        std::iota(identity.begin(), identity.end(), 0);
        if (sorted != identity)
          throw ProgramError(program, opName(program, k) + ": not a permutation of the " +
                                          std::to_string(rank) + " axes of " +
                                          shapeToString(in.shape));
        result = permute(in, op.perm);
        break;
      }
      case ir::OpKind::Pad:
      case ir::OpKind::Truncate: {
        requireOneInput();
        requireAxis();
        const bool pad = op.kind == ir::OpKind::Pad;
        if (pad ? op.size < in.shape[op.axis] : (op.size < 0 || op.size > in.shape[op.axis]))
          throw ProgramError(
              program, opName(program, k) + ": cannot " + (pad ? "pad" : "truncate") + " axis " +
                           std::to_string(op.axis) + " of " + shapeToString(in.shape) + " to " +
                           std::to_string(op.size));
        result = resizeAxis(in, op.axis, op.size);
        break;
      }
      case ir::OpKind::WeightNorm: {
        const WeightNormFactors factors = weightNormFactors(program, k, pass.values);
        const double scale = factors.ratio > 1 ? factors.gamma / factors.ratio : factors.gamma;
        result = in;
        for (double& v : result.data) v *= scale;
        break;
      }
    }
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

Tensor referenceLayerForward(const ir::LayerProgram& program, const TensorMap& params,
                             const Tensor& x) {
  ForwardPass pass = runForward(program, params, x);
  return reference::toTensor(*pass.values[program.output], resultDType(params, x, nullptr));
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
        addGradient(gradients[op.inputs[0]], permute(gradient, inversePermutation(op.perm)));
        break;
      case ir::OpKind::Pad:
      case ir::OpKind::Truncate:
        addGradient(gradients[op.inputs[0]], resizeAxis(gradient, op.axis, in.shape[op.axis]));
        break;
      case ir::OpKind::WeightNorm: {
        const WeightNormFactors factors = weightNormFactors(program, k, pass.values);
        double dot = 0;  // sum(gradient * W)
        for (std::size_t i = 0; i < in.data.size(); ++i) dot += gradient.data[i] * in.data[i];
        Array dw = reference::zeros(in.shape);
        double dgamma = dot;
        if (factors.ratio > 1) {
          // W~ = gamma * sigma * W / RMS, with dRMS/dW_i = W_i / (n RMS).
          const double n = static_cast<double>(in.data.size());
          const double sigma = op.normSigma;
          const double direct = factors.gamma / factors.ratio;
          const double throughRms =
              factors.gamma * dot * sigma / (n * factors.rms * factors.rms * factors.rms);
          for (std::size_t i = 0; i < in.data.size(); ++i)
            dw.data[i] = direct * gradient.data[i] - throughRms * in.data[i];
          dgamma = dot / factors.ratio;
        } else {
          for (std::size_t i = 0; i < in.data.size(); ++i)
            dw.data[i] = factors.gamma * gradient.data[i];
        }
        addGradient(gradients[op.inputs[0]], std::move(dw));
        if (op.inputs.size() == 2) {
          Array dgammaArray = reference::zeros(pass.values[op.inputs[1]]->shape);
          dgammaArray.data[0] = dgamma;
          addGradient(gradients[op.inputs[1]], std::move(dgammaArray));
        }
        break;
      }
    }
  }

  const DType dtype = resultDType(params, x, &dy);
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
