// DeviceGpt on the GPU (gpuOpDevice) against Gpt on the CPU tape: the loss and every gradient of
// one batch, f32, for a model of a few hundred thousand parameters; and `einjit train`'s loop on
// the GPU against the CPU loop, f32 and bf16. Skipped, with the reason, on machines without a
// usable GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>

#include "compiler/cuda/CudaDriver.h"
#include "models/DeviceGpt.h"
#include "models/Trainer.h"
#include "tests/models/DeviceModelChecks.h"
#include "tests/models/TestUtil.h"
#include "runtime/cuda/OpDevice.h"

namespace einjit::models {
namespace {

TEST(DeviceGptGpu, LossAndGradientsMatchTheCpuModel) {
  if (!cuda::cudaAvailable()) GTEST_SKIP() << "no usable GPU: " << cuda::cudaUnavailableReason();
  for (const char* structure : {"dense", "btt(rank=4)", "btt(rank=4, norm)"}) {
    GptConfig config;
    config.vocab = 96;
    config.context = 64;
    config.nLayer = 2;
    config.nHead = 4;
    config.dModel = 128;
    config.structure = structure;
    config.seed = 3;
    const Gpt model(config);
    testing::perturbParameters(model.parameters(), 9, 0.025);
    const int64_t batch = 4, seq = 64;
    std::vector<int32_t> tokens(batch * seq), targets(batch * seq);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = static_cast<int32_t>((i * 7919) % 96);
      targets[i] = static_cast<int32_t>((i * 104729 + 5) % 96);
    }
    rt::Tape tape;
    const rt::Var loss = model.loss(tape, tokens, targets, batch, seq);
    tape.backward(loss);
    DeviceGpt device(model, cuda::gpuOpDevice());
    EXPECT_NEAR(device.loss(tokens, targets, batch, seq, true), loss->value.get(0), 1e-4 * loss->value.get(0))
        << structure;
    for (std::size_t i = 0; i < model.parameters().size(); ++i)
      EXPECT_LE(testing::relativeError(device.gradients()[i].download(DType::F64), model.parameters()[i].var->grad),
                1e-3)
          << structure << ": d " << model.parameters()[i].var->name;
  }
}

TEST(DeviceGptGpu, TheTrainingLoopTakesTheCpuLoopsSteps) {
  if (!cuda::cudaAvailable()) GTEST_SKIP() << "no usable GPU: " << cuda::cudaUnavailableReason();
  testing::ScratchDir dir;
  TrainConfig cpu = testing::tinyGptConfig(dir, "cpu");
  cpu.steps = 10;
  Trainer cpuTrainer(cpu);
  std::ostringstream log;
  cpuTrainer.run(log);
  for (const char* precision : {"f32", "bf16"}) {
    TrainConfig gpu = cpu;
    gpu.device = "cuda";
    gpu.precision = precision;
    gpu.out = dir / (std::string("gpu_") + precision);
    Trainer gpuTrainer(gpu);
    gpuTrainer.run(log);
    // f32: the same steps up to rounding; bf16: the same descent within a few percent.
    const double tolerance = std::string(precision) == "f32" ? 1e-4 : 3e-2;
    for (std::size_t k = 0; k < cpuTrainer.losses().size(); ++k)
      EXPECT_NEAR(gpuTrainer.losses()[k], cpuTrainer.losses()[k], tolerance * cpuTrainer.losses()[k])
          << precision << ", step " << k + 1;
  }
}

}  // namespace
}  // namespace einjit::models
