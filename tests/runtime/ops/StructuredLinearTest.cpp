// StructuredLinear: gradients against central finite differences (float64) for every
// structure, with and without bias and weight normalisation; forward values against the
// reference executor; parameter metadata; errors.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "runtime/ops/StructuredLinear.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "tests/runtime/ops/OpsTestUtil.h"

namespace einjit::rt {
namespace {

using testing::expectGradientsMatch;
using testing::maxAbsDifference;
using testing::randomTensor;

struct LayerCase {
  std::string spec;
  int64_t dIn, dOut;
};

const std::vector<LayerCase>& layerCases() {
  static const std::vector<LayerCase> cases = {
      {"dense", 5, 3},
      {"btt(rank=2)", 8, 6},
      {"monarch(blocks=2)", 8, 6},
      {"lowrank(rank=2)", 6, 5},
      {"kron", 6, 4},
      {"tt(rank=2)", 8, 4},
      {"theta(alpha=0.5, beta=0.25, gamma=0.25, delta=0.25, epsilon=0.5, phi=0.25, rho=0.25)", 16,
       16},
  };
  return cases;
}

// Multiplies every weight (not the bias, not the scalar norm gains) by `factor` and fills the
// bias (zero-initialised) with random values, so that it takes part in the checks.
void perturbParameters(const StructuredLinear& layer, double factor, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 0.5);
  for (const ParameterInfo& info : layer.parameters()) {
    Tensor& value = info.var->value;
    const bool isBias = info.var->name.ends_with(".bias");
    if (value.numel() == 1 && !isBias) continue;
    for (int64_t i = 0; i < value.numel(); ++i)
      value.set(i, isBias ? normal(rng) : value.get(i) * factor);
  }
}

std::vector<Var> allVars(const StructuredLinear& layer, const Var& x) {
  std::vector<Var> vars = {x};
  for (const ParameterInfo& info : layer.parameters()) vars.push_back(info.var);
  return vars;
}

void checkLayerGradients(const std::string& spec, int64_t dIn, int64_t dOut, bool bias,
                         double weightFactor, uint64_t seed) {
  SCOPED_TRACE(spec + (bias ? " with bias" : "") + ", weights x" + std::to_string(weightFactor));
  std::mt19937_64 rng(seed);
  StructuredLinear layer("layer", spec, dIn, dOut, bias, seed, DType::F64);
  perturbParameters(layer, weightFactor, rng);
  Var x = parameter(randomTensor({5, dIn}, rng), "x");
  expectGradientsMatch(
      allVars(layer, x), [&](Tape& tape) { return layer.forward(tape, x); }, spec, 1e-6);
}

TEST(StructuredLinearGradients, EveryStructureWithAndWithoutBias) {
  uint64_t seed = 100;
  for (const LayerCase& c : layerCases())
    for (bool bias : {false, true}) checkLayerGradients(c.spec, c.dIn, c.dOut, bias, 1.0, ++seed);
}

TEST(StructuredLinearGradients, WeightNormClampedAndUnclamped) {
  // Weights scaled up: RMS/sigma > 1, the clamp divides; scaled down: the clamp is inactive.
  uint64_t seed = 200;
  for (double factor : {3.0, 0.3}) {
    checkLayerGradients("btt(rank=2, norm)", 8, 6, false, factor, ++seed);
    checkLayerGradients("btt(rank=2, norm)", 8, 6, true, factor, ++seed);
    checkLayerGradients("monarch(blocks=2, norm)", 8, 6, false, factor, ++seed);
  }
}

TEST(StructuredLinearForward, MatchesReferenceExecutorPlusBias) {
  uint64_t seed = 300;
  for (const LayerCase& c : layerCases())
    for (DType dtype : {DType::F64, DType::F32}) {
      SCOPED_TRACE(c.spec + " " + dtypeName(dtype));
      std::mt19937_64 rng(++seed);
      StructuredLinear layer("l", c.spec, c.dIn, c.dOut, true, seed, dtype);
      perturbParameters(layer, 1.0, rng);
      TensorMap params;
      for (const ir::Parameter& param : layer.program().params)
        for (const ParameterInfo& info : layer.parameters())
          if (info.var->name == "l." + param.name) params[param.name] = info.var->value;
      const Tensor x = randomTensor({7, c.dIn}, rng, 1.0, dtype);
      Tensor expected = referenceLayerForward(layer.program(), params, x);
      const Tensor& biasValue = layer.parameters().back().var->value;
      for (int64_t r = 0; r < 7; ++r)
        for (int64_t j = 0; j < c.dOut; ++j)
          expected.set(r * c.dOut + j, expected.get(r * c.dOut + j) + biasValue.get(j));
      Tape tape;
      const Var y = layer.forward(tape, constant(x));
      EXPECT_LT(maxAbsDifference(y->value, expected), dtype == DType::F64 ? 1e-12 : 1e-5);
    }
}

TEST(StructuredLinearParameters, NamesMultipliersDecayAndInit) {
  StructuredLinear layer("blocks.0.mlp.fc", "btt(rank=2)", 8, 6, true, 1, DType::F32, true);
  const ir::LayerProgram& program = layer.program();
  ASSERT_EQ(layer.parameters().size(), program.params.size() + 1);
  for (size_t i = 0; i < program.params.size(); ++i) {
    const ParameterInfo& info = layer.parameters()[i];
    EXPECT_EQ(info.var->name, "blocks.0.mlp.fc." + program.params[i].name);
    EXPECT_EQ(info.lrMultiplier, program.params[i].lrMult);
    EXPECT_EQ(info.weightDecay, program.params[i].weightDecay);
    EXPECT_EQ(info.var->value.shape(), program.params[i].shape);
    EXPECT_TRUE(info.var->requiresGrad);
  }
  const ParameterInfo& bias = layer.parameters().back();
  EXPECT_EQ(bias.var->name, "blocks.0.mlp.fc.bias");
  EXPECT_EQ(bias.var->value.shape(), Shape{6});
  EXPECT_EQ(bias.lrMultiplier, 1.0);
  EXPECT_FALSE(bias.weightDecay);
  // zeroLast: the last core (W1) is zero, so is the output.
  Tape tape;
  Tensor x(DType::F32, {2, 8});
  for (int64_t i = 0; i < x.numel(); ++i) x.set(i, 1.0 + static_cast<double>(i));
  const Var y = layer.forward(tape, constant(x));
  for (int64_t i = 0; i < y->value.numel(); ++i) EXPECT_EQ(y->value.get(i), 0.0);
  EXPECT_EQ(layer.macsPerRow(), program.macsPerRow());
}

TEST(StructuredLinearParameters, MuPBaseWidthScalesTheDenseMultiplier) {
  // Dense: kappa = base width / input width (structures.md section 3).
  StructuredLinear own("a", "dense", 16, 8, false, 1);
  StructuredLinear wider("b", "dense", 16, 8, false, 1, DType::F32, false, 64);
  EXPECT_DOUBLE_EQ(own.parameters()[0].lrMultiplier, 1.0);
  EXPECT_DOUBLE_EQ(wider.parameters()[0].lrMultiplier, 4.0);
}

TEST(StructuredLinearErrors, BadInputs) {
  StructuredLinear layer("proj", "dense", 4, 3, false, 1);
  Tape tape;
  EXPECT_THROW(layer.forward(tape, constant(Tensor(DType::F32, {2, 5}))), UserError);
  EXPECT_THROW(layer.forward(tape, constant(Tensor(DType::F32, {4}))), UserError);
  EXPECT_THROW(layer.forward(tape, constant(Tensor(DType::F64, {2, 4}))), UserError);
  EXPECT_THROW(layer.forward(tape, nullptr), UserError);
  EXPECT_THROW(StructuredLinear("bad", "btt(rank=0)", 8, 8, false, 1), UserError);
  EXPECT_THROW(StructuredLinear("bad", "nonsense", 8, 8, false, 1), UserError);
  EXPECT_THROW(StructuredLinear("bad", "dense", 8, 8, false, 1, DType::F32, false, -1), UserError);
  try {
    layer.forward(tape, constant(Tensor(DType::F32, {2, 5})));
  } catch (const UserError& error) {
    EXPECT_NE(std::string(error.what()).find("expected (rows, 4)"), std::string::npos)
        << error.what();
    EXPECT_NE(std::string(error.what()).find("proj"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace einjit::rt
