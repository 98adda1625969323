// DeviceLinear (a structured layer's kernels on an OpDevice, on device tensors) on the host
// flavour of the CUDA kernels, against the reference executor: every structure, sizes that leave
// partial row tiles, f32 and bf16 storage.
#include <gtest/gtest.h>

#include "einjit/error.h"
#include "runtime/cuda/DeviceLinear.h"
#include "frontend/structures/Structures.h"
#include "tests/runtime/cuda/HostOpDevice.h"
#include "tests/runtime/cuda/OpChecks.h"

namespace einjit::cuda::testing {
namespace {

struct LayerCase {
  const char* spec;
  int64_t dIn, dOut, rows;
};

class DeviceLinearSimulation : public ::testing::TestWithParam<Precision> {};

TEST_P(DeviceLinearSimulation, EveryStructureForwardAndBackward) {
  for (const LayerCase& c : {LayerCase{"dense()", 24, 40, 37}, LayerCase{"btt(rank=2)", 36, 16, 70},
                             LayerCase{"monarch(blocks=4)", 32, 48, 9}, LayerCase{"lowrank(rank=5)", 30, 20, 33},
                             LayerCase{"kron()", 16, 36, 5}, LayerCase{"tt(rank=3)", 16, 16, 40},
                             LayerCase{"btt(rank=2, norm)", 16, 64, 21}})
    checkDeviceLinear(hostOpDevice(), GetParam(), c.spec, c.dIn, c.dOut, c.rows);
}

INSTANTIATE_TEST_SUITE_P(Storage, DeviceLinearSimulation, ::testing::Values(Precision::F32, Precision::BF16),
                         [](const auto& info) { return std::string(precisionName(info.param)); });

TEST(DeviceLinearSimulationErrors, OperandsAreChecked) {
  OpDevice& device = hostOpDevice();
  const DeviceLinear linear(device, buildLayer(parseStructureSpec("btt(rank=2)"), 16, 16), Precision::F32);
  std::vector<DeviceTensor> weights;
  for (const Shape& shape : linear.weightShapes()) weights.push_back(DeviceTensor::zeros(device, shape, Precision::F32));
  const DeviceTensor x = DeviceTensor::zeros(device, {3, 16}, Precision::F32);
  EXPECT_NO_THROW(linear.forward(weights, x));
  EXPECT_THROW(linear.forward(weights, DeviceTensor::zeros(device, {3, 15}, Precision::F32)), UserError);
  EXPECT_THROW(linear.forward(weights, DeviceTensor::zeros(device, {3, 16}, Precision::BF16)), UserError);
  EXPECT_THROW(linear.forward({weights[0]}, x), UserError);
  std::vector<DeviceTensor> swapped = {weights[1], weights[0]};
  if (weights[0].shape() != weights[1].shape()) {
    EXPECT_THROW(linear.forward(swapped, x), UserError);
  }
  EXPECT_THROW(linear.backward(weights, x, DeviceTensor::zeros(device, {4, 16}, Precision::F32)), UserError);
  try {
    linear.forward(weights, DeviceTensor::zeros(device, {3, 15}, Precision::F32));
  } catch (const UserError& error) {
    EXPECT_NE(std::string(error.what()).find("expected (3, 16)"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace einjit::cuda::testing
