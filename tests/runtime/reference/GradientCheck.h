// Test helpers: random tensors and a central finite-difference check of referenceLayerBackward.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "runtime/reference/ReferenceExecutor.h"

namespace einjit::testing {

inline Tensor randomTensor(const Shape& shape, std::mt19937_64& rng, double scale = 1.0,
                           DType dtype = DType::F64) {
  std::normal_distribution<double> normal(0.0, scale);
  Tensor tensor(dtype, shape);
  for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, normal(rng));
  return tensor;
}

// sum(y * dy) for the layer's forward pass.
inline double layerObjective(const ir::LayerProgram& program, const TensorMap& params,
                             const Tensor& x, const Tensor& dy) {
  const Tensor y = referenceLayerForward(program, params, x);
  double total = 0;
  for (int64_t i = 0; i < y.numel(); ++i) total += y.get(i) * dy.get(i);
  return total;
}

// ||numeric - analytic|| / ||analytic|| for one tensor, by central differences of every element.
// `perturb` changes one element of the tensor under test (x or a parameter) in place.
template <class Perturb>
double relativeGradientError(const Tensor& analytic, int64_t numel, Perturb perturb, double step) {
  double differenceSquared = 0, analyticSquared = 0;
  for (int64_t i = 0; i < numel; ++i) {
    const double plus = perturb(i, step);
    const double minus = perturb(i, -step);
    const double numeric = (plus - minus) / (2 * step);
    differenceSquared += (numeric - analytic.get(i)) * (numeric - analytic.get(i));
    analyticSquared += analytic.get(i) * analytic.get(i);
  }
  return std::sqrt(differenceSquared) / std::max(std::sqrt(analyticSquared), 1e-300);
}

// Checks dx and every dparam of referenceLayerBackward against central finite differences of
// sum(y * dy), in float64: relative error (2-norm over each tensor) below `tolerance`, and
// every gradient nonzero (so that a gradient that is lost everywhere cannot pass).
inline void expectGradientsMatchFiniteDifferences(const ir::LayerProgram& program,
                                                  const TensorMap& params, const Tensor& x,
                                                  const Tensor& dy, double tolerance = 1e-6,
                                                  double step = 1e-6) {
  const LayerGradients gradients = referenceLayerBackward(program, params, x, dy);
  {
    Tensor perturbed = x;
    const double error = relativeGradientError(
        gradients.dx, x.numel(),
        [&](int64_t i, double delta) {
          perturbed.set(i, x.get(i) + delta);
          const double value = layerObjective(program, params, perturbed, dy);
          perturbed.set(i, x.get(i));
          return value;
        },
        step);
    EXPECT_LT(error, tolerance) << "dx of " << program.spec;
  }
  for (const ir::Parameter& param : program.params) {
    ASSERT_TRUE(gradients.dparams.count(param.name)) << param.name;
    const Tensor& analytic = gradients.dparams.at(param.name);
    ASSERT_EQ(analytic.shape(), param.shape) << param.name;
    TensorMap perturbed = params;
    Tensor& tensor = perturbed.at(param.name);
    const Tensor& original = params.at(param.name);
    const double error = relativeGradientError(
        analytic, original.numel(),
        [&](int64_t i, double delta) {
          tensor.set(i, original.get(i) + delta);
          const double value = layerObjective(program, perturbed, x, dy);
          tensor.set(i, original.get(i));
          return value;
        },
        step);
    EXPECT_LT(error, tolerance) << "d" << param.name << " of " << program.spec;
    double norm = 0;
    for (int64_t i = 0; i < analytic.numel(); ++i) norm += std::abs(analytic.get(i));
    EXPECT_GT(norm, 0) << "d" << param.name << " of " << program.spec << " is all zero";
  }
}

}  // namespace einjit::testing
