// The training loop with device = cuda, on the host simulation of the CUDA kernels: the same
// losses as the CPU loop (GPT, teacher regression, image classifier), bit-identical resume from a checkpoint on the device, checkpoints that
// hold the device's state, bf16 autocast, and the errors around the option.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>

#include "compiler/cuda/CudaDriver.h"
#include "einjit/error.h"
#include "models/Checkpoint.h"
#include "models/Trainer.h"
#include "runtime/io/Npy.h"
#include "tests/models/TestUtil.h"
#include "tests/runtime/cuda/HostOpDevice.h"

namespace einjit::models {
namespace {

using testing::ScratchDir;

// testing::tinyGptConfig, six steps, evaluated every three.
TrainConfig sixStepGptConfig(const ScratchDir& dir, const std::string& out) {
  TrainConfig c = testing::tinyGptConfig(dir, out);
  c.steps = 6;
  c.evalEvery = 3;
  return c;
}

TEST(DeviceTrainerSimulation, TakesTheStepsOfTheCpuLoop) {
  ScratchDir dir;
  TrainConfig cpu = sixStepGptConfig(dir, "cpu");
  TrainConfig device = sixStepGptConfig(dir, "device");
  device.device = "cuda";
  Trainer cpuTrainer(cpu);
  Trainer deviceTrainer(device, nullptr, &cuda::testing::hostOpDevice());
  EXPECT_EQ(deviceTrainer.deviceDescription(), "host simulation, f32");
  std::ostringstream cpuLog, deviceLog;
  const TrainOutcome cpuOutcome = cpuTrainer.run(cpuLog);
  const TrainOutcome deviceOutcome = deviceTrainer.run(deviceLog);
  ASSERT_EQ(deviceTrainer.losses().size(), 6u);
  for (std::size_t k = 0; k < 6; ++k)
    EXPECT_NEAR(deviceTrainer.losses()[k], cpuTrainer.losses()[k], 1e-4 * cpuTrainer.losses()[k]) << "step " << k + 1;
  EXPECT_NEAR(deviceOutcome.lastEvalLoss, cpuOutcome.lastEvalLoss, 1e-4 * cpuOutcome.lastEvalLoss);
  EXPECT_NE(deviceLog.str().find("eval loss"), std::string::npos) << deviceLog.str();

  // The checkpoint holds the device's parameters and moments: they match the CPU run's.
  const Checkpoint a = readCheckpoint(cpuTrainer.checkpointPath());
  const Checkpoint b = readCheckpoint(deviceTrainer.checkpointPath());
  EXPECT_EQ(b.step, 6);
  ASSERT_EQ(a.params.size(), b.params.size());
  for (const auto& [name, expected] : a.params) {
    const Tensor& actual = b.params.at(name);
    ASSERT_EQ(actual.shape(), expected.shape()) << name;
    double scale = 1e-30, error = 0;
    for (int64_t i = 0; i < expected.numel(); ++i) {
      scale = std::max(scale, std::abs(expected.get(i)));
      error = std::max(error, std::abs(actual.get(i) - expected.get(i)));
    }
    // k_ln is absent (no QK-LayerNorm here); AdamW's normalised steps keep the difference small.
    EXPECT_LE(error / scale, 1e-3) << name;
    EXPECT_GT(b.secondMoments.at(name).numel(), 0) << name;
  }
}

TEST(DeviceTrainerSimulation, ResumesBitIdenticallyOnTheDevice) {
  ScratchDir dir;
  TrainConfig whole = sixStepGptConfig(dir, "whole");
  whole.device = "cuda";
  TrainConfig parts = sixStepGptConfig(dir, "parts");
  parts.device = "cuda";
  cuda::OpDevice& device = cuda::testing::hostOpDevice();
  std::ostringstream log;
  Trainer straight(whole, nullptr, &device);
  straight.run(log);
  {
    Trainer first(parts, nullptr, &device);
    first.run(log, /*stopAtStep=*/4);
  }
  const std::string path = (std::filesystem::path(parts.out) / "checkpoint.npz").string();
  const Checkpoint checkpoint = readCheckpoint(path);
  ASSERT_EQ(checkpoint.step, 4);
  Trainer second(parts, &checkpoint, &device);
  second.run(log);
  ASSERT_EQ(second.losses().size(), 2u);
  EXPECT_EQ(second.losses()[0], straight.losses()[4]);
  EXPECT_EQ(second.losses()[1], straight.losses()[5]);
}

TEST(DeviceTrainerSimulation, Bf16AutocastTracksTheCpuLoop) {
  ScratchDir dir;
  TrainConfig cpu = sixStepGptConfig(dir, "cpu");
  TrainConfig device = sixStepGptConfig(dir, "device");
  device.device = "cuda";
  device.precision = "bf16";
  Trainer cpuTrainer(cpu);
  Trainer deviceTrainer(device, nullptr, &cuda::testing::hostOpDevice());
  EXPECT_EQ(deviceTrainer.deviceDescription(), "host simulation, bf16 autocast");
  std::ostringstream log;
  cpuTrainer.run(log);
  deviceTrainer.run(log);
  for (std::size_t k = 0; k < 6; ++k)
    EXPECT_NEAR(deviceTrainer.losses()[k], cpuTrainer.losses()[k], 3e-2 * cpuTrainer.losses()[k]) << "step " << k + 1;
}

TEST(DeviceTrainerErrors, TheOptionIsChecked) {
  ScratchDir dir;
  TrainConfig c = sixStepGptConfig(dir, "run");
  c.device = "tpu";
  EXPECT_THROW(validateTrainConfig(c), UserError);
  c.device = "cpu";
  c.precision = "bf16";
  EXPECT_THROW(validateTrainConfig(c), UserError);  // autocast needs the GPU
  c.precision = "f16";
  c.device = "cuda";
  EXPECT_THROW(validateTrainConfig(c), UserError);
  c.precision = "f32";
  EXPECT_NO_THROW(validateTrainConfig(c));
}

// The device loop's losses (every step) and last evaluation against the CPU loop's.
void expectSameRun(const TrainConfig& cpu, const TrainConfig& device) {
  Trainer cpuTrainer(cpu);
  Trainer deviceTrainer(device, nullptr, &cuda::testing::hostOpDevice());
  std::ostringstream log;
  const TrainOutcome cpuOutcome = cpuTrainer.run(log);
  const TrainOutcome deviceOutcome = deviceTrainer.run(log);
  ASSERT_EQ(deviceTrainer.losses().size(), cpuTrainer.losses().size());
  for (std::size_t k = 0; k < cpuTrainer.losses().size(); ++k)
    EXPECT_NEAR(deviceTrainer.losses()[k], cpuTrainer.losses()[k], 1e-4 * cpuTrainer.losses()[k]) << "step " << k + 1;
  EXPECT_NEAR(deviceOutcome.lastEvalLoss, cpuOutcome.lastEvalLoss, 1e-4 * cpuOutcome.lastEvalLoss);
}

TEST(DeviceTrainerSimulation, TeacherRegressionTakesTheStepsOfTheCpuLoop) {
  ScratchDir dir;
  TrainConfig c;
  c.model = "teacher";
  c.teacherWidth = 32;
  c.width = 16;
  c.blocks = 2;
  c.batch = 16;
  c.steps = 5;
  c.lr = 1e-2;
  c.evalEvery = 5;
  c.logEvery = 1;
  c.structure = "btt(rank=2, norm)";
  c.out = dir / "cpu";
  TrainConfig device = c;
  device.device = "cuda";
  device.out = dir / "device";
  expectSameRun(c, device);
}

TEST(DeviceTrainerSimulation, ImageClassifierTakesTheStepsOfTheCpuLoop) {
  ScratchDir dir;
  const int64_t n = 24;
  Tensor images(DType::F32, {n, 6}), labels(DType::F32, {n});
  uint64_t state = 3;
  for (int64_t i = 0; i < images.numel(); ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    images.set(i, static_cast<double>(state >> 40) / 16777216.0);
  }
  for (int64_t i = 0; i < n; ++i) labels.set(i, static_cast<double>(i % 3));
  writeNpz(dir / "images.npz", {{"train_images", images}, {"train_labels", labels},
                                {"test_images", images}, {"test_labels", labels}});
  TrainConfig c;
  c.model = "mlp";
  c.data = dir / "images.npz";
  c.width = 16;
  c.hiddenLayers = 2;
  c.structure = "monarch(blocks=4)";
  c.batch = 8;
  c.steps = 5;
  c.lr = 1e-2;
  c.evalEvery = 5;
  c.logEvery = 1;
  c.out = dir / "cpu";
  TrainConfig device = c;
  device.device = "cuda";
  device.out = dir / "device";
  expectSameRun(c, device);
}

TEST(DeviceTrainerErrors, WithoutAGpuTheTrainerSaysWhy) {
  if (cuda::cudaAvailable()) GTEST_SKIP() << "a GPU is present";
  ScratchDir dir;
  TrainConfig c = sixStepGptConfig(dir, "run");
  c.device = "cuda";
  try {
    Trainer trainer(c);
    FAIL() << "a cuda trainer needs a GPU";
  } catch (const UserError& error) {
    const std::string message = error.what(), reason = cuda::cudaUnavailableReason();
    EXPECT_NE(message.find(reason.substr(0, reason.find(';'))), std::string::npos) << message;
    EXPECT_NE(message.find("--device cpu"), std::string::npos) << message;
    EXPECT_EQ(message.find("--target"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace einjit::models
