// The op kernels on the GPU, through gpuOpDevice(), against the CPU ops (the same checks as the
// host simulation). Skipped, with the reason, on machines without a usable GPU; there
// gpuOpDevice() must throw UserError carrying that reason.
#include <gtest/gtest.h>

#include "compiler/cuda/CudaDriver.h"
#include "einjit/error.h"
#include "runtime/cuda/OpDevice.h"
#include "tests/runtime/cuda/OpChecks.h"

namespace einjit::cuda::testing {
namespace {

#define SKIP_WITHOUT_GPU()                                                           \
  do {                                                                               \
    if (!cudaAvailable()) GTEST_SKIP() << "no usable GPU: " << cudaUnavailableReason(); \
  } while (0)

TEST(CudaOpsGpu, WithoutAGpuTheDeviceSaysWhy) {
  if (cudaAvailable()) GTEST_SKIP() << "a GPU is present";
  try {
    gpuOpDevice();
    FAIL() << "gpuOpDevice() must throw without a GPU";
  } catch (const UserError& error) {
    EXPECT_EQ(std::string(error.what()), cudaUnavailableReason());
  }
}

class CudaOpsGpuStorage : public ::testing::TestWithParam<Precision> {};

TEST_P(CudaOpsGpuStorage, ElementwiseEmbeddingLayerNormCrossEntropy) {
  SKIP_WITHOUT_GPU();
  OpDevice& device = gpuOpDevice();
  checkEmbedding(device, GetParam(), 1000, 256, 4096);
  checkResidualOps(device, GetParam(), 4099, 384);
  checkLayerNorm(device, GetParam(), 4099, 768, true);
  checkActivations(device, GetParam(), 4099, 768);
  checkCrossEntropy(device, GetParam(), 4099, 50257 / 8, 1.0);
  checkMeanSquaredError(device, GetParam(), 4099, 1, 1.0);
}

TEST_P(CudaOpsGpuStorage, Attention) {
  SKIP_WITHOUT_GPU();
  for (const AttentionCase& c : {AttentionCase{1, 1, 1, 16, 0.25}, AttentionCase{2, 17, 3, 16, 0.25},
                                 AttentionCase{4, 128, 4, 64, 0.125}, AttentionCase{2, 1024, 12, 64, 0.125},
                                 AttentionCase{1, 300, 2, 128, 0.088}})
    checkAttention(gpuOpDevice(), GetParam(), c);
}

TEST_P(CudaOpsGpuStorage, AdamW) {
  SKIP_WITHOUT_GPU();
  checkAdamW(gpuOpDevice(), GetParam(), 1.0, 3);
}

TEST_P(CudaOpsGpuStorage, WeightNorm) {
  SKIP_WITHOUT_GPU();
  for (bool withGamma : {true, false})
    for (bool clamped : {true, false}) checkWeightNorm(gpuOpDevice(), GetParam(), 300000, withGamma, clamped);
}

TEST_P(CudaOpsGpuStorage, StructuredLayersOnDeviceTensors) {
  SKIP_WITHOUT_GPU();
  for (const char* spec : {"dense()", "btt(rank=4)", "monarch(blocks=32)", "btt(rank=4, norm)", "lowrank(rank=64)"})
    checkDeviceLinear(gpuOpDevice(), GetParam(), spec, 1024, 1024, 1027);
}

INSTANTIATE_TEST_SUITE_P(Storage, CudaOpsGpuStorage, ::testing::Values(Precision::F32, Precision::BF16),
                         [](const auto& info) { return std::string(precisionName(info.param)); });

TEST(CudaOpsGpu, Conversion) {
  SKIP_WITHOUT_GPU();
  checkConversion(gpuOpDevice(), 100000);
}

}  // namespace
}  // namespace einjit::cuda::testing
