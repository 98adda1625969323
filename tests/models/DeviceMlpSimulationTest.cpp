// The MLP models on an OpDevice (models/DeviceMlp.h), on the host simulation of the CUDA kernels,
// against the CPU models on the tape: the loss and every gradient, then AdamW steps and the
// parameters after each; dense, structured and weight-normalised layers.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "einjit/error.h"
#include "models/DeviceMlp.h"
#include "tests/models/DeviceModelChecks.h"
#include "tests/runtime/cuda/HostOpDevice.h"

namespace einjit::models {
namespace {

constexpr double kTolerance = 1e-4;

Tensor randomInput(int64_t rows, int64_t width, uint64_t seed) {
  Tensor t(DType::F32, {rows, width});
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, testing::randomUniform(seed, 1.0));
  return t;
}

class DeviceResidualMlpSimulation : public ::testing::TestWithParam<const char*> {};

TEST_P(DeviceResidualMlpSimulation, MatchesTheCpuModel) {
  const ResidualMlp model(ResidualMlpConfig{8, 16, 2, GetParam(), 0, 3, DType::F32});
  testing::perturbParameters(model.parameters(), 5, 0.3);
  DeviceResidualMlp device(model, cuda::testing::hostOpDevice());
  auto x = [](int step) { return randomInput(13, 8, 40 + step); };
  auto y = [](int step) { return randomInput(13, 1, 60 + step); };
  testing::expectDeviceStepsMatch(
      model.parameters(),
      {[&]() -> const std::vector<cuda::DeviceTensor>& { return device.gradients(); },
       [&]() -> std::vector<cuda::DeviceTensor>& { return device.parameters(); }, device.optimizerParameters()},
      [&](int step, rt::Tape& tape) { return model.loss(tape, rt::constant(x(step)), y(step)); },
      [&](int step) { return device.loss(x(step), y(step), /*backward=*/true); }, 3, kTolerance);
}

INSTANTIATE_TEST_SUITE_P(Structures, DeviceResidualMlpSimulation,
                         ::testing::Values("dense", "btt(rank=2)", "btt(rank=2, norm)"),
                         [](const auto& info) { return std::to_string(info.index); });

class DeviceMlpClassifierSimulation : public ::testing::TestWithParam<const char*> {};

TEST_P(DeviceMlpClassifierSimulation, MatchesTheCpuModel) {
  const MlpClassifier model(MlpClassifierConfig{20, 16, 2, 5, GetParam(), 0, 3, DType::F32});
  testing::perturbParameters(model.parameters(), 6, 0.3);
  DeviceMlpClassifier device(model, cuda::testing::hostOpDevice());
  auto images = [](int step) { return randomInput(11, 20, 80 + step); };
  auto labels = [](int step) {
    std::vector<int32_t> out(11);
    uint64_t state = 90 + static_cast<uint64_t>(step);
    for (int32_t& label : out) label = static_cast<int32_t>(testing::nextRandom(state) % 5);
    return out;
  };
  testing::expectDeviceStepsMatch(
      model.parameters(),
      {[&]() -> const std::vector<cuda::DeviceTensor>& { return device.gradients(); },
       [&]() -> std::vector<cuda::DeviceTensor>& { return device.parameters(); }, device.optimizerParameters()},
      [&](int step, rt::Tape& tape) { return model.loss(tape, rt::constant(images(step)), labels(step)); },
      [&](int step) { return device.loss(images(step), labels(step), /*backward=*/true); }, 3, kTolerance);
}

INSTANTIATE_TEST_SUITE_P(Structures, DeviceMlpClassifierSimulation,
                         ::testing::Values("dense", "monarch(blocks=4)", "lowrank(rank=3, norm)"),
                         [](const auto& info) { return std::to_string(info.index); });

TEST(DeviceMlpSimulationErrors, BadBatchesAreRefused) {
  const MlpClassifier classifier(MlpClassifierConfig{20, 16, 1, 5, "dense", 0, 3, DType::F32});
  DeviceMlpClassifier device(classifier, cuda::testing::hostOpDevice());
  EXPECT_THROW(device.loss(randomInput(3, 19, 1), {0, 1, 2}, false), UserError);  // width
  EXPECT_THROW(device.loss(randomInput(3, 20, 1), {0, 1}, false), UserError);     // label count
  EXPECT_THROW(device.loss(randomInput(3, 20, 1), {0, 1, 5}, false), UserError);  // label range
  const ResidualMlp regression(ResidualMlpConfig{8, 16, 1, "dense", 0, 3, DType::F32});
  DeviceResidualMlp residual(regression, cuda::testing::hostOpDevice());
  EXPECT_THROW(residual.loss(randomInput(3, 8, 1), randomInput(2, 1, 2), false), UserError);
  EXPECT_GT(residual.loss(randomInput(3, 8, 1), randomInput(3, 1, 2), false), 0.0);
}

}  // namespace
}  // namespace einjit::models
