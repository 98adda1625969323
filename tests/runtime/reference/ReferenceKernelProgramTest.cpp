// The kernel-program interpreter and the host-side weight normalisation helpers, against values
// computed here with plain loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "compiler/kernel/KernelProgram.h"
#include "einjit/error.h"
#include "runtime/reference/ReferenceKernelProgram.h"
#include "runtime/reference/WeightNorm.h"
#include "tests/runtime/reference/GradientCheck.h"

namespace einjit {
namespace {

using ir::kRows;
using testing::randomTensor;

ir::ValueId addValue(KernelProgram& program, const std::string& name, Shape shape) {
  program.values.push_back({name, std::move(shape)});
  return static_cast<ir::ValueId>(program.values.size() - 1);
}

ir::ValueId addOp(KernelProgram& program, ir::Op op, const std::string& name, Shape shape) {
  op.result = addValue(program, name, std::move(shape));
  program.ops.push_back(op);
  return op.result;
}

ir::Op makeOp(ir::OpKind kind, std::vector<ir::ValueId> inputs) {
  ir::Op op;
  op.kind = kind;
  op.inputs = std::move(inputs);
  return op;
}

// x (N, 4) viewed (N, 2, 2), transposed, times W (2, 3) -> (N, 2, 3), flattened to 6, cut to 5,
// padded to 7, doubled by adding it to itself.
KernelProgram everyOpProgram() {
  KernelProgram program;
  program.name = "every_op";
  program.dtype = DType::F64;
  const ir::ValueId x = addValue(program, "x", {kRows, 4});
  const ir::ValueId w = addValue(program, "W", {2, 3});
  program.inputs = {x, w};
  ir::Op view = makeOp(ir::OpKind::Reshape, {x});
  view.shape = {kRows, 2, 2};
  const ir::ValueId viewed = addOp(program, view, "viewed", view.shape);
  ir::Op transpose = makeOp(ir::OpKind::Permute, {viewed});
  transpose.perm = {0, 2, 1};
  const ir::ValueId transposed = addOp(program, transpose, "transposed", {kRows, 2, 2});
  ir::Op contract = makeOp(ir::OpKind::Contract, {transposed, w});
  contract.equation = "zab,bc->zac";
  const ir::ValueId product = addOp(program, contract, "product", {kRows, 2, 3});
  ir::Op flat = makeOp(ir::OpKind::Reshape, {product});
  flat.shape = {kRows, 6};
  const ir::ValueId flattened = addOp(program, flat, "flat", flat.shape);
  ir::Op cut = makeOp(ir::OpKind::Truncate, {flattened});
  cut.axis = 1;
  cut.size = 5;
  const ir::ValueId truncated = addOp(program, cut, "cut", {kRows, 5});
  ir::Op pad = makeOp(ir::OpKind::Pad, {truncated});
  pad.axis = 1;
  pad.size = 7;
  const ir::ValueId padded = addOp(program, pad, "padded", {kRows, 7});
  program.outputs = {addOp(program, makeOp(ir::OpKind::Add, {padded, padded}), "y", {kRows, 7})};
  return program;
}

TEST(ReferenceKernelProgram, RunsEveryOp) {
  const KernelProgram program = everyOpProgram();
  std::mt19937_64 rng(1);
  const Tensor x = randomTensor({3, 4}, rng);
  const Tensor w = randomTensor({2, 3}, rng);
  const std::vector<Tensor> outputs = referenceRunKernel(program, 3, {&x, &w});
  ASSERT_EQ(outputs.size(), 1u);
  ASSERT_EQ(outputs[0].shape(), (Shape{3, 7}));
  EXPECT_EQ(outputs[0].dtype(), DType::F64);
  for (int n = 0; n < 3; ++n)
    for (int f = 0; f < 7; ++f) {
      // product[n,a,c] = sum_b x[n, b*2 + a] W[b,c], flattened as a*3 + c.
      double expected = 0;
      if (f < 5)
        for (int b = 0; b < 2; ++b) expected += x.get(n * 4 + b * 2 + f / 3) * w.get(b * 3 + f % 3);
      EXPECT_NEAR(outputs[0].get(n * 7 + f), 2 * expected, 1e-12) << "n " << n << " f " << f;
    }
}

TEST(ReferenceKernelProgram, ZeroRowsAndFloat32) {
  KernelProgram program = everyOpProgram();
  program.dtype = DType::F32;
  std::mt19937_64 rng(2);
  const Tensor x(DType::F32, {0, 4});
  const Tensor w = randomTensor({2, 3}, rng);
  const std::vector<Tensor> outputs = referenceRunKernel(program, 0, {&x, &w});
  ASSERT_EQ(outputs.size(), 1u);
  EXPECT_EQ(outputs[0].shape(), (Shape{0, 7}));
  EXPECT_EQ(outputs[0].dtype(), DType::F32);
}

TEST(ReferenceKernelProgram, RejectsBadInputsAndPrograms) {
  const KernelProgram program = everyOpProgram();
  std::mt19937_64 rng(3);
  const Tensor x = randomTensor({2, 4}, rng);
  const Tensor w = randomTensor({2, 3}, rng);
  const Tensor wrongW = randomTensor({3, 2}, rng);
  EXPECT_THROW(referenceRunKernel(program, 2, {&x}), UserError);
  EXPECT_THROW(referenceRunKernel(program, 2, {&x, &wrongW}), UserError);
  EXPECT_THROW(referenceRunKernel(program, 3, {&x, &w}), UserError);  // rows differ
  EXPECT_THROW(referenceRunKernel(program, -1, {&x, &w}), UserError);
  EXPECT_THROW(referenceRunKernel(program, 2, {&x, nullptr}), UserError);

  KernelProgram badId = program;
  badId.ops[2].inputs[1] = 99;
  EXPECT_THROW(referenceRunKernel(badId, 2, {&x, &w}), UserError);
  KernelProgram badEquation = program;
  badEquation.ops[2].equation = "zab,cb->zac";  // W is (2, 3): b has extents 2 and 3
  EXPECT_THROW(referenceRunKernel(badEquation, 2, {&x, &w}), UserError);
  KernelProgram norm = program;
  norm.ops[4].kind = ir::OpKind::WeightNorm;
  EXPECT_THROW(referenceRunKernel(norm, 2, {&x, &w}), UserError);
  KernelProgram rowsMoved = program;
  rowsMoved.ops[1].perm = {1, 0, 2};
  EXPECT_THROW(referenceRunKernel(rowsMoved, 2, {&x, &w}), UserError);
}

// y = x W~, W~ = gamma * W / max(1, RMS(W)/sigma), plus an unnormalised bias-like factor B.
ir::LayerProgram normalisedLayer(double sigma) {
  ir::LayerProgram layer;
  layer.spec = "norm-helper-test";
  layer.dIn = 2;
  layer.dOut = 3;
  auto value = [&](const std::string& name, Shape shape) {
    layer.values.push_back({name, std::move(shape)});
    return static_cast<ir::ValueId>(layer.values.size() - 1);
  };
  auto param = [&](const std::string& name, Shape shape) {
    ir::Parameter parameter;
    parameter.name = name;
    parameter.shape = shape;
    parameter.value = value(name, shape);
    layer.params.push_back(parameter);
    return parameter.value;
  };
  layer.input = value("x", {kRows, 2});
  const ir::ValueId w = param("W", {2, 3});
  const ir::ValueId gamma = param("W_gamma", {});
  const ir::ValueId b = param("B", {3});
  ir::Op norm = makeOp(ir::OpKind::WeightNorm, {w, gamma});
  norm.normSigma = sigma;
  norm.normEps = 1e-8;
  norm.result = value("W_normed", {2, 3});
  layer.ops.push_back(norm);
  ir::Op contract = makeOp(ir::OpKind::Contract, {layer.input, norm.result, b});
  contract.equation = "zi,io,o->zo";
  contract.result = layer.output = value("y", {kRows, 3});
  layer.ops.push_back(contract);
  return layer;
}

// Random parameters of normalisedLayer: W (2 x 3), its gain W_gamma = gamma, and B (3).
TensorMap normalisedLayerParams(std::mt19937_64& rng, double gamma) {
  TensorMap params = {{"W", randomTensor({2, 3}, rng)},
                      {"W_gamma", Tensor(DType::F64, {})},
                      {"B", randomTensor({3}, rng)}};
  params.at("W_gamma").set(0, gamma);
  return params;
}

TEST(WeightNormHelpers, KernelParameterTensorsAreTheNormalisedWeights) {
  for (const double sigma : {0.1, 10.0}) {  // clamped, unclamped
    const ir::LayerProgram layer = normalisedLayer(sigma);
    const std::vector<KernelParameterInput> inputs = kernelParameterInputs(layer);
    ASSERT_EQ(inputs.size(), 2u);  // W (normalised) and B; the gain is no kernel input
    EXPECT_EQ(inputs[0].param, 0);
    EXPECT_EQ(inputs[0].weightNormOp, 0);
    EXPECT_EQ(inputs[1].param, 2);
    EXPECT_EQ(inputs[1].weightNormOp, -1);

    std::mt19937_64 rng(4);
    TensorMap params = normalisedLayerParams(rng, 1.5);
    const std::vector<Tensor> tensors = kernelParameterTensors(layer, params, DType::F32);
    ASSERT_EQ(tensors.size(), 2u);
    double sumOfSquares = 0;
    for (int i = 0; i < 6; ++i) sumOfSquares += params.at("W").get(i) * params.at("W").get(i);
    const double rms = std::sqrt(sumOfSquares / 6 + 1e-8);
    const double scale = 1.5 / std::max(1.0, rms / sigma);
    EXPECT_EQ(tensors[0].dtype(), DType::F32);
    for (int i = 0; i < 6; ++i) EXPECT_NEAR(tensors[0].get(i), scale * params.at("W").get(i), 1e-6);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(tensors[1].get(i), params.at("B").get(i), 1e-6);
  }
}

TEST(WeightNormHelpers, ChainRuleMatchesTheLayerInterpreter) {
  for (const double sigma : {0.1, 10.0}) {
    const ir::LayerProgram layer = normalisedLayer(sigma);
    std::mt19937_64 rng(5);
    TensorMap params = normalisedLayerParams(rng, 0.7);
    const Tensor x = randomTensor({4, 2}, rng);
    const Tensor dy = randomTensor({4, 3}, rng);
    const LayerGradients expected = referenceLayerBackward(layer, params, x, dy);

    // Gradients with respect to the kernel inputs, written out: dW~ = x^T (dy * B),
    // dB[o] = sum_{z,i} x[z,i] W~[i,o] dy[z,o].
    const std::vector<Tensor> inputs = kernelParameterTensors(layer, params, DType::F64);
    Tensor dNormed(DType::F64, {2, 3}), dB(DType::F64, {3});
    for (int z = 0; z < 4; ++z)
      for (int i = 0; i < 2; ++i)
        for (int o = 0; o < 3; ++o) {
          const double xv = x.get(z * 2 + i), g = dy.get(z * 3 + o);
          dNormed.set(i * 3 + o, dNormed.get(i * 3 + o) + xv * params.at("B").get(o) * g);
          dB.set(o, dB.get(o) + xv * inputs[0].get(i * 3 + o) * g);
        }
    const TensorMap gradients = layerParameterGradients(layer, params, {&dNormed, &dB}, DType::F64);
    ASSERT_EQ(gradients.size(), 3u);
    for (const auto& [name, gradient] : expected.dparams) {
      ASSERT_TRUE(gradients.count(name)) << name;
      ASSERT_EQ(gradients.at(name).shape(), gradient.shape()) << name;
      for (int64_t i = 0; i < gradient.numel(); ++i)
        EXPECT_NEAR(gradients.at(name).get(i), gradient.get(i), 1e-12) << name << " " << i;
    }

    EXPECT_THROW(layerParameterGradients(layer, params, {&dNormed}, DType::F64), UserError);
    EXPECT_THROW(layerParameterGradients(layer, params, {&dB, &dNormed}, DType::F64), UserError);
    TensorMap missing = params;
    missing.erase("W_gamma");
    EXPECT_THROW(kernelParameterTensors(layer, missing, DType::F64), UserError);
  }
}

// B is a kernel input as it is (no weight norm, no gain): its gradient is the kernel's,
// converted to the requested dtype, without the float64 sums the normalised W goes through.
TEST(WeightNormHelpers, PlainParameterGradientIsTheKernelsInTheRequestedDType) {
  const ir::LayerProgram layer = normalisedLayer(1.0);
  std::mt19937_64 rng(6);
  TensorMap params = normalisedLayerParams(rng, 0.5);
  const Tensor dNormed = randomTensor({2, 3}, rng);
  const Tensor dB = randomTensor({3}, rng);
  const TensorMap gradients = layerParameterGradients(layer, params, {&dNormed, &dB}, DType::F32);
  ASSERT_EQ(gradients.at("B").dtype(), DType::F32);
  ASSERT_EQ(gradients.at("B").shape(), dB.shape());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(gradients.at("B").get(i), static_cast<float>(dB.get(i)));
  EXPECT_EQ(gradients.at("W").dtype(), DType::F32);
  EXPECT_EQ(gradients.at("W_gamma").dtype(), DType::F32);
}

}  // namespace
}  // namespace einjit
