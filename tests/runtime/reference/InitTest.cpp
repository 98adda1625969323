#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "frontend/structures/LayerIR.h"
#include "runtime/reference/ReferenceExecutor.h"

namespace einjit {
namespace {

ir::Parameter parameter(const std::string& name, Shape shape, double initStd) {
  ir::Parameter param;
  param.name = name;
  param.shape = std::move(shape);
  param.initStd = initStd;
  return param;
}

ir::LayerProgram programWith(std::vector<ir::Parameter> params) {
  ir::LayerProgram program;
  program.spec = "init-test";
  program.params = std::move(params);
  return program;
}

bool sameValues(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.get(i) != b.get(i)) return false;
  return true;
}

TEST(InitLayerParams, MatchesTheDocumentedGenerator) {
  // Expected values from an independent Python implementation of the same recipe
  // (splitmix64(seed) ^ fnv1a(name) seeds xoshiro256** through splitmix64; Box-Muller).
  const ir::LayerProgram program =
      programWith({parameter("W", {5}, 1.0), parameter("G1", {5}, 2.0), parameter("U", {5}, 0.5)});
  const TensorMap seed42 = initLayerParams(program, 42, DType::F64);
  const std::vector<double> w = {2.622398004857104, -0.4992353720321602, -0.7412215132427014,
                                 1.256884841293992, -1.8071603946319377};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(seed42.at("W").get(i), w[i], 1e-14);

  const TensorMap seed7 = initLayerParams(program, 7, DType::F64);
  const std::vector<double> g1 = {-1.3309958119761434, -0.7309180206155494, -0.5806271246796348,
                                  0.47818639683037517, 0.4783835438892288};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(seed7.at("G1").get(i), 2.0 * g1[i], 1e-14);

  const TensorMap seed0 = initLayerParams(program, 0, DType::F32);
  const std::vector<double> u = {-0.6134437012711798, -1.303011535480209, 0.0860330750460329,
                                 -1.5137140213729925, 0.8906542008454706};
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(seed0.at("U").get(i), static_cast<double>(static_cast<float>(0.5 * u[i])));
}

TEST(InitLayerParams, DeterministicPerSeedAndIndependentPerName) {
  const ir::LayerProgram both =
      programWith({parameter("A", {3, 4}, 0.1), parameter("B", {3, 4}, 0.1)});
  const ir::LayerProgram onlyA = programWith({parameter("A", {3, 4}, 0.1)});
  const TensorMap first = initLayerParams(both, 5, DType::F64);
  const TensorMap again = initLayerParams(both, 5, DType::F64);
  EXPECT_TRUE(sameValues(first.at("A"), again.at("A")));
  EXPECT_TRUE(sameValues(first.at("B"), again.at("B")));
  // Dropping B does not change A; A and B differ; another seed differs.
  EXPECT_TRUE(sameValues(first.at("A"), initLayerParams(onlyA, 5, DType::F64).at("A")));
  EXPECT_FALSE(sameValues(first.at("A"), first.at("B")));
  EXPECT_FALSE(sameValues(first.at("A"), initLayerParams(both, 6, DType::F64).at("A")));
  // float32 is the float64 draw, rounded.
  const TensorMap single = initLayerParams(both, 5, DType::F32);
  EXPECT_EQ(single.at("A").dtype(), DType::F32);
  for (int64_t i = 0; i < 12; ++i)
    EXPECT_EQ(single.at("A").get(i), static_cast<double>(static_cast<float>(first.at("A").get(i))));
}

TEST(InitLayerParams, HasTheRequestedStandardDeviation) {
  const ir::LayerProgram program = programWith({parameter("W", {200, 150}, 0.25)});
  const Tensor w = initLayerParams(program, 123, DType::F64).at("W");
  double sum = 0, sumOfSquares = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    sum += w.get(i);
    sumOfSquares += w.get(i) * w.get(i);
  }
  const double n = static_cast<double>(w.numel());
  const double mean = sum / n;
  const double std = std::sqrt(sumOfSquares / n - mean * mean);
  // 30000 samples: the standard error of the mean is 0.25/173 = 0.0014, of the std about 0.001.
  EXPECT_NEAR(mean, 0.0, 0.006);
  EXPECT_NEAR(std, 0.25, 0.005);
}

TEST(InitLayerParams, GainsAndZeroInitialisedCores) {
  ir::Parameter gain = parameter("W1_gamma", {}, 0.0);
  gain.isScalarGain = true;
  ir::Parameter last = parameter("W1", {2, 3}, 0.5);
  last.zeroInitIfResidual = true;
  const ir::LayerProgram program = programWith({parameter("W0", {3, 2}, 0.5), last, gain});

  const TensorMap plain = initLayerParams(program, 1, DType::F64);
  EXPECT_EQ(plain.at("W1_gamma").shape(), Shape{});
  EXPECT_EQ(plain.at("W1_gamma").get(0), 1.0);
  double lastNorm = 0;
  for (int64_t i = 0; i < 6; ++i) lastNorm += std::abs(plain.at("W1").get(i));
  EXPECT_GT(lastNorm, 0.0);

  const TensorMap zeroed = initLayerParams(program, 1, DType::F64, /*zeroLast=*/true);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(zeroed.at("W1").get(i), 0.0);
  EXPECT_TRUE(sameValues(zeroed.at("W0"), plain.at("W0")));
  EXPECT_EQ(zeroed.at("W1_gamma").get(0), 1.0);
}

TEST(InitLayerParams, RejectsInvalidStd) {
  EXPECT_THROW(initLayerParams(programWith({parameter("W", {2}, -1.0)}), 0, DType::F64), UserError);
  EXPECT_THROW(initLayerParams(programWith({parameter("W", {2}, NAN)}), 0, DType::F64), UserError);
}

}  // namespace
}  // namespace einjit
