// Test helpers for runtime/ops: random tensors and a central finite-difference check of the
// tape's gradients of a random projection sum(out * R).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "runtime/autograd/Tape.h"

namespace einjit::rt::testing {

inline Tensor randomTensor(const Shape& shape, std::mt19937_64& rng, double scale = 1.0,
                           DType dtype = DType::F64) {
  std::normal_distribution<double> normal(0.0, scale);
  Tensor tensor(dtype, shape);
  for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, normal(rng));
  return tensor;
}

inline double dot(const Tensor& a, const Tensor& b) {
  double sum = 0;
  for (int64_t i = 0; i < a.numel(); ++i) sum += a.get(i) * b.get(i);
  return sum;
}

inline double maxAbsDifference(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double worst = 0;
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i)
    worst = std::max(worst, std::abs(a.get(i) - b.get(i)));
  return worst;
}

// Builds the op's output from inputs the caller captured.
using Forward = std::function<Var(Tape&)>;

// For every Var in `inputs` (float64, requiring gradients): the tape's gradient of
// J = sum(forward() * R), R random, against central differences of J over every element;
// relative 2-norm error below `tolerance`, and (when requireNonZero) a gradient that is not zero
// everywhere, so that a lost gradient cannot pass.
inline void expectGradientsMatch(const std::vector<Var>& inputs, const Forward& forward,
                                 const std::string& what, double tolerance = 1e-6,
                                 bool requireNonZero = true, double step = 1e-6,
                                 uint64_t seed = 7) {
  zeroGrad(inputs);
  Tape tape;
  const Var out = forward(tape);
  std::mt19937_64 rng(seed);
  const Tensor projection = randomTensor(out->value.shape(), rng);
  tape.backward(out, projection);
  auto objective = [&] {
    Tape inference;
    inference.setRecording(false);
    return dot(forward(inference)->value, projection);
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    VarData& input = *inputs[k];
    ASSERT_EQ(input.grad.shape(), input.value.shape())
        << what << ": input " << k << " got no gradient";
    double differenceSquared = 0, analyticSquared = 0;
    for (int64_t i = 0; i < input.value.numel(); ++i) {
      const double original = input.value.get(i);
      input.value.set(i, original + step);
      const double plus = objective();
      input.value.set(i, original - step);
      const double minus = objective();
      input.value.set(i, original);
      const double numeric = (plus - minus) / (2 * step);
      const double analytic = input.grad.get(i);
      differenceSquared += (numeric - analytic) * (numeric - analytic);
      analyticSquared += analytic * analytic;
    }
    if (requireNonZero) {
      EXPECT_GT(analyticSquared, 0) << what << ": input " << k << " has an all-zero gradient";
    }
    // Relative error; absolute where the true gradient is zero.
    EXPECT_LT(std::sqrt(differenceSquared) / std::max(std::sqrt(analyticSquared), 1e-6), tolerance)
        << what << ": input " << k << " (" << input.name << ")";
  }
}

}  // namespace einjit::rt::testing
