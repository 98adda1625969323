#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "einjit/error.h"
#include "frontend/einsum/EinsumAST.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/reference/ReferenceKernel.h"

namespace einjit {
namespace reference {
namespace {

// Per label of `loopLabels`, how far one step of that label moves through `array`.
std::vector<int64_t> loopStrides(const std::vector<int64_t>& labelSize,
                                 const std::vector<int>& loopLabels, const Array& array,
                                 const std::vector<int>& labels) {
  std::vector<int64_t> strides(loopLabels.size(), 0);
  int64_t dimStride = 1;
  for (int d = static_cast<int>(labels.size()) - 1; d >= 0; --d) {
    const int64_t extent = array.shape[d];
    const int64_t size = labelSize[labels[d]];
    if (extent != size && extent != 1)
      throw UserError("reference einsum: dimension " + std::to_string(d) +
                      " of an array of shape " + shapeToString(array.shape) + " has size " +
                      std::to_string(extent) + " but its label has size " + std::to_string(size));
    if (extent == size) {
      const auto position = std::find(loopLabels.begin(), loopLabels.end(), labels[d]);
      strides[position - loopLabels.begin()] += dimStride;
    }
    dimStride *= extent;
  }
  return strides;
}

void checkLabels(const std::vector<int64_t>& labelSize, const Array& array,
                 const std::vector<int>& labels) {
  if (labels.size() != array.shape.size())
    throw UserError("reference einsum: an array of shape " + shapeToString(array.shape) +
                    " is indexed by " + std::to_string(labels.size()) + " labels");
  if (static_cast<int64_t>(array.data.size()) != shapeNumel(array.shape))
    throw UserError("reference einsum: array data does not match its shape " +
                    shapeToString(array.shape));
  for (int label : labels)
    if (label < 0 || label >= static_cast<int>(labelSize.size()))
      throw UserError("reference einsum: label id " + std::to_string(label) + " out of range");
}

}  // namespace

Array zeros(const Shape& shape) {
  return Array{shape, std::vector<double>(static_cast<std::size_t>(shapeNumel(shape)), 0.0)};
}

Array toArray(const Tensor& tensor) {
  Array array = zeros(tensor.shape());
  for (int64_t i = 0; i < tensor.numel(); ++i) array.data[i] = tensor.get(i);
  return array;
}

Tensor toTensor(const Array& array, DType dtype) {
  Tensor tensor(dtype, array.shape);
  for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, array.data[i]);
  return tensor;
}

void accumulateProduct(const std::vector<int64_t>& labelSize,
                       const std::vector<LabeledArray>& factors, const std::vector<int>& outLabels,
                       Array& out) {
  std::vector<int> loopLabels;
  auto collect = [&](const Array& array, const std::vector<int>& labels) {
    checkLabels(labelSize, array, labels);
    for (int label : labels)
      if (std::find(loopLabels.begin(), loopLabels.end(), label) == loopLabels.end())
        loopLabels.push_back(label);
  };
  for (const LabeledArray& factor : factors) collect(*factor.array, *factor.labels);
  collect(out, outLabels);

  const int numLoops = static_cast<int>(loopLabels.size());
  std::vector<int64_t> loopSize(numLoops);
  for (int p = 0; p < numLoops; ++p) loopSize[p] = labelSize[loopLabels[p]];

  // Arrays 0..F-1 are the factors, array F is the output.
  const int numFactors = static_cast<int>(factors.size());
  std::vector<std::vector<int64_t>> strides;
  std::vector<const double*> factorData;
  for (const LabeledArray& factor : factors) {
    strides.push_back(loopStrides(labelSize, loopLabels, *factor.array, *factor.labels));
    factorData.push_back(factor.array->data.data());
  }
  strides.push_back(loopStrides(labelSize, loopLabels, out, outLabels));
  double* outData = out.data.data();

  if (std::find(loopSize.begin(), loopSize.end(), 0) != loopSize.end()) return;
  if (numLoops == 0) {
    double product = 1;
    for (int f = 0; f < numFactors; ++f) product *= factorData[f][0];
    outData[0] += product;
    return;
  }

  // An odometer over all labels but the last; the last one is the tight inner loop.
  const int inner = numLoops - 1;
  std::vector<int64_t> index(numLoops, 0);
  std::vector<int64_t> offset(numFactors + 1, 0);
  while (true) {
    for (int64_t i = 0; i < loopSize[inner]; ++i) {
      double product = 1;
      for (int f = 0; f < numFactors; ++f)
        product *= factorData[f][offset[f] + i * strides[f][inner]];
      outData[offset[numFactors] + i * strides[numFactors][inner]] += product;
    }
    int p = inner - 1;
    for (; p >= 0; --p) {
      ++index[p];
      for (int a = 0; a <= numFactors; ++a) offset[a] += strides[a][p];
      if (index[p] < loopSize[p]) break;
      for (int a = 0; a <= numFactors; ++a) offset[a] -= strides[a][p] * loopSize[p];
      index[p] = 0;
    }
    if (p < 0) break;
  }
}

Array executePlan(const BoundEinsum& einsum, const ContractionPlan& plan,
                  std::vector<Array> operands) {
  if (operands.size() != einsum.inputLabels.size() ||
      einsum.inputShapes.size() != einsum.inputLabels.size())
    throw UserError("einsum " + einsum.canonical() + " takes " +
                    std::to_string(einsum.inputLabels.size()) + " operands, got " +
                    std::to_string(operands.size()));
  for (std::size_t k = 0; k < operands.size(); ++k)
    if (operands[k].shape != einsum.inputShapes[k])
      throw UserError("einsum " + einsum.canonical() + ": operand " + std::to_string(k) +
                      " has shape " + shapeToString(operands[k].shape) + ", expected " +
                      shapeToString(einsum.inputShapes[k]));

  std::vector<std::pair<Array, std::vector<int>>> list;
  for (std::size_t k = 0; k < operands.size(); ++k)
    list.emplace_back(std::move(operands[k]), einsum.inputLabels[k]);

  auto planMisfit = [&] {
    return UserError("einsum " + einsum.canonical() + ": the contraction plan does not fit it");
  };
  for (const ContractionStep& step : plan.steps) {
    const int count = static_cast<int>(list.size());
    if (step.lhs < 0 || step.lhs >= count || step.rhs < -1 || step.rhs >= count ||
        step.lhs == step.rhs)
      throw planMisfit();
    std::vector<int> touched = list[step.lhs].second;
    if (step.rhs >= 0)
      touched.insert(touched.end(), list[step.rhs].second.begin(), list[step.rhs].second.end());
    Shape resultShape;
    for (std::size_t d = 0; d < step.resultLabels.size(); ++d) {
      const int label = step.resultLabels[d];
      if (std::find(touched.begin(), touched.end(), label) == touched.end() ||
          std::find(step.resultLabels.begin(), step.resultLabels.begin() + d, label) !=
              step.resultLabels.begin() + d)
        throw planMisfit();
      resultShape.push_back(einsum.labelSize[label]);
    }

    // Labels the step sums away must not be needed by a later operand or the output.
    std::vector<int> needed = einsum.outputLabels;
    for (int k = 0; k < count; ++k)
      if (k != step.lhs && k != step.rhs)
        needed.insert(needed.end(), list[k].second.begin(), list[k].second.end());
    for (int label : touched)
      if (std::find(needed.begin(), needed.end(), label) != needed.end() &&
          std::find(step.resultLabels.begin(), step.resultLabels.end(), label) ==
              step.resultLabels.end())
        throw planMisfit();

    Array result = zeros(resultShape);
    std::vector<LabeledArray> factors = {{&list[step.lhs].first, &list[step.lhs].second}};
    if (step.rhs >= 0) factors.push_back({&list[step.rhs].first, &list[step.rhs].second});
    accumulateProduct(einsum.labelSize, factors, step.resultLabels, result);

    list.erase(list.begin() + std::max(step.lhs, step.rhs));
    if (step.rhs >= 0) list.erase(list.begin() + std::min(step.lhs, step.rhs));
    list.emplace_back(std::move(result), step.resultLabels);
  }
  if (list.size() != 1 || list[0].second != einsum.outputLabels ||
      list[0].first.shape != einsum.outputShape)
    throw planMisfit();
  return std::move(list[0].first);
}

}  // namespace reference

Tensor referenceEinsum(const BoundEinsum& einsum, const ContractionPlan& plan,
                       const std::vector<const Tensor*>& operands, DType dtype) {
  std::vector<reference::Array> arrays;
  for (const Tensor* operand : operands) {
    if (operand == nullptr) throw UserError("reference einsum: missing operand");
    arrays.push_back(reference::toArray(*operand));
  }
  return reference::toTensor(reference::executePlan(einsum, plan, std::move(arrays)), dtype);
}

Tensor referenceEinsum(const std::string& spec, const std::vector<const Tensor*>& operands) {
  std::vector<Shape> shapes;
  DType dtype = DType::F32;
  for (const Tensor* operand : operands) {
    if (operand == nullptr) throw UserError("reference einsum: missing operand");
    shapes.push_back(operand->shape());
    if (operand->dtype() == DType::F64) dtype = DType::F64;
  }
  const BoundEinsum einsum = bindEinsum(parseEinsum(spec), shapes);
  const ContractionPlan plan =
      planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  return referenceEinsum(einsum, plan, operands, dtype);
}

}  // namespace einjit
