// Every op's tape gradient against central finite differences, in float64.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/ops/Ops.h"
#include "runtime/ops/OpsDetail.h"
#include "tests/runtime/ops/OpsTestUtil.h"

namespace einjit::rt {
namespace {

using testing::expectGradientsMatch;
using testing::randomTensor;

TEST(OpsGradients, Gelu) {
  std::mt19937_64 rng(1);
  Var x = parameter(randomTensor({5, 7}, rng, 1.5), "x");
  expectGradientsMatch(
      {x}, [&](Tape& tape) { return gelu(tape, x); }, "gelu");
}

TEST(OpsGradients, ReluWithGain) {
  std::mt19937_64 rng(2);
  Tensor values = randomTensor({6, 5}, rng);
  // Keep every element away from the kink at 0, where central differences are meaningless.
  for (int64_t i = 0; i < values.numel(); ++i)
    values.set(i, values.get(i) + (values.get(i) >= 0 ? 0.1 : -0.1));
  Var x = parameter(values, "x");
  expectGradientsMatch(
      {x}, [&](Tape& tape) { return relu(tape, x, std::sqrt(2.0)); }, "relu");
}

TEST(OpsGradients, LayerNormWithAndWithoutAffineParts) {
  std::mt19937_64 rng(3);
  for (int variant = 0; variant < 4; ++variant) {
    const bool withGamma = variant & 1, withBeta = variant & 2;
    Var x = parameter(randomTensor({6, 8}, rng, 2.0), "x");
    Var gamma = withGamma ? parameter(randomTensor({8}, rng), "gamma") : nullptr;
    Var beta = withBeta ? parameter(randomTensor({8}, rng), "beta") : nullptr;
    std::vector<Var> inputs = {x};
    if (gamma) inputs.push_back(gamma);
    if (beta) inputs.push_back(beta);
    expectGradientsMatch(
        inputs, [&](Tape& tape) { return layerNorm(tape, x, gamma, beta, 1e-5); },
        "layerNorm variant " + std::to_string(variant));
  }
}

TEST(OpsGradients, CausalSelfAttentionShapes) {
  struct Case {
    int64_t batch, seq, heads, headDim;
    double scale;
  };
  const Case cases[] = {{2, 5, 3, 4, 0.5},
                        {1, 1, 2, 3, 1.0},
                        {3, 4, 1, 5, 0.7},
                        {1, 7, 2, 2, 1.3},
                        {2, 3, 2, 8, 1 / std::sqrt(8.0)}};
  // Every vector width the attention tasks are compiled for, whatever the host runs; the
  // host's width again when the test ends, even if it ends by an exception.
  struct Unpin {
    ~Unpin() { detail::pinAttentionVectorBytes(0); }
  } unpin;
  for (const int bytes : {16, 32, 64}) {
    detail::pinAttentionVectorBytes(bytes);
    std::mt19937_64 rng(4);
    for (const Case& c : cases) {
      const Shape shape = {c.batch * c.seq, c.heads * c.headDim};
      Var q = parameter(randomTensor(shape, rng), "q");
      Var k = parameter(randomTensor(shape, rng), "k");
      Var v = parameter(randomTensor(shape, rng), "v");
      expectGradientsMatch(
          {q, k, v},
          [&](Tape& tape) {
            return causalSelfAttention(tape, q, k, v, c.batch, c.seq, c.heads, c.scale);
          },
          "attention B=" + std::to_string(c.batch) + " T=" + std::to_string(c.seq) +
              " H=" + std::to_string(c.heads) + " D=" + std::to_string(c.headDim) + ", " +
              std::to_string(bytes) + "-byte vectors",
          // With one position the softmax is the constant 1: q and k get zero gradients.
          1e-6, c.seq > 1);
      EXPECT_GT(std::abs(v->grad.get(0)), 0.0);
    }
  }
  EXPECT_THROW(detail::pinAttentionVectorBytes(8), UserError);
}

TEST(OpsGradients, AttentionWithSharedInput) {
  // q, k and v the same Var: its gradient is the sum of the three contributions.
  std::mt19937_64 rng(5);
  Var x = parameter(randomTensor({6, 4}, rng), "x");
  expectGradientsMatch(
      {x}, [&](Tape& tape) { return causalSelfAttention(tape, x, x, x, 2, 3, 2, 0.8); },
      "attention(x, x, x)");
}

TEST(OpsGradients, EmbeddingWithRepeatedIds) {
  std::mt19937_64 rng(6);
  Var table = parameter(randomTensor({5, 3}, rng), "table");
  const std::vector<int32_t> ids = {2, 0, 2, 4, 2, 0};
  expectGradientsMatch(
      {table}, [&](Tape& tape) { return embedding(tape, ids, table); }, "embedding");
}

TEST(OpsGradients, EmbeddingGradientCountsRepeats) {
  // Hand values: with an all-ones output gradient, row v of dtable is the number of times v
  // occurs in ids.
  Var table = parameter(Tensor(DType::F64, {4, 2}), "table");
  Tape tape;
  Var out = embedding(tape, {3, 1, 3, 3}, table);
  Tensor ones(DType::F64, out->value.shape());
  for (int64_t i = 0; i < ones.numel(); ++i) ones.set(i, 1.0);
  tape.backward(out, ones);
  const double expected[] = {0, 0, 1, 1, 0, 0, 3, 3};
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(table->grad.get(i), expected[i]) << i;
}

TEST(OpsGradients, CrossEntropy) {
  std::mt19937_64 rng(7);
  Var logits = parameter(randomTensor({5, 6}, rng, 2.0), "logits");
  const std::vector<int32_t> targets = {0, 5, 2, 2, 3};
  expectGradientsMatch(
      {logits}, [&](Tape& tape) { return crossEntropy(tape, logits, targets); }, "crossEntropy");
}

TEST(OpsGradients, MeanSquaredError) {
  std::mt19937_64 rng(8);
  Var pred = parameter(randomTensor({3, 4}, rng), "pred");
  const Tensor target = randomTensor({3, 4}, rng);
  expectGradientsMatch(
      {pred}, [&](Tape& tape) { return meanSquaredError(tape, pred, target); }, "meanSquaredError");
}

TEST(OpsGradients, AddAddBiasScaleReshape) {
  std::mt19937_64 rng(9);
  Var a = parameter(randomTensor({4, 3}, rng), "a");
  Var b = parameter(randomTensor({4, 3}, rng), "b");
  Var bias = parameter(randomTensor({3}, rng), "bias");
  expectGradientsMatch(
      {a, b}, [&](Tape& tape) { return add(tape, a, b); }, "add");
  expectGradientsMatch(
      {a}, [&](Tape& tape) { return add(tape, a, a); }, "add(a, a)");
  expectGradientsMatch(
      {a, bias}, [&](Tape& tape) { return addBias(tape, a, bias); }, "addBias");
  expectGradientsMatch(
      {a}, [&](Tape& tape) { return scale(tape, a, -1.75); }, "scale");
  expectGradientsMatch(
      {a},
      [&](Tape& tape) {
        return reshape(tape, a, {2, 6});
      },
      "reshape");
}

TEST(OpsGradients, ChainOfOps) {
  // A pre-LN residual block with a per-head LayerNorm, as the models use the ops together.
  std::mt19937_64 rng(10);
  Var x = parameter(randomTensor({6, 4}, rng), "x");
  Var gamma = parameter(randomTensor({2}, rng), "gamma");
  Var beta = parameter(randomTensor({2}, rng), "beta");
  Var bias = parameter(randomTensor({4}, rng), "bias");
  expectGradientsMatch(
      {x, gamma, beta, bias},
      [&](Tape& tape) {
        Var perHead = reshape(tape, x, {12, 2});
        Var normed = reshape(tape, layerNorm(tape, perHead, gamma, beta), {6, 4});
        Var h = gelu(tape, addBias(tape, normed, bias));
        Var a = causalSelfAttention(tape, h, normed, x, 2, 3, 2, 0.5);
        return add(tape, x, scale(tape, a, 0.5));
      },
      "chain");
}

}  // namespace
}  // namespace einjit::rt
