// Internal to the reference executor: float64 working arrays and the one n-ary loop kernel that
// every einsum step, and every einsum gradient, is made of.
#pragma once

#include <cstdint>
#include <vector>

#include "compiler/planner/ContractionPlan.h"
#include "einjit/tensor.h"
#include "frontend/einsum/BoundEinsum.h"

namespace einjit::reference {

// A dense row-major array of doubles. Intermediates stay in double so that the oracle's only
// rounding to float32 is the final store.
struct Array {
  Shape shape;
  std::vector<double> data;
};

Array zeros(const Shape& shape);
Array toArray(const Tensor& tensor);
Tensor toTensor(const Array& array, DType dtype);

// One factor of a product: an array and the label id of each of its dimensions.
struct LabeledArray {
  const Array* array = nullptr;
  const std::vector<int>* labels = nullptr;
};

// For every assignment of all labels that occur in `factors` or `outLabels`:
//   out[outLabels] += product over factors of factor[its labels].
// Dimensions index by their label; a repeated label within one array walks its diagonal, and a
// dimension of size 1 whose label is larger is broadcast (always index 0) — also in `out`,
// where it sums over that label. Every other dimension must equal its label's size (UserError).
void accumulateProduct(const std::vector<int64_t>& labelSize,
                       const std::vector<LabeledArray>& factors, const std::vector<int>& outLabels,
                       Array& out);

// Runs `einsum` on `operands` pairwise in the order of `plan`; returns the output array.
Array executePlan(const BoundEinsum& einsum, const ContractionPlan& plan,
                  std::vector<Array> operands);

}  // namespace einjit::reference
