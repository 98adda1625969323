#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "frontend/structures/LayerIR.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "tests/runtime/reference/GradientCheck.h"

namespace einjit {
namespace {

using ir::kRows;
using testing::expectGradientsMatchFiniteDifferences;
using testing::randomTensor;

// Builds small layer programs by hand.
class ProgramBuilder {
 public:
  ProgramBuilder(const std::string& spec, int64_t dIn, int64_t dOut) {
    program_.spec = spec;
    program_.structure = "test";
    program_.dIn = dIn;
    program_.dOut = dOut;
    program_.input = value("x", {kRows, dIn});
  }

  ir::ValueId value(const std::string& name, Shape shape) {
    program_.values.push_back({name, std::move(shape)});
    return static_cast<ir::ValueId>(program_.values.size() - 1);
  }
  ir::ValueId param(const std::string& name, Shape shape) {
    ir::Parameter parameter;
    parameter.name = name;
    parameter.shape = shape;
    parameter.value = value(name, shape);
    parameter.initStd = 1.0;
    program_.params.push_back(parameter);
    return parameter.value;
  }
  ir::ValueId op(ir::Op op, const std::string& name, Shape shape) {
    op.result = value(name, std::move(shape));
    program_.ops.push_back(std::move(op));
    return program_.ops.back().result;
  }
  ir::ValueId contract(const std::string& equation, std::vector<ir::ValueId> inputs,
                       const std::string& name, Shape shape) {
    ir::Op contraction;
    contraction.kind = ir::OpKind::Contract;
    contraction.equation = equation;
    contraction.inputs = std::move(inputs);
    return op(contraction, name, std::move(shape));
  }
  ir::LayerProgram finish(ir::ValueId output) {
    program_.output = output;
    return program_;
  }

 private:
  ir::LayerProgram program_;
};

ir::Op unaryOp(ir::OpKind kind, ir::ValueId input) {
  ir::Op op;
  op.kind = kind;
  op.inputs = {input};
  return op;
}

// lowrank: y = (x U) V with x (N, 4), U (4, 2), V (2, 3).
ir::LayerProgram lowRankProgram() {
  ProgramBuilder b("lowrank-test", 4, 3);
  const ir::ValueId u = b.param("U", {4, 2});
  const ir::ValueId v = b.param("V", {2, 3});
  const ir::ValueId t = b.contract("ni,ir->nr", {0, u}, "t", {kRows, 2});
  return b.finish(b.contract("nr,ro->no", {t, v}, "y", {kRows, 3}));
}

// x (N, 5) -> pad to 6 -> view (N, 2, 3) -> permute to (N, 3, 2) -> contract with W (2, 4)
// -> (N, 3, 4) -> view (N, 12) -> truncate to 7.
ir::LayerProgram reshapingProgram() {
  ProgramBuilder b("reshape-test", 5, 7);
  const ir::ValueId w = b.param("W", {2, 4});
  ir::Op pad = unaryOp(ir::OpKind::Pad, 0);
  pad.axis = 1;
  pad.size = 6;
  const ir::ValueId padded = b.op(pad, "padded", {kRows, 6});
  ir::Op view = unaryOp(ir::OpKind::Reshape, padded);
  view.shape = {kRows, 2, 3};
  const ir::ValueId viewed = b.op(view, "viewed", {kRows, 2, 3});
  ir::Op permute = unaryOp(ir::OpKind::Permute, viewed);
  permute.perm = {0, 2, 1};
  const ir::ValueId permuted = b.op(permute, "permuted", {kRows, 3, 2});
  const ir::ValueId z = b.contract("nab,bc->nac", {permuted, w}, "z", {kRows, 3, 4});
  ir::Op flat = unaryOp(ir::OpKind::Reshape, z);
  flat.shape = {kRows, 12};
  const ir::ValueId flattened = b.op(flat, "flat", {kRows, 12});
  ir::Op truncate = unaryOp(ir::OpKind::Truncate, flattened);
  truncate.axis = 1;
  truncate.size = 7;
  return b.finish(b.op(truncate, "y", {kRows, 7}));
}

// x (N, 24) viewed as (N, 2, 3, 4), axes rotated to (N, 4, 2, 3), flattened, times W (24, 5).
ir::LayerProgram rotatingProgram() {
  ProgramBuilder b("rotate-test", 24, 5);
  const ir::ValueId w = b.param("W", {24, 5});
  ir::Op view = unaryOp(ir::OpKind::Reshape, 0);
  view.shape = {kRows, 2, 3, 4};
  const ir::ValueId viewed = b.op(view, "viewed", {kRows, 2, 3, 4});
  ir::Op rotate = unaryOp(ir::OpKind::Permute, viewed);
  rotate.perm = {0, 3, 1, 2};
  const ir::ValueId rotated = b.op(rotate, "rotated", {kRows, 4, 2, 3});
  ir::Op flat = unaryOp(ir::OpKind::Reshape, rotated);
  flat.shape = {kRows, 24};
  const ir::ValueId flattened = b.op(flat, "flat", {kRows, 24});
  return b.finish(b.contract("nf,fo->no", {flattened, w}, "y", {kRows, 5}));
}

// y = x W~ with W~ = gamma * W / max(1, RMS(W) / sigma); no gamma when withGamma is false.
ir::LayerProgram weightNormProgram(int64_t dIn, int64_t dOut, double sigma, double eps,
                                   bool withGamma) {
  ProgramBuilder b("norm-test", dIn, dOut);
  const ir::ValueId w = b.param("W", {dIn, dOut});
  ir::Op norm = unaryOp(ir::OpKind::WeightNorm, w);
  if (withGamma) norm.inputs.push_back(b.param("W_gamma", {}));
  norm.normSigma = sigma;
  norm.normEps = eps;
  const ir::ValueId normalised = b.op(norm, "W_normed", {dIn, dOut});
  return b.finish(b.contract("ni,io->no", {0, normalised}, "y", {kRows, dOut}));
}

// x used twice, a diagonal parameter and a parameter broadcast over the rows:
// t[n,i] = x[n,i] D[i,i];  y[n,i] = t[n,i] x[n,i] B[0,i].
ir::LayerProgram sharedValueProgram() {
  ProgramBuilder b("shared-test", 3, 3);
  const ir::ValueId d = b.param("D", {3, 3});
  const ir::ValueId bias = b.param("B", {1, 3});
  const ir::ValueId t = b.contract("ni,ii->ni", {0, d}, "t", {kRows, 3});
  return b.finish(b.contract("ni,ni,ni->ni", {t, 0, bias}, "y", {kRows, 3}));
}

// A residual sum: y = x W + x, with x (N, 3), W (3, 3): Add, and x used twice.
ir::LayerProgram residualProgram() {
  ProgramBuilder b("residual-test", 3, 3);
  const ir::ValueId w = b.param("W", {3, 3});
  const ir::ValueId t = b.contract("ni,io->no", {0, w}, "t", {kRows, 3});
  ir::Op add = unaryOp(ir::OpKind::Add, t);
  add.inputs.push_back(0);
  return b.finish(b.op(add, "y", {kRows, 3}));
}

TensorMap randomParams(const ir::LayerProgram& program, std::mt19937_64& rng, double scale = 1.0,
                       DType dtype = DType::F64) {
  TensorMap params;
  for (const ir::Parameter& param : program.params)
    params[param.name] = randomTensor(param.shape, rng, scale, dtype);
  return params;
}

TEST(ReferenceLayer, LowRankForwardMatchesLoops) {
  const ir::LayerProgram program = lowRankProgram();
  std::mt19937_64 rng(1);
  const TensorMap params = randomParams(program, rng);
  const Tensor x = randomTensor({3, 4}, rng);
  const Tensor y = referenceLayerForward(program, params, x);
  ASSERT_EQ(y.shape(), (Shape{3, 3}));
  const Tensor& u = params.at("U");
  const Tensor& v = params.at("V");
  for (int n = 0; n < 3; ++n)
    for (int o = 0; o < 3; ++o) {
      double expected = 0;
      for (int i = 0; i < 4; ++i)
        for (int r = 0; r < 2; ++r)
          expected += x.get(n * 4 + i) * u.get(i * 2 + r) * v.get(r * 3 + o);
      EXPECT_NEAR(y.get(n * 3 + o), expected, 1e-12);
    }
}

TEST(ReferenceLayer, LowRankGradients) {
  const ir::LayerProgram program = lowRankProgram();
  std::mt19937_64 rng(2);
  const TensorMap params = randomParams(program, rng);
  expectGradientsMatchFiniteDifferences(program, params, randomTensor({3, 4}, rng),
                                        randomTensor({3, 3}, rng));
}

TEST(ReferenceLayer, ReshapePermutePadTruncateForward) {
  const ir::LayerProgram program = reshapingProgram();
  std::mt19937_64 rng(3);
  const TensorMap params = randomParams(program, rng);
  const Tensor& w = params.at("W");
  const Tensor x = randomTensor({2, 5}, rng);
  const Tensor y = referenceLayerForward(program, params, x);
  ASSERT_EQ(y.shape(), (Shape{2, 7}));
  for (int n = 0; n < 2; ++n)
    for (int f = 0; f < 7; ++f) {
      // Output feature f = a*4 + c of z[n,a,c] = sum_b xpad[n, b*3 + a] W[b,c].
      const int a = f / 4, c = f % 4;
      double expected = 0;
      for (int bb = 0; bb < 2; ++bb) {
        const int feature = bb * 3 + a;
        if (feature < 5) expected += x.get(n * 5 + feature) * w.get(bb * 4 + c);
      }
      EXPECT_NEAR(y.get(n * 7 + f), expected, 1e-12) << "n " << n << " f " << f;
    }
}

TEST(ReferenceLayer, ReshapePermutePadTruncateGradients) {
  const ir::LayerProgram program = reshapingProgram();
  std::mt19937_64 rng(4);
  const TensorMap params = randomParams(program, rng);
  expectGradientsMatchFiniteDifferences(program, params, randomTensor({3, 5}, rng),
                                        randomTensor({3, 7}, rng));
}

TEST(ReferenceLayer, CyclicPermutationForwardAndGradients) {
  const ir::LayerProgram program = rotatingProgram();
  std::mt19937_64 rng(13);
  const TensorMap params = randomParams(program, rng);
  const Tensor& w = params.at("W");
  const Tensor x = randomTensor({2, 24}, rng);
  const Tensor y = referenceLayerForward(program, params, x);
  for (int n = 0; n < 2; ++n)
    for (int o = 0; o < 5; ++o) {
      // rotated[n,k,i,j] = x[n, (i*3 + j)*4 + k], flattened as (k*2 + i)*3 + j.
      double expected = 0;
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
          for (int k = 0; k < 4; ++k)
            expected += x.get(n * 24 + (i * 3 + j) * 4 + k) * w.get(((k * 2 + i) * 3 + j) * 5 + o);
      EXPECT_NEAR(y.get(n * 5 + o), expected, 1e-12);
    }
  expectGradientsMatchFiniteDifferences(program, params, x, randomTensor({2, 5}, rng));
}

TEST(ReferenceLayer, AddForwardAndGradients) {
  const ir::LayerProgram program = residualProgram();
  std::mt19937_64 rng(17);
  const TensorMap params = randomParams(program, rng);
  const Tensor& w = params.at("W");
  const Tensor x = randomTensor({2, 3}, rng);
  const Tensor y = referenceLayerForward(program, params, x);
  for (int n = 0; n < 2; ++n)
    for (int o = 0; o < 3; ++o) {
      double expected = x.get(n * 3 + o);
      for (int i = 0; i < 3; ++i) expected += x.get(n * 3 + i) * w.get(i * 3 + o);
      EXPECT_NEAR(y.get(n * 3 + o), expected, 1e-12);
    }
  expectGradientsMatchFiniteDifferences(program, params, x, randomTensor({2, 3}, rng));

  ir::LayerProgram mismatched = program;  // adds (N, 3) and (N, 2)
  mismatched.values[mismatched.ops[0].result].shape = {kRows, 2};
  mismatched.params[0].shape = mismatched.values[mismatched.params[0].value].shape = {3, 2};
  TensorMap narrowParams = {{"W", randomTensor({3, 2}, rng)}};
  EXPECT_THROW(referenceLayerForward(mismatched, narrowParams, x), UserError);
}

TEST(ReferenceLayer, WeightNormForwardInBothRegimes) {
  // W = [[3, 4], [0, 0]]: mean(W^2) = 6.25, RMS = 2.5. x = [1, 2]; gamma = 2.
  Tensor w(DType::F64, {2, 2});
  w.set(0, 3);
  w.set(1, 4);
  Tensor gamma(DType::F64, {});
  gamma.set(0, 2);
  Tensor x(DType::F64, {1, 2});
  x.set(0, 1);
  x.set(1, 2);
  const TensorMap params = {{"W", w}, {"W_gamma", gamma}};
  // sigma 0.5: RMS/sigma = 5 > 1, W~ = 2 W / 5 = [[1.2, 1.6], [0, 0]].
  const Tensor clamped = referenceLayerForward(weightNormProgram(2, 2, 0.5, 0.0, true), params, x);
  EXPECT_NEAR(clamped.get(0), 1.2, 1e-15);
  EXPECT_NEAR(clamped.get(1), 1.6, 1e-15);
  // sigma 10: RMS/sigma = 0.25, W~ = 2 W.
  const Tensor identity =
      referenceLayerForward(weightNormProgram(2, 2, 10.0, 0.0, true), params, x);
  EXPECT_NEAR(identity.get(0), 6, 1e-15);
  EXPECT_NEAR(identity.get(1), 8, 1e-15);
  // eps enters the RMS: sqrt(6.25 + 3.75) = sqrt(10); no gamma.
  const Tensor withEps =
      referenceLayerForward(weightNormProgram(2, 2, 0.5, 3.75, false), {{"W", w}}, x);
  EXPECT_NEAR(withEps.get(0), 3 * 0.5 / std::sqrt(10.0), 1e-15);
  EXPECT_NEAR(withEps.get(1), 4 * 0.5 / std::sqrt(10.0), 1e-15);
}

TEST(ReferenceLayer, WeightNormGradientsClamped) {
  // W ~ N(0, 1) and sigma 0.1: RMS/sigma is about 10, far from the switch at 1.
  for (bool withGamma : {true, false}) {
    const ir::LayerProgram program = weightNormProgram(4, 3, 0.1, 1e-8, withGamma);
    std::mt19937_64 rng(5);
    TensorMap params = randomParams(program, rng);
    if (withGamma) params["W_gamma"].set(0, 1.7);
    expectGradientsMatchFiniteDifferences(program, params, randomTensor({3, 4}, rng),
                                          randomTensor({3, 3}, rng));
  }
}

TEST(ReferenceLayer, WeightNormGradientsUnclamped) {
  // sigma 100: RMS/sigma is about 0.01, the identity branch.
  for (bool withGamma : {true, false}) {
    const ir::LayerProgram program = weightNormProgram(4, 3, 100.0, 1e-6, withGamma);
    std::mt19937_64 rng(6);
    TensorMap params = randomParams(program, rng);
    if (withGamma) params["W_gamma"].set(0, 0.6);
    expectGradientsMatchFiniteDifferences(program, params, randomTensor({3, 4}, rng),
                                          randomTensor({3, 3}, rng));
  }
}

TEST(ReferenceLayer, SharedValuesDiagonalsAndBroadcastParameters) {
  const ir::LayerProgram program = sharedValueProgram();
  std::mt19937_64 rng(7);
  const TensorMap params = randomParams(program, rng);
  const Tensor x = randomTensor({4, 3}, rng);
  const Tensor dy = randomTensor({4, 3}, rng);
  const Tensor y = referenceLayerForward(program, params, x);
  const Tensor& d = params.at("D");
  const Tensor& bias = params.at("B");
  for (int n = 0; n < 4; ++n)
    for (int i = 0; i < 3; ++i)
      EXPECT_NEAR(y.get(n * 3 + i),
                  x.get(n * 3 + i) * d.get(i * 4) * x.get(n * 3 + i) * bias.get(i), 1e-12);

  // Hand-derived: dD[i,i] = sum_n x^2 B dy, off-diagonal 0; dB[0,i] = sum_n x^2 D[i,i] dy;
  // dx = 2 x D B dy (x appears twice).
  const LayerGradients gradients = referenceLayerBackward(program, params, x, dy);
  for (int i = 0; i < 3; ++i) {
    double dD = 0, dB = 0;
    for (int n = 0; n < 4; ++n) {
      const double xx = x.get(n * 3 + i) * x.get(n * 3 + i);
      dD += xx * bias.get(i) * dy.get(n * 3 + i);
      dB += xx * d.get(i * 4) * dy.get(n * 3 + i);
      EXPECT_NEAR(gradients.dx.get(n * 3 + i),
                  2 * x.get(n * 3 + i) * d.get(i * 4) * bias.get(i) * dy.get(n * 3 + i), 1e-12);
    }
    for (int j = 0; j < 3; ++j)
      EXPECT_NEAR(gradients.dparams.at("D").get(i * 3 + j), i == j ? dD : 0.0, 1e-12);
    EXPECT_NEAR(gradients.dparams.at("B").get(i), dB, 1e-12);
  }
  expectGradientsMatchFiniteDifferences(program, params, x, dy);
}

TEST(ReferenceLayer, ZeroRows) {
  const ir::LayerProgram program = lowRankProgram();
  std::mt19937_64 rng(8);
  const TensorMap params = randomParams(program, rng);
  const LayerGradients gradients = referenceLayerBackward(
      program, params, Tensor(DType::F64, {0, 4}), Tensor(DType::F64, {0, 3}));
  EXPECT_EQ(gradients.y.shape(), (Shape{0, 3}));
  EXPECT_EQ(gradients.dx.shape(), (Shape{0, 4}));
  for (const char* name : {"U", "V"}) {
    const Tensor& gradient = gradients.dparams.at(name);
    ASSERT_EQ(gradient.shape(), params.at(name).shape());
    for (int64_t i = 0; i < gradient.numel(); ++i) EXPECT_EQ(gradient.get(i), 0.0);
  }
}

TEST(ReferenceLayer, DtypesFollowTheInputs) {
  const ir::LayerProgram program = lowRankProgram();
  std::mt19937_64 rng(9);
  const TensorMap params64 = randomParams(program, rng);
  const Tensor x64 = randomTensor({2, 4}, rng);
  const Tensor dy64 = randomTensor({2, 3}, rng);
  TensorMap params32;
  for (const auto& [name, tensor] : params64) params32[name] = tensor.to(DType::F32);
  const Tensor x32 = x64.to(DType::F32), dy32 = dy64.to(DType::F32);

  const LayerGradients all32 = referenceLayerBackward(program, params32, x32, dy32);
  EXPECT_EQ(all32.y.dtype(), DType::F32);
  EXPECT_EQ(all32.dx.dtype(), DType::F32);
  EXPECT_EQ(all32.dparams.at("U").dtype(), DType::F32);
  const LayerGradients all64 = referenceLayerBackward(program, params64, x64, dy64);
  EXPECT_EQ(all64.y.dtype(), DType::F64);
  // float32 storage, double arithmetic: the float32 results are the float64 ones of the rounded
  // inputs, rounded once.
  const LayerGradients rounded64 = referenceLayerBackward(
      program, {{"U", params32.at("U").to(DType::F64)}, {"V", params32.at("V").to(DType::F64)}},
      x32.to(DType::F64), dy32.to(DType::F64));
  for (int64_t i = 0; i < all32.y.numel(); ++i) {
    EXPECT_EQ(all32.y.get(i), static_cast<double>(static_cast<float>(rounded64.y.get(i))));
    EXPECT_NEAR(all32.y.get(i), all64.y.get(i), 1e-5);
  }

  // One float64 tensor makes every result float64.
  const LayerGradients mixed = referenceLayerBackward(program, params32, x32, dy64);
  EXPECT_EQ(mixed.y.dtype(), DType::F64);
  EXPECT_EQ(mixed.dx.dtype(), DType::F64);
  EXPECT_EQ(mixed.dparams.at("V").dtype(), DType::F64);
  EXPECT_EQ(referenceLayerForward(program, params64, x32).dtype(), DType::F64);
}

std::string messageOf(const std::function<void()>& action) {
  try {
    action();
  } catch (const UserError& error) {
    return error.what();
  }
  return "(no UserError)";
}

TEST(ReferenceLayer, RejectsBadInputsWithClearMessages) {
  const ir::LayerProgram program = lowRankProgram();
  std::mt19937_64 rng(10);
  const TensorMap params = randomParams(program, rng);
  const Tensor x = randomTensor({2, 4}, rng);
  const Tensor dy = randomTensor({2, 3}, rng);

  TensorMap missing = params;
  missing.erase("V");
  std::string message = messageOf([&] { referenceLayerForward(program, missing, x); });
  EXPECT_NE(message.find("'V'"), std::string::npos) << message;
  EXPECT_NE(message.find("(2, 3)"), std::string::npos) << message;

  TensorMap wrongShape = params;
  wrongShape["U"] = Tensor(DType::F64, {2, 4});
  message = messageOf([&] { referenceLayerForward(program, wrongShape, x); });
  EXPECT_NE(message.find("'U'"), std::string::npos) << message;
  EXPECT_NE(message.find("(4, 2)"), std::string::npos) << message;
  EXPECT_NE(message.find("(2, 4)"), std::string::npos) << message;

  TensorMap extra = params;
  extra["Q"] = Tensor(DType::F64, {1});
  message = messageOf([&] { referenceLayerForward(program, extra, x); });
  EXPECT_NE(message.find("'Q'"), std::string::npos) << message;

  message = messageOf([&] { referenceLayerForward(program, params, Tensor(DType::F64, {2, 5})); });
  EXPECT_NE(message.find("(2, 5)"), std::string::npos) << message;
  EXPECT_THROW(referenceLayerForward(program, params, Tensor(DType::F64, {8})), UserError);
  message = messageOf([&] {
    referenceLayerBackward(program, params, x, Tensor(DType::F64, {3, 3}));
  });
  EXPECT_NE(message.find("dy"), std::string::npos) << message;
  EXPECT_NE(message.find("(3, 3)"), std::string::npos) << message;
}

TEST(ReferenceLayer, RejectsMalformedPrograms) {
  std::mt19937_64 rng(11);
  const Tensor x = randomTensor({2, 4}, rng);
  {
    ir::LayerProgram program = lowRankProgram();
    const TensorMap params = randomParams(program, rng);
    program.ops[0].inputs = {0, 4};  // value 4 (y) is not defined yet
    EXPECT_THROW(referenceLayerForward(program, params, x), UserError);
    program.ops[0].inputs = {0, 99};
    EXPECT_THROW(referenceLayerForward(program, params, x), UserError);
  }
  {
    ir::LayerProgram program = lowRankProgram();
    const TensorMap params = randomParams(program, rng);
    program.values[program.ops[1].result].shape = {kRows, 5};  // computed as (N, 3)
    EXPECT_THROW(referenceLayerForward(program, params, x), UserError);
  }
  {
    ir::LayerProgram program = lowRankProgram();
    const TensorMap params = randomParams(program, rng);
    program.ops[0].equation = "ni,ir->n";  // result no longer matches the declared (N, 2)
    EXPECT_THROW(referenceLayerForward(program, params, x), UserError);
    program.ops[0].equation = "ni,i r->nr(";
    EXPECT_THROW(referenceLayerForward(program, params, x), UserError);
  }
  {
    ir::LayerProgram program = reshapingProgram();
    const TensorMap params = randomParams(program, rng);
    const Tensor x5 = randomTensor({2, 5}, rng);
    ir::LayerProgram badPerm = program;
    badPerm.ops[2].perm = {0, 1, 1};
    EXPECT_THROW(referenceLayerForward(badPerm, params, x5), UserError);
    ir::LayerProgram badAxis = program;
    badAxis.ops[0].axis = 2;
    EXPECT_THROW(referenceLayerForward(badAxis, params, x5), UserError);
    ir::LayerProgram badPad = program;
    badPad.ops[0].size = 4;
    EXPECT_THROW(referenceLayerForward(badPad, params, x5), UserError);
    ir::LayerProgram badView = program;
    badView.ops[1].shape = {kRows, 4, 2};
    EXPECT_THROW(referenceLayerForward(badView, params, x5), UserError);
  }
  {
    ir::LayerProgram program = weightNormProgram(4, 3, 0.0, 1e-8, true);
    std::mt19937_64 local(12);
    const TensorMap params = randomParams(program, local);
    EXPECT_THROW(referenceLayerForward(program, params, x), UserError);  // sigma 0
  }
}

}  // namespace
}  // namespace einjit
