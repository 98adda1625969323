// Tensor storage and the ops that write their results into uninitialised storage.
//
// The ops (and the compiled kernels) leave their outputs unzeroed because they write every
// element. With the storage's test hook on, every uninitialised tensor starts as NaN: a whole
// training step must then give bit for bit the values it gives without the hook, so no op
// reads an element of its output that it did not write. Freed blocks of 64 KiB and more are
// reused for the next tensor of the same size: the zero-filling constructor must still zero.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "einjit/error.h"
#include "runtime/ops/Ops.h"
#include "runtime/ops/StructuredLinear.h"
#include "runtime/tensor/TensorTesting.h"
#include "tests/runtime/ops/OpsTestUtil.h"

namespace einjit::rt {
namespace {

constexpr int64_t kLargeFloats = 1 << 16;  // 256 KiB of float32: a block the cache keeps

TEST(TensorStorage, ZeroFilledConstructorZeroesReusedBlocks) {
  for (int round = 0; round < 3; ++round) {
    {
      Tensor dirty(DType::F32, {kLargeFloats});
      float* data = dirty.data<float>();
      for (int64_t i = 0; i < kLargeFloats; ++i) data[i] = 7.0f;
    }
    const Tensor clean(DType::F32, {kLargeFloats});
    const float* data = clean.data<float>();
    int64_t nonZero = 0;
    for (int64_t i = 0; i < kLargeFloats; ++i) nonZero += data[i] != 0.0f;
    EXPECT_EQ(nonZero, 0) << "round " << round;
  }
}

TEST(TensorStorage, UninitialisedHasTheLayoutAndAlignedStorage) {
  for (const Shape& shape : {Shape{3, 5}, Shape{kLargeFloats}, Shape{0, 4}, Shape{}}) {
    for (DType dtype : {DType::F32, DType::F64}) {
      const Tensor t = Tensor::uninitialised(dtype, shape);
      EXPECT_EQ(t.dtype(), dtype);
      EXPECT_EQ(t.shape(), shape);
      EXPECT_EQ(t.numel(), shapeNumel(shape));
      EXPECT_EQ(t.nbytes(), static_cast<size_t>(shapeNumel(shape)) * dtypeSize(dtype));
      if (t.nbytes() > 0) {
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u) << shapeToString(shape);
      }
    }
  }
  EXPECT_THROW(Tensor::uninitialised(DType::F32, {-1, 2}), UserError);
  EXPECT_THROW(Tensor::uninitialised(DType::F64, {int64_t{1} << 62, 4}), UserError);
}

TEST(TensorStorage, CopiesOwnTheirBytes) {
  Tensor original = Tensor::uninitialised(DType::F64, {kLargeFloats});
  for (int64_t i = 0; i < kLargeFloats; ++i) original.set(i, static_cast<double>(i));
  Tensor copy = original;
  copy.set(5, -1.0);
  EXPECT_EQ(original.get(5), 5.0);
  EXPECT_EQ(copy.get(kLargeFloats - 1), static_cast<double>(kLargeFloats - 1));
  EXPECT_EQ(copy.get(5), -1.0);
}

// Every value a training step produces: the loss and every parameter gradient.
struct StepResult {
  std::vector<Tensor> values;
};

constexpr int64_t kBatch = 2, kSeq = 128, kRows = kBatch * kSeq, kWidth = 128, kHeads = 4;
constexpr int64_t kVocab = 300;

// A small transformer-like step over every op whose output is left uninitialised: embedding,
// LayerNorm, three structured layers (dense; btt with weight normalisation; monarch, with a
// bias), attention, add, addBias, GELU, ReLU, scale, a dense head, cross-entropy and MSE.
StepResult trainingStep() {
  std::mt19937_64 rng(11);
  const Var table = parameter(testing::randomTensor({kVocab, kWidth}, rng, 0.5, DType::F32), "wte");
  const Var gamma = parameter(testing::randomTensor({kWidth}, rng, 1.0, DType::F32), "gamma");
  const Var beta = parameter(testing::randomTensor({kWidth}, rng, 0.1, DType::F32), "beta");
  const Var bias = parameter(testing::randomTensor({kWidth}, rng, 0.1, DType::F32), "bias");
  const StructuredLinear q("q", "dense", kWidth, kWidth, false, 1);
  const StructuredLinear k("k", "btt(rank=2, norm)", kWidth, kWidth, false, 2);
  const StructuredLinear v("v", "monarch(blocks=4)", kWidth, kWidth, true, 3);
  const StructuredLinear head("head", "dense", kWidth, kVocab, false, 4);
  std::vector<int32_t> ids(kRows), targets(kRows);
  for (int64_t r = 0; r < kRows; ++r) {
    ids[r] = static_cast<int32_t>((r * 37) % 250);  // ids 250..299 never occur
    targets[r] = static_cast<int32_t>((r * 11 + 3) % kVocab);
  }
  const Tensor regressionTarget = testing::randomTensor({kRows, kWidth}, rng, 1.0, DType::F32);

  Tape tape;
  const Var e = embedding(tape, ids, table);
  const Var h = layerNorm(tape, e, gamma, beta);
  const Var a =
      causalSelfAttention(tape, q.forward(tape, h), k.forward(tape, h), v.forward(tape, h),
                          kBatch, kSeq, kHeads, 0.125);
  const Var r = add(tape, e, a);
  const Var f = gelu(tape, addBias(tape, r, bias));
  const Var crossEntropyLoss = crossEntropy(tape, head.forward(tape, f), targets);
  const Var scaled = scale(tape, relu(tape, f, 1.5), 0.5);
  const Var mseLoss = meanSquaredError(tape, scaled, regressionTarget);
  const Var loss = add(tape, crossEntropyLoss, mseLoss);
  tape.backward(loss);

  StepResult result;
  result.values.push_back(loss->value);
  for (const Var& p : {table, gamma, beta, bias}) result.values.push_back(p->grad);
  for (const StructuredLinear* layer : {&q, &k, &v, &head})
    for (const ParameterInfo& p : layer->parameters()) result.values.push_back(p.var->grad);
  return result;
}

// Turns the NaN poisoning of uninitialised tensors on for its lifetime.
class PoisonUninitialisedTensors {
 public:
  PoisonUninitialisedTensors() { detail::setPoisonUninitialisedTensors(true); }
  ~PoisonUninitialisedTensors() { detail::setPoisonUninitialisedTensors(false); }
};

TEST(TensorStorage, PoisonHookFillsUninitialisedTensorsWithNaN) {
  const PoisonUninitialisedTensors poison;
  const Tensor f32 = Tensor::uninitialised(DType::F32, {kLargeFloats});
  const Tensor f64 = Tensor::uninitialised(DType::F64, {7});
  for (int64_t i = 0; i < f32.numel(); i += 997) EXPECT_TRUE(std::isnan(f32.get(i))) << i;
  for (int64_t i = 0; i < f64.numel(); ++i) EXPECT_TRUE(std::isnan(f64.get(i))) << i;
  EXPECT_EQ(Tensor(DType::F32, {3}).get(1), 0.0);
}

TEST(UninitialisedOutputs, TrainingStepWritesEveryElementOfItsResults) {
  const StepResult clean = trainingStep();
  StepResult poisoned;
  {
    const PoisonUninitialisedTensors poison;
    poisoned = trainingStep();
  }
  ASSERT_EQ(clean.values.size(), poisoned.values.size());
  for (size_t i = 0; i < clean.values.size(); ++i) {
    const Tensor& a = clean.values[i];
    const Tensor& b = poisoned.values[i];
    ASSERT_EQ(a.shape(), b.shape()) << "value " << i;
    ASSERT_GT(a.numel(), 0) << "value " << i << " (a gradient went missing)";
    int64_t notFinite = 0;
    for (int64_t j = 0; j < a.numel(); ++j) notFinite += !std::isfinite(a.get(j));
    EXPECT_EQ(notFinite, 0) << "value " << i;
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0)
        << "value " << i << " of shape " << shapeToString(a.shape())
        << " differs when uninitialised tensors start as NaN";
  }
}

}  // namespace
}  // namespace einjit::rt
