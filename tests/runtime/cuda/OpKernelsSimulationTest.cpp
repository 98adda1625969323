// The op kernels' host flavour (every thread a fiber, barriers and warp shuffles as on the GPU),
// launched through the CudaOps wrappers, against the CPU ops and the CPU AdamW: every kernel
// forward and backward, f32 and bf16, on sizes that leave partial tiles, partial warps and
// partial row chunks, and grids smaller than the work (grid-stride loops take several turns).
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "compiler/cuda/CudaDriver.h"
#include "einjit/error.h"
#include "runtime/cuda/CudaOps.h"
#include "runtime/cuda/OpKernels.h"
#include "tests/runtime/cuda/HostOpDevice.h"
#include "tests/runtime/cuda/OpChecks.h"

namespace einjit::cuda::testing {
namespace {

class OpSimulation : public ::testing::TestWithParam<Precision> {};

TEST_P(OpSimulation, Embedding) {
  checkEmbedding(hostOpDevice(), GetParam(), 37, 19, 45);  // repeated ids, unused table rows
  checkEmbedding(hostOpDevice(), GetParam(), 3, 300, 1);   // rows wider than a block
}

TEST_P(OpSimulation, ResidualAddScaleBias) {
  checkResidualOps(hostOpDevice(), GetParam(), 67, 19);   // two row chunks, the last partial
  checkResidualOps(hostOpDevice(), GetParam(), 300, 45);  // several chunks, grid-stride
}

TEST_P(OpSimulation, LayerNorm) {
  checkLayerNorm(hostOpDevice(), GetParam(), 67, 45, true);   // width not a multiple of 32
  checkLayerNorm(hostOpDevice(), GetParam(), 130, 100, true);  // rows not a multiple of 8 warps
  checkLayerNorm(hostOpDevice(), GetParam(), 5, 16, false);
}

TEST_P(OpSimulation, GeluAndRelu) { checkActivations(hostOpDevice(), GetParam(), 41, 97); }

TEST_P(OpSimulation, CrossEntropy) {
  checkCrossEntropy(hostOpDevice(), GetParam(), 67, 50, 1.0);
  checkCrossEntropy(hostOpDevice(), GetParam(), 3, 1, 0.5);    // one class
  checkCrossEntropy(hostOpDevice(), GetParam(), 9, 300, 2.0);  // vocab wider than a warp pass
}

TEST_P(OpSimulation, AdamW) { checkAdamW(hostOpDevice(), GetParam(), 1.0, 3); }

TEST_P(OpSimulation, MeanSquaredError) {
  checkMeanSquaredError(hostOpDevice(), GetParam(), 300, 1, 1.0);  // more rows than threads
  checkMeanSquaredError(hostOpDevice(), GetParam(), 7, 3, -0.5);
}

TEST_P(OpSimulation, WeightNorm) {
  for (bool withGamma : {true, false})
    for (bool clamped : {true, false}) checkWeightNorm(hostOpDevice(), GetParam(), 1000, withGamma, clamped);
  checkWeightNorm(hostOpDevice(), GetParam(), 1, true, true);
}

INSTANTIATE_TEST_SUITE_P(Storage, OpSimulation, ::testing::Values(Precision::F32, Precision::BF16),
                         [](const auto& info) { return std::string(precisionName(info.param)); });

struct AttentionParam {
  Precision precision;
  AttentionCase shape;
};

class AttentionSimulation : public ::testing::TestWithParam<AttentionParam> {};

TEST_P(AttentionSimulation, ForwardAndBackwardMatchCpu) {
  checkAttention(hostOpDevice(), GetParam().precision, GetParam().shape);
}

// T = 1, 17, 128 against 64-row tiles (one partial tile, exact tiles), heads 1 and 3,
// headDim 16 and 64, an odd headDim, the largest headDim, and a second sequence in the batch.
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionSimulation,
    ::testing::Values(AttentionParam{Precision::F32, {1, 1, 1, 16, 0.25}},
                      AttentionParam{Precision::F32, {2, 17, 3, 16, 0.25}},
                      AttentionParam{Precision::F32, {1, 128, 1, 64, 0.125}},
                      AttentionParam{Precision::F32, {2, 128, 3, 64, 0.125}},
                      AttentionParam{Precision::F32, {1, 70, 2, 24, 0.7}},
                      AttentionParam{Precision::F32, {1, 65, 1, 128, 0.088}},
                      AttentionParam{Precision::BF16, {2, 17, 3, 16, 0.25}},
                      AttentionParam{Precision::BF16, {1, 128, 3, 64, 0.125}}),
    [](const auto& info) {
      return std::string(precisionName(info.param.precision)) + "_" + info.param.shape.name();
    });

TEST(OpSimulationExtras, ConversionRoundsToNearestEven) { checkConversion(hostOpDevice(), 3000); }

TEST(OpSimulationExtras, AdamWWithoutClipping) {
  checkAdamW(hostOpDevice(), Precision::F32, 0.0, 2);
}

TEST(OpSimulationExtras, AdamWSkipsParametersWithoutGradient) {
  OpDevice& device = hostOpDevice();
  Tensor value(DType::F64, {4});
  for (int64_t i = 0; i < 4; ++i) value.set(i, 0.5 * static_cast<double>(i));
  DeviceAdamW adamw({{DeviceTensor::upload(device, value, Precision::F32), 1.0, true}}, rt::AdamWConfig{});
  EXPECT_EQ(adamw.step({DeviceTensor()}), 0.0);
  const Tensor after = adamw.parameters()[0].value.download(DType::F64);
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(after.get(i), value.get(i));
}

TEST(OpSimulationErrors, BadArgumentsThrowUserError) {
  OpDevice& device = hostOpDevice();
  const DeviceTensor x = DeviceTensor::zeros(device, {4, 6}, Precision::F32);
  const DeviceTensor y = DeviceTensor::zeros(device, {4, 5}, Precision::F32);
  const DeviceTensor half = DeviceTensor::zeros(device, {4, 6}, Precision::BF16);
  EXPECT_THROW(add(x, y), UserError);
  EXPECT_THROW(add(x, half), UserError);
  EXPECT_THROW(DeviceTensor::zeros(device, {2}, Precision::F64), UserError);
  EXPECT_THROW(DeviceIds(device, {0, 7}, 7, "embedding"), UserError);
  EXPECT_THROW(DeviceIds(device, {}, 7, "embedding"), UserError);
  EXPECT_THROW(addBias(x, DeviceTensor::zeros(device, {5}, Precision::F32)), UserError);
  EXPECT_THROW(layerNorm(x, nullptr, nullptr, -1.0), UserError);
  EXPECT_THROW(scale(x, std::nan("")), UserError);
  const DeviceTensor wide = DeviceTensor::zeros(device, {4, 2 * (kMaxHeadDim + 1)}, Precision::F32);
  EXPECT_THROW(causalSelfAttention(wide, wide, wide, {1, 4, 2, 0.1}), UserError);  // headDim too large
  EXPECT_THROW(causalSelfAttention(x, x, x, {3, 4, 2, 0.1}), UserError);           // rows != batch * seq
  EXPECT_THROW(causalSelfAttention(x, x, x, {1, 4, 4, 0.1}), UserError);           // 6 % 4 != 0 -> headDim
  const DeviceIds targets(device, {0, 1, 2, 3}, 6, "crossEntropy");
  EXPECT_THROW(crossEntropy(y, targets), UserError);  // 5 classes of logits, targets over 6
  EXPECT_THROW(DeviceAdamW({{half, 1.0, false}}, rt::AdamWConfig{}), UserError);
  DeviceAdamW adamw({{x, 1.0, false}}, rt::AdamWConfig{});
  EXPECT_THROW(adamw.step({y}), UserError);
  EXPECT_THROW(adamw.step({}), UserError);
}

TEST(OpSimulationErrors, UnsupportedBlockSizeIsRefused) {
  // A launch with a block size the kernels do not support (not a multiple of 32) is refused by
  // the host scheduler, so a wrong launch choice cannot pass unnoticed.
  OpDevice& device = hostOpDevice();
  const DeviceTensor x = DeviceTensor::zeros(device, {8}, Precision::F32);
  uint64_t in = x.address(), out = x.address();
  long long count = 8;
  void* args[] = {&in, &out, &count};
  EXPECT_THROW(device.launch("einjit_gelu_f32", LaunchShape{1, 1, 48, 0}, args), std::runtime_error);
}

}  // namespace
}  // namespace einjit::cuda::testing
