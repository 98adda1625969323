// The generated CUDA kernels run on the host (emitHostSimulation: the same kernel bodies, blocks
// and phases run in turn) and are compared with the reference executor: every structure,
// forward and backward, at float64 (tight tolerance: any index error shows), float32 and
// bfloat16; the shared-memory and the global-scratch placement of intermediates; row counts
// that leave a partial tile and several row chunks; the tiled contractions (scalar register
// tiles, and bf16 tensor-core tiles through the host fragment shim) on sizes that are and are
// not multiples of the tiles and of 16, with the path each case takes checked in the launch plan;
// classic einsums.
#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <vector>

#include "compiler/kernel/KernelProgram.h"
#include "frontend/einsum/BoundEinsum.h"
#include "frontend/structures/Structures.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/reference/WeightNorm.h"
#include "tests/compiler/cuda/CudaTestSupport.h"
#include "tests/compiler/cuda/HostSimulation.h"

namespace einjit::cuda::testing {
namespace {

Tensor randomTensor(const Shape& shape, uint64_t seed) {
  Tensor tensor(DType::F64, shape);
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < tensor.numel(); ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    tensor.set(i, static_cast<double>(state >> 11) / 9007199254740992.0 * 2 - 1);
  }
  return tensor;
}

struct SimCase {
  std::string spec;
  Precision precision;
  int64_t rows;
  int64_t sharedBudget;  // small budgets force intermediates into global scratch
  double tolerance;
  // Text every launch plan of the case (forward and backward) must contain, e.g. the tile kind;
  // empty: not checked.
  std::string expectedInPlan = {};
};

// Relative tolerances: f64 accumulates in double (only rounding order differs from the
// reference); f32 accumulates in float over at most a few hundred terms; bf16 rounds inputs
// and parameters to 8 mantissa bits (relative error 2^-9 each) and outputs once more, so a
// chain of two or three contractions stays within a few percent of the output scale.
constexpr double kF64Tolerance = 1e-12, kF32Tolerance = 1e-5, kBf16Tolerance = 3e-2;

std::vector<SimCase> layerCases() {
  std::vector<SimCase> cases;
  for (const std::string& spec : kSmallStructures) {
    cases.push_back({spec, Precision::F64, 67, 227 * 1024, kF64Tolerance});
    cases.push_back({withNorm(spec), Precision::F64, 5, 227 * 1024, kF64Tolerance});
  }
  cases.push_back({"btt(in=12, out=20, rank=2)", Precision::F64, 300, 64, kF64Tolerance});
  cases.push_back({"monarch(in=10, out=20, blocks=3)", Precision::F64, 67, 64, kF64Tolerance});
  cases.push_back({"tt(in=12, out=30, rank=2, cores=3)", Precision::F64, 1, 64, kF64Tolerance});
  cases.push_back({"dense(in=7, out=5)", Precision::F64, 0, 227 * 1024, kF64Tolerance});
  cases.push_back({"btt(in=24, out=30, rank=3, cores=3)", Precision::F32, 67, 227 * 1024, kF32Tolerance});
  cases.push_back({"monarch(in=20, out=10, blocks=3)", Precision::F32, 130, 227 * 1024, kF32Tolerance});
  cases.push_back({"btt(in=12, out=20, rank=2)", Precision::BF16, 67, 227 * 1024, kBf16Tolerance});
  cases.push_back({"theta(in=18, out=15, alpha=0.5, beta=0.25, gamma=0.25, delta=0.25, epsilon=0.5, "
                   "phi=0.25, rho=0.25)",
                   Precision::BF16, 9, 227 * 1024, kBf16Tolerance});
  // Tiled contractions with partial tiles: dense forward in 128-row tiles, dx, and the tiled
  // row sum of dW (several row chunks at 300 rows); scalar register tiles at f64 and f32.
  cases.push_back({"dense(in=70, out=45)", Precision::F64, 300, 227 * 1024, kF64Tolerance, "per thread"});
  cases.push_back({"dense(in=70, out=45)", Precision::F32, 5, 227 * 1024, kF32Tolerance, "per thread"});
  cases.push_back({"btt(in=64, out=80, rank=3)", Precision::F64, 130, 48 * 1024, kF64Tolerance, "per thread"});
  // bf16 on tensor cores (every extent >= 16, zero-padded to multiples of 16) ...
  cases.push_back({"dense(in=48, out=40)", Precision::BF16, 67, 227 * 1024, kBf16Tolerance, "wmma"});
  cases.push_back({"btt(in=256, out=256, rank=2)", Precision::BF16, 5, 227 * 1024, kBf16Tolerance, "wmma"});
  cases.push_back({"monarch(in=64, out=64, blocks=4)", Precision::BF16, 67, 227 * 1024, kBf16Tolerance, "wmma"});
  // ... and the scalar tiles where an extent is below 16.
  cases.push_back({"btt(in=12, out=20, rank=2)", Precision::BF16, 300, 227 * 1024, kBf16Tolerance, "per thread"});
  return cases;
}

std::string caseName(const ::testing::TestParamInfo<SimCase>& info) {
  std::string name;
  for (char c : info.param.spec)
    if (std::isalnum(static_cast<unsigned char>(c))) name += c;
  return name + "_" + precisionName(info.param.precision) + "_rows" + std::to_string(info.param.rows) +
         "_smem" + std::to_string(info.param.sharedBudget) + "_" + std::to_string(info.index);
}

class HostSimulationLayer : public ::testing::TestWithParam<SimCase> {};

TEST_P(HostSimulationLayer, ForwardAndBackwardMatchReference) {
  const SimCase& c = GetParam();
  const ir::LayerProgram layer = buildLayer(c.spec);
  // With `norm`, the weight normalisation runs on the host with the reference's own code; the
  // kernels see the normalised weights.
  const TensorMap params = initLayerParams(layer, 7, DType::F64);
  const Tensor x = randomTensor({c.rows, layer.dIn}, 1);
  const Tensor dy = randomTensor({c.rows, layer.dOut}, 2);
  const LayerGradients expected = referenceLayerBackward(layer, params, x, dy);

  EmitOptions options;
  options.precision = c.precision;
  options.sharedBytesBudget = c.sharedBudget;
  const std::vector<Tensor> weights = kernelParameterTensors(layer, params, DType::F64);
  std::vector<const Tensor*> inputs = {&x};
  for (const Tensor& weight : weights) inputs.push_back(&weight);

  if (!c.expectedInPlan.empty()) {
    for (const KernelProgram& program : {forwardKernel(layer, DType::F32), backwardKernel(layer, DType::F32)})
      EXPECT_NE(emitCuda(program, options).launchPlan().find(c.expectedInPlan), std::string::npos)
          << program.name << " does not use '" << c.expectedInPlan << "':\n"
          << emitCuda(program, options).launchPlan();
  }

  const std::vector<Tensor> y =
      simulateOnHost(forwardKernel(layer, DType::F32), options, c.rows, inputs);
  ASSERT_EQ(y.size(), 1u);
  EXPECT_LE(relativeError(y[0], expected.y), c.tolerance) << "y of " << c.spec;

  inputs.push_back(&dy);
  std::vector<Tensor> gradients =
      simulateOnHost(backwardKernel(layer, DType::F32), options, c.rows, inputs);
  ASSERT_EQ(gradients.size(), weights.size() + 1);
  EXPECT_LE(relativeError(gradients[0], expected.dx), c.tolerance) << "dx of " << c.spec;
  std::vector<const Tensor*> parameterGradients;
  for (std::size_t k = 1; k < gradients.size(); ++k) parameterGradients.push_back(&gradients[k]);
  const TensorMap dparams = layerParameterGradients(layer, params, parameterGradients, DType::F64);
  for (const auto& [name, gradient] : expected.dparams) {
    if (c.rows == 0) {
      for (int64_t i = 0; i < dparams.at(name).numel(); ++i)
        EXPECT_EQ(dparams.at(name).get(i), 0.0) << name;
      continue;
    }
    EXPECT_LE(relativeError(dparams.at(name), gradient), c.tolerance) << "d" << name << " of " << c.spec;
  }
}

INSTANTIATE_TEST_SUITE_P(Structures, HostSimulationLayer, ::testing::ValuesIn(layerCases()), caseName);

// The CPU target's training pair (a forward that also returns what the backward reads, a
// backward taking it) through the CUDA emitter: every small structure at f64, 67 rows. The
// device runtime still runs the recomputing backward; this keeps the pair compilable for it.
TEST(HostSimulationTraining, TrainingKernelsMatchReference) {
  EmitOptions options;
  options.precision = Precision::F64;
  for (const std::string& spec : kSmallStructures) {
    SCOPED_TRACE(spec);
    const ir::LayerProgram layer = buildLayer(spec);
    const TensorMap params = initLayerParams(layer, 7, DType::F64);
    const Tensor x = randomTensor({67, layer.dIn}, 1);
    const Tensor dy = randomTensor({67, layer.dOut}, 2);
    const LayerGradients expected = referenceLayerBackward(layer, params, x, dy);
    const TrainingKernels training = trainingKernels(layer, DType::F32);
    const std::vector<Tensor> weights = kernelParameterTensors(layer, params, DType::F64);
    std::vector<const Tensor*> inputs = {&x};
    for (const Tensor& weight : weights) inputs.push_back(&weight);
    const std::vector<Tensor> forward = simulateOnHost(training.forward, options, 67, inputs);
    ASSERT_EQ(forward.size(), 1 + training.savedCount());
    EXPECT_LE(relativeError(forward[0], expected.y), kF64Tolerance) << "y";
    inputs.push_back(&dy);
    for (std::size_t k = 1; k < forward.size(); ++k) inputs.push_back(&forward[k]);
    const std::vector<Tensor> gradients = simulateOnHost(training.backward, options, 67, inputs);
    ASSERT_EQ(gradients.size(), weights.size() + 1);
    EXPECT_LE(relativeError(gradients[0], expected.dx), kF64Tolerance) << "dx";
    std::vector<const Tensor*> parameterGradients;
    for (std::size_t k = 1; k < gradients.size(); ++k) parameterGradients.push_back(&gradients[k]);
    const TensorMap dparams = layerParameterGradients(layer, params, parameterGradients, DType::F64);
    for (const auto& [name, gradient] : expected.dparams)
      EXPECT_LE(relativeError(dparams.at(name), gradient), kF64Tolerance) << "d" << name;
  }
}

struct EinsumCase {
  std::string expression;
  std::vector<Shape> shapes;
};

class HostSimulationEinsum : public ::testing::TestWithParam<EinsumCase> {};

TEST_P(HostSimulationEinsum, MatchesReference) {
  const EinsumCase& c = GetParam();
  const BoundEinsum einsum = bindEinsum(parseEinsum(c.expression), c.shapes);
  const ContractionPlan plan =
      planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  std::vector<Tensor> operands;
  for (std::size_t k = 0; k < c.shapes.size(); ++k) operands.push_back(randomTensor(c.shapes[k], 10 + k));
  std::vector<const Tensor*> pointers;
  for (const Tensor& operand : operands) pointers.push_back(&operand);
  const Tensor expected = referenceEinsum(einsum, plan, pointers, DType::F64);
  EmitOptions options;
  options.precision = Precision::F64;
  const std::vector<Tensor> result =
      simulateOnHost(einsumKernel(einsum, plan, DType::F64), options, 0, pointers);
  ASSERT_EQ(result.size(), 1u);
  ASSERT_EQ(result[0].shape(), expected.shape());
  EXPECT_LE(relativeError(result[0], expected), kF64Tolerance) << c.expression;
}

INSTANTIATE_TEST_SUITE_P(
    Einsums, HostSimulationEinsum,
    ::testing::Values(EinsumCase{"ij,jk->ik", {{5, 7}, {7, 3}}},
                      EinsumCase{"ii->i", {{6, 6}}},              // diagonal
                      EinsumCase{"ii", {{4, 4}}},                 // trace (scalar result)
                      EinsumCase{"bij,bjk->bik", {{3, 4, 5}, {1, 5, 2}}},  // size-1 broadcast
                      EinsumCase{"...i,i->...", {{2, 3, 4}, {4}}},         // ellipsis
                      EinsumCase{"ijk->kji", {{2, 3, 4}}},                 // permutation only
                      EinsumCase{"ab,bc,cd->ad", {{3, 4}, {4, 5}, {5, 2}}}));

// Every view op on row and parameter values, folded into index arithmetic, with a view as the
// output (no structure uses Permute, so it is built here):
//   xp = permute(x (N,2,3), [0,2,1]); xpad = pad(xp, axis 2, to 4); wt = permute(W (3,4), [1,0])
//   y = contract("zab,bc->zac", xpad, wt); out = truncate(reshape(y + y, (N,9)), axis 1, to 7)
// Expected by hand: out[z, a*3+c] = 2 * sum_{b<2} x[z,b,a] * W[c,b], first 7 of 9 columns.
TEST(HostSimulationViews, PermutePadReshapeAddTruncate) {
  KernelProgram program;
  program.name = "views";
  auto value = [&](const std::string& name, Shape shape) {
    program.values.push_back({name, std::move(shape)});
    return static_cast<ir::ValueId>(program.values.size() - 1);
  };
  auto op = [&](ir::OpKind kind, std::vector<ir::ValueId> inputs, ir::ValueId result) {
    ir::Op o;
    o.kind = kind;
    o.inputs = std::move(inputs);
    o.result = result;
    program.ops.push_back(o);
    return &program.ops.back();
  };
  const ir::ValueId x = value("x", {ir::kRows, 2, 3}), w = value("W", {3, 4});
  const ir::ValueId xp = value("xp", {ir::kRows, 3, 2}), xpad = value("xpad", {ir::kRows, 3, 4});
  const ir::ValueId wt = value("wt", {4, 3}), y = value("y", {ir::kRows, 3, 3});
  const ir::ValueId sum = value("sum", {ir::kRows, 3, 3}), flat = value("flat", {ir::kRows, 9});
  const ir::ValueId out = value("out", {ir::kRows, 7});
  program.inputs = {x, w};
  op(ir::OpKind::Permute, {x}, xp)->perm = {0, 2, 1};
  ir::Op* pad = op(ir::OpKind::Pad, {xp}, xpad);
  pad->axis = 2;
  pad->size = 4;
  op(ir::OpKind::Permute, {w}, wt)->perm = {1, 0};
  op(ir::OpKind::Contract, {xpad, wt}, y)->equation = "zab,bc->zac";
  op(ir::OpKind::Add, {y, y}, sum);
  op(ir::OpKind::Reshape, {sum}, flat)->shape = {ir::kRows, 9};
  ir::Op* truncate = op(ir::OpKind::Truncate, {flat}, out);
  truncate->axis = 1;
  truncate->size = 7;
  program.outputs = {out};

  const int64_t rows = 70;
  const Tensor xs = randomTensor({rows, 2, 3}, 3), ws = randomTensor({3, 4}, 4);
  Tensor expected(DType::F64, {rows, 7});
  for (int64_t z = 0; z < rows; ++z)
    for (int64_t a = 0; a < 3; ++a)
      for (int64_t c = 0; c < 3; ++c) {
        if (a * 3 + c >= 7) continue;
        double total = 0;
        for (int64_t b = 0; b < 2; ++b) total += xs.get(z * 6 + b * 3 + a) * ws.get(c * 4 + b);
        expected.set(z * 7 + a * 3 + c, 2 * total);
      }
  for (const int64_t budget : {int64_t{227 * 1024}, int64_t{8}}) {
    EmitOptions options;
    options.precision = Precision::F64;
    options.sharedBytesBudget = budget;
    const std::vector<Tensor> result = simulateOnHost(program, options, rows, {&xs, &ws});
    ASSERT_EQ(result.size(), 1u);
    EXPECT_LE(relativeError(result[0], expected), kF64Tolerance) << "shared budget " << budget;
  }
}

// Tile shapes follow the sizes: a 4096-wide dense layer takes 128-row blocks and 128x128
// register tiles (8x8 per thread) forward and for dW; bf16 BTT at 4096 runs on tensor cores;
// extents below 16 keep bf16 on scalar tiles; another block size disables tiling.
TEST(TilePlan, ChosenFromTheLayerSizes) {
  EmitOptions f32;
  const ir::LayerProgram dense = buildLayer("dense(in=4096, out=4096)");
  const std::string forward = emitCuda(forwardKernel(dense, DType::F32), f32).launchPlan();
  EXPECT_NE(forward.find("128 rows per block"), std::string::npos) << forward;
  EXPECT_NE(forward.find("128x128x32 (8x8 per thread)"), std::string::npos) << forward;
  const std::string backward = emitCuda(backwardKernel(dense, DType::F32), f32).launchPlan();
  EXPECT_NE(backward.find("row chunks of 1024 tiles"), std::string::npos) << backward;

  EmitOptions bf16;
  bf16.precision = Precision::BF16;
  const ir::LayerProgram btt = buildLayer("btt(in=4096, out=4096, rank=4)");
  const std::string bttPlan = emitCuda(forwardKernel(btt, DType::F32), bf16).launchPlan();
  EXPECT_NE(bttPlan.find("bf16 wmma"), std::string::npos) << bttPlan;
  const ir::LayerProgram small = buildLayer("btt(in=12, out=20, rank=2)");
  const std::string smallPlan = emitCuda(forwardKernel(small, DType::F32), bf16).launchPlan();
  EXPECT_EQ(smallPlan.find("wmma"), std::string::npos) << smallPlan;
  EXPECT_NE(smallPlan.find("per thread"), std::string::npos) << smallPlan;

  EmitOptions otherBlock;
  otherBlock.threadsPerBlock = 128;
  EXPECT_EQ(emitCuda(forwardKernel(dense, DType::F32), otherBlock).launchPlan().find("per thread"), std::string::npos);
}

}  // namespace
}  // namespace einjit::cuda::testing
