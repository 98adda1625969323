// Forward values of the ops against hand values and naive loops written here, in float64 and
// float32, and the errors bad arguments raise.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "runtime/ops/Ops.h"
#include "tests/runtime/ops/OpsTestUtil.h"

namespace einjit::rt {
namespace {

using testing::maxAbsDifference;
using testing::randomTensor;

Tensor fromValues(DType dtype, const Shape& shape, const std::vector<double>& values) {
  Tensor tensor(dtype, shape);
  for (size_t i = 0; i < values.size(); ++i) tensor.set(static_cast<int64_t>(i), values[i]);
  return tensor;
}

// softmax(q k^T * scale + causal mask) v per (batch, head), by the textbook O(T^2 D) loops.
Tensor naiveAttention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t batch, int64_t seq,
                      int64_t heads, double scale) {
  const int64_t width = q.shape()[1], headDim = width / heads;
  Tensor out(DType::F64, q.shape());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < seq; ++i) {
        std::vector<double> logits;
        for (int64_t j = 0; j <= i; ++j) {
          double dotProduct = 0;
          for (int64_t c = 0; c < headDim; ++c)
            dotProduct += q.get((b * seq + i) * width + h * headDim + c) *
                          k.get((b * seq + j) * width + h * headDim + c);
          logits.push_back(dotProduct * scale);
        }
        double max = logits[0], sum = 0;
        for (double l : logits) max = std::max(max, l);
        for (double& l : logits) sum += (l = std::exp(l - max));
        for (int64_t c = 0; c < headDim; ++c) {
          double value = 0;
          for (int64_t j = 0; j <= i; ++j)
            value += logits[j] / sum * v.get((b * seq + j) * width + h * headDim + c);
          out.set((b * seq + i) * width + h * headDim + c, value);
        }
      }
  return out;
}

TEST(OpsForward, GeluMatchesTanhFormula) {
  for (DType dtype : {DType::F64, DType::F32}) {
    Tensor x(dtype, {1, 401});
    for (int64_t i = 0; i < 401; ++i) x.set(i, -10.0 + 0.05 * static_cast<double>(i));
    Tape tape;
    const Var y = gelu(tape, constant(x));
    for (int64_t i = 0; i < 401; ++i) {
      const double u = x.get(i);
      const double expected =
          0.5 * u * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (u + 0.044715 * u * u * u)));
      const double tolerance = dtype == DType::F64 ? 1e-14 : 2e-6 * std::max(1.0, std::abs(u));
      EXPECT_NEAR(y->value.get(i), expected, tolerance) << "u = " << u << ", " << dtypeName(dtype);
    }
  }
}

TEST(OpsForward, ReluAddAddBiasScaleHandValues) {
  Tape tape;
  const Var x = constant(fromValues(DType::F64, {2, 2}, {-1, 2, 0.5, -3}));
  const Var y = constant(fromValues(DType::F64, {2, 2}, {10, 20, 30, 40}));
  const Var bias = constant(fromValues(DType::F64, {2}, {100, 200}));
  const std::vector<std::pair<Var, std::vector<double>>> checks = {
      {relu(tape, x, 2.0), {0, 4, 1, 0}},
      {add(tape, x, y), {9, 22, 30.5, 37}},
      {addBias(tape, x, bias), {99, 202, 100.5, 197}},
      {scale(tape, x, -2), {2, -4, -1, 6}},
  };
  for (const auto& [result, expected] : checks)
    for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(result->value.get(i), expected[i]) << i;
}

TEST(OpsForward, LayerNormHandValues) {
  for (DType dtype : {DType::F64, DType::F32}) {
    Tape tape;
    const Var x = constant(fromValues(dtype, {2, 4}, {1, 2, 3, 4, -2, -2, -2, 6}));
    const Var gamma = constant(fromValues(dtype, {4}, {1, 2, 3, 4}));
    const Var beta = constant(fromValues(dtype, {4}, {0.5, 0, 0, -1}));
    const Var y = layerNorm(tape, x, gamma, beta, 1e-5);
    const Var plain = layerNorm(tape, x, nullptr, nullptr, 1e-5);
    // Row 0: mean 2.5, variance 1.25. Row 1: mean 0, variance 12.
    const double s0 = 1 / std::sqrt(1.25 + 1e-5), s1 = 1 / std::sqrt(12 + 1e-5);
    const std::vector<double> xhat = {-1.5 * s0, -0.5 * s0, 0.5 * s0, 1.5 * s0,
                                      -2 * s1,   -2 * s1,   -2 * s1,  6 * s1};
    const double g[] = {1, 2, 3, 4}, b[] = {0.5, 0, 0, -1};
    const double tolerance = dtype == DType::F64 ? 1e-12 : 1e-5;
    for (int64_t i = 0; i < 8; ++i) {
      EXPECT_NEAR(plain->value.get(i), xhat[i], tolerance) << i;
      EXPECT_NEAR(y->value.get(i), xhat[i] * g[i % 4] + b[i % 4], tolerance) << i;
    }
  }
}

TEST(OpsForward, AttentionMatchesNaiveLoops) {
  struct Case {
    int64_t batch, seq, heads, headDim;
  };
  const Case cases[] = {{2, 5, 3, 4}, {1, 1, 2, 3}, {3, 4, 1, 5}, {2, 33, 2, 16}};
  std::mt19937_64 rng(11);
  for (const Case& c : cases) {
    const Shape shape = {c.batch * c.seq, c.heads * c.headDim};
    const Tensor q = randomTensor(shape, rng), k = randomTensor(shape, rng),
                 v = randomTensor(shape, rng);
    const double scale = 1 / std::sqrt(static_cast<double>(c.headDim));
    const Tensor expected = naiveAttention(q, k, v, c.batch, c.seq, c.heads, scale);
    for (DType dtype : {DType::F64, DType::F32}) {
      Tape tape;
      const Var out = causalSelfAttention(tape, constant(q.to(dtype)), constant(k.to(dtype)),
                                          constant(v.to(dtype)), c.batch, c.seq, c.heads, scale);
      EXPECT_LT(maxAbsDifference(out->value, expected), dtype == DType::F64 ? 1e-12 : 1e-5)
          << "B=" << c.batch << " T=" << c.seq << " H=" << c.heads << " " << dtypeName(dtype);
    }
  }
}

TEST(OpsForward, CrossEntropyByLogSumExp) {
  for (DType dtype : {DType::F64, DType::F32}) {
    Tape tape;
    const Var logits = constant(fromValues(dtype, {3, 3}, {1, 2, 3, 0, 0, 0, 100, -100, 50}));
    const Var loss = crossEntropy(tape, logits, {2, 1, 2});
    const double rows[] = {std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3,
                           std::log(3.0), 100 + std::log1p(std::exp(-50.0)) - 50};
    EXPECT_EQ(loss->value.shape(), Shape{});
    EXPECT_NEAR(loss->value.get(0), (rows[0] + rows[1] + rows[2]) / 3,
                dtype == DType::F64 ? 1e-12 : 1e-5);
  }
}

TEST(OpsForward, MeanSquaredErrorAndEmbeddingHandValues) {
  Tape tape;
  const Var pred = constant(fromValues(DType::F64, {2, 2}, {1, 2, 3, 4}));
  const Var loss = meanSquaredError(tape, pred, fromValues(DType::F64, {2, 2}, {0, 0, 3, 6}));
  EXPECT_DOUBLE_EQ(loss->value.get(0), (1 + 4 + 0 + 4) / 4.0);

  const Var table = constant(fromValues(DType::F32, {3, 2}, {1, 2, 3, 4, 5, 6}));
  const Var rows = embedding(tape, {2, 0, 2}, table);
  EXPECT_EQ(rows->value.shape(), (Shape{3, 2}));
  const double expected[] = {5, 6, 1, 2, 5, 6};
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(rows->value.get(i), expected[i]);
}

TEST(OpsForward, InferenceRecordsNothing) {
  Tape tape;
  tape.setRecording(false);
  const Var x = parameter(fromValues(DType::F64, {1, 2}, {1, 2}), "x");
  const Var y = gelu(tape, scale(tape, x, 2));
  EXPECT_EQ(tape.size(), 0u);
  EXPECT_FALSE(y->requiresGrad);
}

TEST(OpsForward, UnconsumedVarGetsNoGradient) {
  Tape tape;
  const Var x = parameter(fromValues(DType::F64, {1, 2}, {1, 2}), "x");
  const Var unused = parameter(fromValues(DType::F64, {1, 2}, {3, 4}), "unused");
  const Var side = scale(tape, unused, 3);  // recorded, but the loss does not depend on it
  const Var loss = meanSquaredError(tape, x, Tensor(DType::F64, {1, 2}));
  tape.backward(loss);
  EXPECT_EQ(x->grad.shape(), x->value.shape());
  EXPECT_EQ(unused->grad.numel(), 0);
  EXPECT_EQ(tape.size(), 0u);
}

// Runs `call` and expects a UserError whose message contains `fragment`.
template <class Call>
void expectUserError(Call call, const std::string& fragment) {
  try {
    call();
    ADD_FAILURE() << "no UserError; expected one mentioning '" << fragment << "'";
  } catch (const UserError& error) {
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
  }
}

TEST(OpsErrors, BadArgumentsThrowUserError) {
  Tape tape;
  const Var x23 = constant(Tensor(DType::F32, {2, 3}));
  const Var x32 = constant(Tensor(DType::F32, {3, 2}));
  const Var x23d = constant(Tensor(DType::F64, {2, 3}));
  const Var vector3 = constant(Tensor(DType::F32, {3}));
  const Var vector2 = constant(Tensor(DType::F32, {2}));
  expectUserError([&] { add(tape, x23, x32); }, "shapes differ");
  expectUserError([&] { add(tape, x23, x23d); }, "same dtype");
  expectUserError([&] { add(tape, x23, nullptr); }, "null");
  expectUserError([&] { addBias(tape, x23, vector2); }, "expected (3,)");
  expectUserError([&] { addBias(tape, vector3, vector3); }, "must be 2-D");
  expectUserError([&] { layerNorm(tape, x23, vector2, nullptr); }, "gamma has shape (2,)");
  expectUserError([&] { layerNorm(tape, x23, nullptr, constant(Tensor(DType::F64, {3}))); },
                  "same dtype");
  expectUserError(
      [&] {
        layerNorm(tape, constant(Tensor(DType::F32, {2, 0})), nullptr, nullptr);
      },
      "no features");
  expectUserError([&] { embedding(tape, {0, 3}, x32); }, "id 3 at position 1 is out of range");
  expectUserError([&] { embedding(tape, {-1}, x32); }, "out of range");
  expectUserError([&] { embedding(tape, {}, x32); }, "no ids");
  expectUserError([&] { crossEntropy(tape, x23, {0, 3}); }, "target 3 at position 1");
  expectUserError([&] { crossEntropy(tape, x23, {0}); }, "1 targets for 2 rows");
  expectUserError([&] { crossEntropy(tape, constant(Tensor(DType::F32, {0, 3})), {}); }, "empty");
  expectUserError(
      [&] {
        meanSquaredError(tape, x23, Tensor(DType::F32, {3, 2}));
      },
      "target has shape (3, 2)");
  expectUserError([&] { meanSquaredError(tape, x23, Tensor(DType::F64, {2, 3})); }, "same dtype");
  expectUserError(
      [&] { meanSquaredError(tape, constant(Tensor(DType::F32, {0})), Tensor(DType::F32, {0})); },
      "empty");
  expectUserError([&] { reshape(tape, x23, {4, 2}); }, "cannot view (2, 3)");
  expectUserError([&] { scale(tape, x23, std::nan("")); }, "finite");

  const Var q = constant(Tensor(DType::F32, {6, 4}));
  expectUserError([&] { causalSelfAttention(tape, q, q, q, 2, 2, 2, 1.0); }, "batch * seq");
  expectUserError([&] { causalSelfAttention(tape, q, q, q, 2, 3, 3, 1.0); }, "multiple of heads");
  expectUserError([&] { causalSelfAttention(tape, q, x23, q, 2, 3, 2, 1.0); }, "same shape");
  expectUserError([&] { causalSelfAttention(tape, q, q, q, 0, 3, 2, 1.0); }, ">= 1");
  expectUserError(
      [&] {
        causalSelfAttention(tape, q, q, constant(Tensor(DType::F64, {6, 4})), 2, 3, 2, 1.0);
      },
      "same dtype");
}

TEST(OpsErrors, BackwardNeedsAScalarLossThatDependsOnParameters) {
  Tape tape;
  const Var x = parameter(Tensor(DType::F64, {2, 2}), "x");
  const Var y = scale(tape, x, 2);
  expectUserError([&] { tape.backward(y); }, "one element");
  const Var constantLoss =
      meanSquaredError(tape, constant(Tensor(DType::F64, {2})), Tensor(DType::F64, {2}));
  expectUserError([&] { tape.backward(constantLoss); }, "does not depend on any parameter");
  expectUserError([&] { tape.backward(y, Tensor(DType::F32, {2, 2})); }, "seed is float32");
}

}  // namespace
}  // namespace einjit::rt
