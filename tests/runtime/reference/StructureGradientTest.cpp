// Gradients of every named structure (frontend/structures) against finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "frontend/structures/Structures.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "tests/runtime/reference/GradientCheck.h"

namespace einjit {
namespace {

using testing::expectGradientsMatchFiniteDifferences;
using testing::randomTensor;

const char* const kSpecs[] = {
    "dense(in=6, out=5)",
    "lowrank(in=8, out=6, rank=2)",
    "kron(in=12, out=6)",
    "kron(in=12, out=8, factors=3)",
    "tt(in=12, out=8, rank=2)",
    "tt(in=8, out=12, rank=2, cores=3)",
    "monarch(in=16, out=12, blocks=4)",
    "monarch(in=10, out=14, blocks=4)",
    "monarch(in=14, out=10, blocks=4)",
    "btt(in=16, out=12, rank=2)",
    "btt(in=8, out=12, rank=2, cores=3)",
    "theta(in=16, out=16, alpha=0.5, beta=0.25, gamma=0.25, delta=0.25, epsilon=0.5, phi=0.25, "
    "rho=0.25)",
    "theta(in=12, out=14, alpha=0.5, beta=0.25, gamma=0.25, delta=0.25, epsilon=0.5, phi=0.25, "
    "rho=0.25)",
    "theta(in=16, out=9, alpha=0.5, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5, rho=0)",
};

// The spec with ", norm" before its closing parenthesis.
std::string withNorm(const std::string& spec) {
  return spec.substr(0, spec.size() - 1) + ", norm)";
}

enum class NormRegime { None, Clamped, Unclamped };

void checkStructure(const std::string& spec, NormRegime regime, uint64_t seed) {
  const double weightScale = regime == NormRegime::Clamped     ? 5.0
                             : regime == NormRegime::Unclamped ? 0.2
                                                               : 1.0;
  SCOPED_TRACE(spec + ", weights scaled by " + std::to_string(weightScale));
  const ir::LayerProgram program = buildLayer(spec);
  TensorMap params = initLayerParams(program, seed, DType::F64);
  for (const ir::Parameter& param : program.params) {
    Tensor& tensor = params.at(param.name);
    for (int64_t i = 0; i < tensor.numel(); ++i)
      tensor.set(i, param.isScalarGain ? 1.3 : tensor.get(i) * weightScale);
  }
  // Every core is normalised, in the intended regime.
  int normalised = 0;
  for (const ir::Op& op : program.ops) {
    if (op.kind != ir::OpKind::WeightNorm) continue;
    ++normalised;
    for (const ir::Parameter& param : program.params)
      if (param.value == op.inputs[0]) {
        const Tensor& w = params.at(param.name);
        double sumOfSquares = 0;
        for (int64_t i = 0; i < w.numel(); ++i) sumOfSquares += w.get(i) * w.get(i);
        const double ratio = std::sqrt(sumOfSquares / w.numel() + op.normEps) / op.normSigma;
        if (regime == NormRegime::Clamped) {
          EXPECT_GT(ratio, 1.5) << param.name;
        } else {
          EXPECT_LT(ratio, 0.67) << param.name;
        }
      }
  }
  int cores = 0;
  for (const ir::Parameter& param : program.params) cores += param.isScalarGain ? 0 : 1;
  EXPECT_EQ(normalised, regime == NormRegime::None ? 0 : cores);
  std::mt19937_64 rng(seed);
  const Tensor x = randomTensor({3, program.dIn}, rng);
  const Tensor dy = randomTensor({3, program.dOut}, rng);
  expectGradientsMatchFiniteDifferences(program, params, x, dy);
}

TEST(StructureGradients, EveryStructure) {
  uint64_t seed = 100;
  for (const char* spec : kSpecs) checkStructure(spec, NormRegime::None, ++seed);
}

// Weight normalisation at init sits at RMS(W) ~ sigma, the switch of max(1, RMS/sigma): scale
// the weights well into each regime so that finite differences never straddle it.
TEST(StructureGradients, EveryStructureWithNormClamped) {
  uint64_t seed = 200;
  for (const char* spec : kSpecs) checkStructure(withNorm(spec), NormRegime::Clamped, ++seed);
}

TEST(StructureGradients, EveryStructureWithNormUnclamped) {
  uint64_t seed = 300;
  for (const char* spec : kSpecs) checkStructure(withNorm(spec), NormRegime::Unclamped, ++seed);
}

}  // namespace
}  // namespace einjit
