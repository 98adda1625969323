// The naive loops of bench/ against the reference executor (independent code: generic n-ary
// einsum loops over the layer IR, double accumulation), forward and every gradient.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "bench/NaiveLayers.h"
#include "einjit/error.h"
#include "frontend/structures/Structures.h"
#include "runtime/reference/ReferenceExecutor.h"

namespace einjit::bench {
namespace {

Tensor randomF32(const Shape& shape, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  Tensor tensor(DType::F32, shape);
  for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, normal(rng));
  return tensor;
}

void expectClose(const std::string& what, const Tensor& got, const Tensor& expected) {
  SCOPED_TRACE(what);
  ASSERT_EQ(got.shape(), expected.shape());
  double maxExpected = 0;
  for (int64_t i = 0; i < expected.numel(); ++i)
    maxExpected = std::max(maxExpected, std::abs(expected.get(i)));
  ASSERT_GT(maxExpected, 0.0);
  for (int64_t i = 0; i < got.numel(); ++i)
    ASSERT_NEAR(got.get(i), expected.get(i), 1e-5 * maxExpected) << "at flat index " << i;
}

class NaiveLayers : public ::testing::TestWithParam<const char*> {};

TEST_P(NaiveLayers, MatchReferenceExecutor) {
  const ir::LayerProgram layer = buildLayer(GetParam());
  ASSERT_TRUE(hasNaiveLoops(layer));
  std::mt19937_64 rng(7);
  TensorMap params;
  for (const ir::Parameter& param : layer.params) params[param.name] = randomF32(param.shape, rng);
  const int64_t rows = 5;
  const Tensor x = randomF32({rows, layer.dIn}, rng);
  const Tensor dy = randomF32({rows, layer.dOut}, rng);

  expectClose("y (forward)", naiveForward(layer, params, x),
              referenceLayerForward(layer, params, x));
  const LayerGradients got = naiveBackward(layer, params, x, dy);
  const LayerGradients expected = referenceLayerBackward(layer, params, x, dy);
  expectClose("y", got.y, expected.y);
  expectClose("dx", got.dx, expected.dx);
  ASSERT_EQ(got.dparams.size(), expected.dparams.size());
  for (const auto& [name, gradient] : expected.dparams) {
    ASSERT_TRUE(got.dparams.count(name)) << name;
    expectClose("d" + name, got.dparams.at(name), gradient);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Structures, NaiveLayers,
    ::testing::Values("dense(in=6, out=5)", "lowrank(in=8, out=6, rank=2)",
                      "low_rank(in=7, out=9, rank=3)", "monarch(in=16, out=12, blocks=4)",
                      "monarch(in=10, out=14, blocks=4)", "monarch(in=14, out=10, blocks=4)",
                      "monarch(in=16, out=16, blocks=-1)", "btt(in=16, out=12, rank=2)",
                      "btt(in=12, out=20, rank=3)", "btt(in=7, out=9)",
                      "btt(in=16, out=16, cores=2)"),
    [](const ::testing::TestParamInfo<const char*>& info) {
      std::string name;
      for (const char* c = info.param; *c; ++c)
        if (std::isalnum(static_cast<unsigned char>(*c))) name += *c;
      return name;
    });

TEST(NaiveLayersCoverage, OnlyPlainDenseLowRankMonarchAndTwoCoreBtt) {
  for (const char* spec :
       {"kron(in=12, out=6)", "tt(in=12, out=8, rank=2)", "btt(in=8, out=12, rank=2, cores=3)",
        "dense(in=6, out=5, norm)", "btt(in=16, out=12, rank=2, norm)",
        "theta(in=16, out=9, alpha=0.5, beta=0, gamma=0.5, delta=0, epsilon=0.5, "
        "phi=0.5, rho=0)"}) {
    const ir::LayerProgram layer = buildLayer(spec);
    EXPECT_FALSE(hasNaiveLoops(layer)) << spec;
    const Tensor x(DType::F32, {2, layer.dIn});
    EXPECT_THROW(naiveForward(layer, initLayerParams(layer, 1, DType::F32), x), UserError) << spec;
  }
}

TEST(NaiveLayersInputs, RejectWrongShapesAndTypes) {
  const ir::LayerProgram layer = buildLayer("dense(in=4, out=3)");
  const TensorMap params = initLayerParams(layer, 1, DType::F32);
  EXPECT_THROW(naiveForward(layer, params, Tensor(DType::F32, {2, 5})), UserError);
  EXPECT_THROW(naiveForward(layer, params, Tensor(DType::F64, {2, 4})), UserError);
  EXPECT_THROW(naiveBackward(layer, params, Tensor(DType::F32, {2, 4}), Tensor(DType::F32, {3, 3})),
               UserError);
  EXPECT_THROW(
      naiveForward(layer, initLayerParams(layer, 1, DType::F64), Tensor(DType::F32, {2, 4})),
      UserError);
  EXPECT_THROW(naiveForward(layer, TensorMap{}, Tensor(DType::F32, {2, 4})), UserError);
}

// A case small enough to write out by hand: dense 2 -> 2 on one row.
TEST(NaiveLayersInputs, DenseByHand) {
  const ir::LayerProgram layer = buildLayer("dense(in=2, out=2)");
  TensorMap params;
  params["W"] = Tensor(DType::F32, {2, 2});
  const float w[] = {1, 2, 3, 4};  // W = [[1, 2], [3, 4]]
  for (int i = 0; i < 4; ++i) params["W"].set(i, w[i]);
  Tensor x(DType::F32, {1, 2});
  x.set(0, 5);
  x.set(1, 6);
  Tensor dy(DType::F32, {1, 2});
  dy.set(0, 1);
  dy.set(1, -1);
  const LayerGradients g = naiveBackward(layer, params, x, dy);
  EXPECT_EQ(g.y.get(0), 5 * 1 + 6 * 3);
  EXPECT_EQ(g.y.get(1), 5 * 2 + 6 * 4);
  EXPECT_EQ(g.dx.get(0), 1 * 1 - 1 * 2);  // dy W^T
  EXPECT_EQ(g.dx.get(1), 1 * 3 - 1 * 4);
  const float dw[] = {5, -5, 6, -6};  // x^T dy
  for (int i = 0; i < 4; ++i) EXPECT_EQ(g.dparams.at("W").get(i), dw[i]);
}

}  // namespace
}  // namespace einjit::bench
