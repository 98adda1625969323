#include "compiler/cpu/CpuBackend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "frontend/einsum/EinsumAST.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/reference/ReferenceKernelProgram.h"
#include "tests/compiler/cpu/CpuTestSupport.h"

namespace einjit::cpu {
namespace {

using test::expectClose;
using test::randomTensor;

// Compiled kernels go to a cache in the build tree, shared by the test processes (ctest runs
// them in parallel) and kept between runs.
class BuildTreeCache : public testing::Environment {
 public:
  void SetUp() override { setenv("EINJIT_CACHE_DIR", EINJIT_TEST_CACHE_DIR, 1); }
};
const testing::Environment* const kCacheEnvironment =
    testing::AddGlobalTestEnvironment(new BuildTreeCache);

// Small, non-square sizes; padding (monarch, theta), truncation, 2 and 3 cores.
const std::vector<std::string> kStructures = {
    "dense(in=7, out=5)",
    "lowrank(in=7, out=5, rank=2)",
    "kron(in=6, out=10)",
    "kron(in=12, out=30, factors=3)",
    "tt(in=6, out=10, rank=2)",
    "tt(in=12, out=30, rank=2, cores=3)",
    "monarch(in=10, out=20, blocks=3)",  // padded input, truncated output
    "monarch(in=20, out=10, blocks=3)",
    "btt(in=12, out=20, rank=2)",
    "btt(in=24, out=30, rank=2, cores=3)",
    "theta(in=18, out=15, alpha=0.5, beta=0.25, gamma=0.25, delta=0.25, epsilon=0.5, phi=0.25, "
    "rho=0.25)",
    "theta(in=15, out=18, alpha=0.5, beta=0.5, gamma=0, delta=0.5, epsilon=0.5, phi=0, rho=0.5)",
};

std::vector<std::string> allSpecs() {
  std::vector<std::string> specs;
  for (const std::string& spec : kStructures) {
    specs.push_back(spec);
    specs.push_back(spec.substr(0, spec.size() - 1) + ", norm)");
  }
  return specs;
}

std::string testName(const testing::TestParamInfo<std::string>& info) {
  std::string name;
  for (char c : info.param)
    if (std::isalnum(static_cast<unsigned char>(c))) name += c;
  return name + "_" + std::to_string(info.index);
}

// Parameters away from the weight-norm kink (RMS/sigma = 1), where the gradient jumps: weights
// at twice their init scale take the scaled branch; gains are 1.5 rather than 1.
TensorMap testParams(const ir::LayerProgram& layer, DType dtype, uint64_t seed) {
  TensorMap params = initLayerParams(layer, seed, dtype);
  for (const ir::Parameter& param : layer.params) {
    Tensor& tensor = params.at(param.name);
    for (int64_t i = 0; i < tensor.numel(); ++i)
      tensor.set(i, param.isScalarGain ? 1.5 : 2 * tensor.get(i));
  }
  return params;
}

class CpuLayer : public testing::TestWithParam<std::string> {};

TEST_P(CpuLayer, MatchesTheReferenceExecutor) {
  const ir::LayerProgram layer = buildLayer(GetParam());
  for (DType dtype : {DType::F64, DType::F32}) {
    const double rel = dtype == DType::F64 ? 1e-9 : 1e-4;
    const TensorMap params = testParams(layer, dtype, 3);
    for (int64_t rows : {0, 1, 5, 67}) {
      const std::string where = std::string(dtypeName(dtype)) + ", rows " + std::to_string(rows);
      const Tensor x = randomTensor(dtype, {rows, layer.dIn}, 100 + rows);
      const Tensor dy = randomTensor(dtype, {rows, layer.dOut}, 200 + rows);
      expectClose(cpuLayerForward(layer, params, x), referenceLayerForward(layer, params, x), rel,
                  "y, " + where);
      const LayerGradients actual = cpuLayerBackward(layer, params, x, dy);
      const LayerGradients expected = referenceLayerBackward(layer, params, x, dy);
      expectClose(actual.y, expected.y, rel, "backward y, " + where);
      expectClose(actual.dx, expected.dx, rel, "dx, " + where);
      ASSERT_EQ(actual.dparams.size(), layer.params.size());
      for (const auto& [name, gradient] : expected.dparams) {
        ASSERT_TRUE(actual.dparams.count(name)) << name;
        expectClose(actual.dparams.at(name), gradient, rel, "d" + name + ", " + where);
      }
    }
  }
}

// Central differences of L = sum(y * dy) in float64 against the CPU target's gradients.
TEST_P(CpuLayer, GradientsMatchFiniteDifferences) {
  const ir::LayerProgram layer = buildLayer(GetParam());
  const int64_t rows = 5;
  TensorMap params = testParams(layer, DType::F64, 9);
  Tensor x = randomTensor(DType::F64, {rows, layer.dIn}, 10);
  const Tensor dy = randomTensor(DType::F64, {rows, layer.dOut}, 11);
  const LayerGradients gradients = cpuLayerBackward(layer, params, x, dy);

  auto loss = [&] {
    const Tensor y = cpuLayerForward(layer, params, x);
    double sum = 0;
    for (int64_t i = 0; i < y.numel(); ++i) sum += y.get(i) * dy.get(i);
    return sum;
  };
  constexpr double kStep = 1e-5;
  constexpr int kSamples = 12;  // coordinates checked per tensor, spread over it
  auto check = [&](Tensor& variable, const Tensor& gradient, const std::string& name) {
    const double scale = test::maxAbs(gradient);
    const int64_t stride = std::max<int64_t>(1, variable.numel() / kSamples);
    for (int64_t i = 0; i < variable.numel(); i += stride) {
      const double saved = variable.get(i);
      variable.set(i, saved + kStep);
      const double up = loss();
      variable.set(i, saved - kStep);
      const double down = loss();
      variable.set(i, saved);
      const double numeric = (up - down) / (2 * kStep);
      EXPECT_NEAR(gradient.get(i), numeric, 1e-6 * std::max({std::fabs(numeric), scale, 1e-12}))
          << name << "[" << i << "]";
    }
  };
  check(x, gradients.dx, "dx");
  for (const ir::Parameter& param : layer.params)
    check(params.at(param.name), gradients.dparams.at(param.name), "d" + param.name);
}

INSTANTIATE_TEST_SUITE_P(Structures, CpuLayer, testing::ValuesIn(allSpecs()), testName);

TEST(CpuLayerContract, MixedDTypesGiveFloat64) {
  const ir::LayerProgram layer = buildLayer("btt(in=12, out=20, rank=2)");
  const TensorMap params = initLayerParams(layer, 4, DType::F64);
  const Tensor x = randomTensor(DType::F32, {9, 12}, 1);
  const Tensor dy = randomTensor(DType::F32, {9, 20}, 2);
  const Tensor y = cpuLayerForward(layer, params, x);
  EXPECT_EQ(y.dtype(), DType::F64);
  expectClose(y, referenceLayerForward(layer, params, x), 1e-9, "y");
  const TensorMap params32 = initLayerParams(layer, 4, DType::F32);
  const LayerGradients gradients = cpuLayerBackward(layer, params32, x, dy.to(DType::F64));
  EXPECT_EQ(gradients.dx.dtype(), DType::F64);
  expectClose(gradients.dx, referenceLayerBackward(layer, params32, x, dy.to(DType::F64)).dx,
              1e-9, "dx");
}

TEST(CpuLayerContract, RejectsWrongInputs) {
  const ir::LayerProgram layer = buildLayer("lowrank(in=7, out=5, rank=2)");
  TensorMap params = initLayerParams(layer, 1, DType::F32);
  const Tensor x(DType::F32, {3, 7});
  EXPECT_THROW(cpuLayerForward(layer, params, Tensor(DType::F32, {3, 6})), UserError);
  EXPECT_THROW(cpuLayerForward(layer, params, Tensor(DType::F32, {7})), UserError);
  EXPECT_THROW(cpuLayerBackward(layer, params, x, Tensor(DType::F32, {3, 4})), UserError);
  EXPECT_THROW(cpuLayerBackward(layer, params, x, Tensor(DType::F32, {2, 5})), UserError);
  TensorMap missing = params;
  missing.erase("U");
  EXPECT_THROW(cpuLayerForward(layer, missing, x), UserError);
  TensorMap extra = params;
  extra["Q"] = Tensor(DType::F32, {2});
  EXPECT_THROW(cpuLayerForward(layer, extra, x), UserError);
  TensorMap misshapen = params;
  misshapen["V"] = Tensor(DType::F32, {5, 2});
  EXPECT_THROW(cpuLayerForward(layer, misshapen, x), UserError);
}

TEST(RunKernel, ValidatesBuffersAgainstTheProgram) {
  const ir::LayerProgram layer = buildLayer("lowrank(in=7, out=5, rank=2)");
  const KernelProgram program = forwardKernel(layer, DType::F32);
  const auto kernel = compileKernel(program);
  const TensorMap params = initLayerParams(layer, 1, DType::F32);
  const Tensor x(DType::F32, {4, 7});
  Tensor y(DType::F32, {4, 5});
  const Tensor& u = params.at("U");
  const Tensor& v = params.at("V");
  runKernel(program, *kernel, 4, {&x, &u, &v}, {&y});  // well formed
  EXPECT_THROW(runKernel(program, *kernel, 3, {&x, &u, &v}, {&y}), UserError);   // rows
  EXPECT_THROW(runKernel(program, *kernel, -1, {&x, &u, &v}, {&y}), UserError);  // negative
  EXPECT_THROW(runKernel(program, *kernel, 4, {&x, &u}, {&y}), UserError);       // count
  EXPECT_THROW(runKernel(program, *kernel, 4, {&x, &v, &u}, {&y}), UserError);   // order
  EXPECT_THROW(runKernel(program, *kernel, 4, {&x, &u, nullptr}, {&y}), UserError);
  Tensor y64(DType::F64, {4, 5});
  EXPECT_THROW(runKernel(program, *kernel, 4, {&x, &u, &v}, {&y64}), UserError);  // dtype
  EXPECT_THROW(runKernel(program, *kernel, 4, {&x, &u, &v}, {}), UserError);
}

// Parameter gradients are summed from per-chunk partial results in a fixed order: repeated
// runs give identical bits, and the sum equals the reference kernel interpreter's.
TEST(RunKernel, RowSplitBackwardIsDeterministicAndExact) {
  const ir::LayerProgram layer = buildLayer("monarch(in=20, out=10, blocks=3)");
  const KernelProgram program = backwardKernel(layer, DType::F64);
  const auto kernel = compileKernel(program);
  const int64_t rows = 203;  // several chunks on any thread count, not a multiple of 8
  std::vector<Tensor> inputs;
  for (std::size_t k = 0; k < program.inputs.size(); ++k)
    inputs.push_back(randomTensor(DType::F64,
                                  test::withRows(program.values[program.inputs[k]].shape, rows),
                                  50 + k));
  std::vector<const Tensor*> inputPointers;
  for (const Tensor& input : inputs) inputPointers.push_back(&input);
  auto run = [&] {
    std::vector<Tensor> outputs;
    for (ir::ValueId id : program.outputs)
      outputs.emplace_back(DType::F64, test::withRows(program.values[id].shape, rows));
    std::vector<Tensor*> outputPointers;
    for (Tensor& output : outputs) outputPointers.push_back(&output);
    runKernel(program, *kernel, rows, inputPointers, outputPointers);
    return outputs;
  };
  const std::vector<Tensor> first = run(), second = run();
  const std::vector<Tensor> expected = referenceRunKernel(program, rows, inputPointers);
  ASSERT_EQ(first.size(), expected.size());
  for (std::size_t k = 0; k < first.size(); ++k) {
    EXPECT_EQ(std::memcmp(first[k].raw(), second[k].raw(), first[k].nbytes()), 0) << "output " << k;
    expectClose(first[k], expected[k], 1e-9, "output " + std::to_string(k));
  }
}

struct EinsumCase {
  std::string spec;
  std::vector<Shape> shapes;
};

TEST(CpuEinsum, ClassicEinsumsMatchTheReference) {
  const std::vector<EinsumCase> cases = {
      {"ij,jk->ik", {{3, 5}, {5, 4}}},
      {"bij,bjk->bik", {{2, 3, 5}, {2, 5, 4}}},
      {"ijk,jl->lik", {{3, 4, 5}, {4, 6}}},
      {"ab,bc,cd->ad", {{3, 7}, {7, 2}, {2, 5}}},
      {"i,j->ij", {{4}, {3}}},
      {"ij->j", {{6, 5}}},
      {"ij->ji", {{6, 5}}},
      {"ii->i", {{4, 4}}},
  };
  for (const EinsumCase& c : cases)
    for (DType dtype : {DType::F64, DType::F32}) {
      SCOPED_TRACE(c.spec + " " + dtypeName(dtype));
      const BoundEinsum einsum = bindEinsum(parseEinsum(c.spec), c.shapes);
      const ContractionPlan plan =
          planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
      std::vector<Tensor> operands;
      for (std::size_t k = 0; k < c.shapes.size(); ++k)
        operands.push_back(randomTensor(dtype, c.shapes[k], 70 + k));
      std::vector<const Tensor*> pointers;
      for (const Tensor& operand : operands) pointers.push_back(&operand);
      expectClose(cpuEinsum(einsum, plan, pointers, dtype),
                  referenceEinsum(einsum, plan, pointers, dtype),
                  dtype == DType::F64 ? 1e-9 : 1e-4, "result");
      EXPECT_THROW(cpuEinsum(einsum, plan, {}, dtype), UserError);
      const Tensor misshapen(dtype, Shape(c.shapes[0].size(), 9));
      pointers[0] = &misshapen;
      EXPECT_THROW(cpuEinsum(einsum, plan, pointers, dtype), UserError);
    }
}

}  // namespace
}  // namespace einjit::cpu
