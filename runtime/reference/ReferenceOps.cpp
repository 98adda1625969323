#include "runtime/reference/ReferenceOps.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <utility>

#include "compiler/planner/ContractionPlan.h"
#include "einjit/error.h"
#include "frontend/einsum/EinsumAST.h"

namespace einjit::reference {
namespace {

struct WeightNormFactors {
  double rms = 0;
  double ratio = 0;  // RMS / sigma; the scaled branch is taken where it exceeds 1
  double gamma = 1;
};

WeightNormFactors weightNormFactors(const ir::Op& op, const Array& w, const Array* gamma) {
  if (!(op.normSigma > 0) || !std::isfinite(op.normSigma) || !(op.normEps >= 0) ||
      !std::isfinite(op.normEps))
    throw UserError("weight normalisation needs sigma > 0 and eps >= 0");
  WeightNormFactors factors;
  if (gamma != nullptr) {
    if (gamma->data.size() != 1)
      throw UserError("gamma must be a scalar, not " + shapeToString(gamma->shape));
    factors.gamma = gamma->data[0];
  }
  double sumOfSquares = 0;
  for (double v : w.data) sumOfSquares += v * v;
  const double meanSquare =
      w.data.empty() ? 0.0 : sumOfSquares / static_cast<double>(w.data.size());
  factors.rms = std::sqrt(meanSquare + op.normEps);
  factors.ratio = factors.rms / op.normSigma;
  return factors;
}

void requireInputs(const std::vector<const Array*>& inputs, std::size_t count) {
  if (inputs.size() != count)
    throw UserError("takes " + std::to_string(count) + " input" + (count == 1 ? "" : "s") +
                    ", got " + std::to_string(inputs.size()));
}

}  // namespace

Array permute(const Array& in, const std::vector<int>& perm) {
  const int rank = static_cast<int>(in.shape.size());
  Shape outShape(rank);
  for (int k = 0; k < rank; ++k) outShape[k] = in.shape[perm[k]];
  std::vector<int64_t> inStride(rank, 1);
  for (int d = rank - 2; d >= 0; --d) inStride[d] = inStride[d + 1] * in.shape[d + 1];
  Array out = zeros(outShape);
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

Array resizeAxis(const Array& in, int axis, int64_t size) {
  Shape outShape = in.shape;
  outShape[axis] = size;
  Array out = zeros(outShape);
  const int64_t outer = shapeNumel(Shape(in.shape.begin(), in.shape.begin() + axis));
  const int64_t inner = shapeNumel(Shape(in.shape.begin() + axis + 1, in.shape.end()));
  const int64_t kept = std::min(in.shape[axis], size);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t a = 0; a < kept; ++a)
      std::copy_n(in.data.begin() + (o * in.shape[axis] + a) * inner, inner,
                  out.data.begin() + (o * size + a) * inner);
  return out;
}

Array weightNormForward(const ir::Op& op, const Array& w, const Array* gamma) {
  const WeightNormFactors factors = weightNormFactors(op, w, gamma);
  const double scale = factors.ratio > 1 ? factors.gamma / factors.ratio : factors.gamma;
  Array result = w;
  for (double& v : result.data) v *= scale;
  return result;
}

WeightNormGradient weightNormBackward(const ir::Op& op, const Array& w, const Array* gamma,
                                      const Array& gradient) {
  if (gradient.shape != w.shape)
    throw UserError("the gradient of a normalised weight has shape " +
                    shapeToString(gradient.shape) + ", expected " + shapeToString(w.shape));
  const WeightNormFactors factors = weightNormFactors(op, w, gamma);
  double dot = 0;  // sum(gradient * W)
  for (std::size_t i = 0; i < w.data.size(); ++i) dot += gradient.data[i] * w.data[i];
  WeightNormGradient result{zeros(w.shape), dot};
  if (factors.ratio > 1) {
    // W~ = gamma * sigma * W / RMS, with dRMS/dW_i = W_i / (n RMS).
    const double n = static_cast<double>(w.data.size());
    const double direct = factors.gamma / factors.ratio;
    const double throughRms =
        factors.gamma * dot * op.normSigma / (n * factors.rms * factors.rms * factors.rms);
    for (std::size_t i = 0; i < w.data.size(); ++i)
      result.dw.data[i] = direct * gradient.data[i] - throughRms * w.data[i];
    result.dgamma = dot / factors.ratio;
  } else {
    for (std::size_t i = 0; i < w.data.size(); ++i)
      result.dw.data[i] = factors.gamma * gradient.data[i];
  }
  return result;
}

Array evaluateOp(const ir::Op& op, const std::vector<const Array*>& inputs, int64_t rows,
                 BoundEinsum* einsum) {
  if (inputs.empty()) throw UserError("has no inputs");
  const Array& in = *inputs[0];
  const int rank = static_cast<int>(in.shape.size());
  switch (op.kind) {
    case ir::OpKind::Contract: {
      std::vector<Shape> shapes;
      std::vector<Array> operands;
      for (const Array* input : inputs) {
        shapes.push_back(input->shape);
        operands.push_back(*input);
      }
      const BoundEinsum bound = bindEinsum(parseEinsum(op.equation), shapes);
      const ContractionPlan plan =
          planContraction(bound.inputLabels, bound.outputLabels, bound.labelSize);
      Array result = executePlan(bound, plan, std::move(operands));
      if (einsum != nullptr) *einsum = bound;
      return result;
    }
    case ir::OpKind::Reshape: {
      requireInputs(inputs, 1);
      Array result = in;
      result.shape = op.shape;
      for (int64_t& extent : result.shape) {
        if (extent == ir::kRows)
          extent = rows;
        else if (extent < 0)
          throw UserError("invalid extent " + std::to_string(extent) + " in shape " +
                          shapeToString(op.shape));
      }
      if (shapeNumel(result.shape) != static_cast<int64_t>(in.data.size()))
        throw UserError("cannot view " + shapeToString(in.shape) + " as " +
                        shapeToString(result.shape));
      return result;
    }
    case ir::OpKind::Permute: {
      requireInputs(inputs, 1);
      std::vector<int> sorted = op.perm;
      std::sort(sorted.begin(), sorted.end());
      std::vector<int> identity(rank);
      std::iota(identity.begin(), identity.end(), 0);
      if (sorted != identity)
        throw UserError("not a permutation of the " + std::to_string(rank) + " axes of " +
                        shapeToString(in.shape));
      return permute(in, op.perm);
    }
    case ir::OpKind::Pad:
    case ir::OpKind::Truncate: {
      requireInputs(inputs, 1);
      if (op.axis < 0 || op.axis >= rank)
        throw UserError("axis " + std::to_string(op.axis) + " out of range for shape " +
                        shapeToString(in.shape));
      const bool pad = op.kind == ir::OpKind::Pad;
      if (pad ? op.size < in.shape[op.axis] : (op.size < 0 || op.size > in.shape[op.axis]))
        throw UserError(std::string("cannot ") + (pad ? "pad" : "truncate") + " axis " +
                        std::to_string(op.axis) + " of " + shapeToString(in.shape) + " to " +
                        std::to_string(op.size));
      return resizeAxis(in, op.axis, op.size);
    }
    case ir::OpKind::WeightNorm:
      if (inputs.size() > 2) throw UserError("takes W and an optional gamma");
      return weightNormForward(op, in, inputs.size() == 2 ? inputs[1] : nullptr);
    case ir::OpKind::Add: {
      requireInputs(inputs, 2);
      if (inputs[1]->shape != in.shape)
        throw UserError("cannot add " + shapeToString(in.shape) + " and " +
                        shapeToString(inputs[1]->shape));
      Array result = in;
      for (std::size_t i = 0; i < result.data.size(); ++i) result.data[i] += inputs[1]->data[i];
      return result;
    }
  }
  throw UserError("unknown op kind " + std::to_string(static_cast<int>(op.kind)));
}

void checkLayerParams(const ir::LayerProgram& program, const TensorMap& params) {
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

}  // namespace einjit::reference
