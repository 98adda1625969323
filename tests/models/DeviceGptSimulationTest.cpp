// DeviceGpt (GPT-2 on an OpDevice) on the host simulation of the CUDA kernels, against Gpt on
// the CPU tape: the loss and every parameter's gradient, then AdamW steps (DeviceAdamW against
// rt::AdamW) and the parameters after each; dense and structured layers, weight-normalised
// ones (btt_norm), QK-LayerNorm and the residual scaling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "models/DeviceGpt.h"
#include "runtime/optim/AdamW.h"
#include "tests/models/DeviceModelChecks.h"
#include "tests/runtime/cuda/HostOpDevice.h"

namespace einjit::models {
namespace {

struct GptCase {
  const char* structure;
  LayerSelection layers;
  bool qkLayerNorm;
  double residualScale;
};

void PrintTo(const GptCase& c, std::ostream* os) {
  *os << c.structure << " on " << layerSelectionName(c.layers) << (c.qkLayerNorm ? ", QK-LayerNorm" : "")
      << ", residual scale " << c.residualScale;
}

// A small GPT whose parameters are all moved off their init.
Gpt makeModel(const GptCase& c) {
  GptConfig config;
  config.vocab = 23;
  config.context = 9;
  config.nLayer = 2;
  config.nHead = 2;
  config.dModel = 16;
  config.structure = c.structure;
  config.layers = c.layers;
  config.qkLayerNorm = c.qkLayerNorm;
  config.residualScale = c.residualScale;
  config.seed = 5;
  Gpt model(config);
  testing::perturbParameters(model.parameters(), 17, 0.3);
  return model;
}

std::vector<int32_t> randomTokens(int64_t count, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> out(static_cast<std::size_t>(count));
  for (int32_t& t : out) t = static_cast<int32_t>(testing::nextRandom(seed) % static_cast<uint64_t>(vocab));
  return out;
}

// f32 on both sides, summed in other orders over chains of a dozen kernels.
constexpr double kTolerance = 1e-4;

// The bias of QK-LayerNorm's k adds q_i . beta to every logit of row i, which softmax cancels:
// its gradient is zero up to rounding on both sides, and AdamW turns that noise into full
// steps, so it is not compared.
bool vanishingGradient(const std::string& name) { return name.find("k_ln.beta") != std::string::npos; }

class DeviceGptSimulation : public ::testing::TestWithParam<GptCase> {};

TEST_P(DeviceGptSimulation, LossGradientsAndAdamWStepsMatchTheCpuModel) {
  const Gpt model = makeModel(GetParam());
  const int64_t batch = 2, seq = 7;
  DeviceGpt device(model, cuda::testing::hostOpDevice());
  auto tokens = [&](int step) { return randomTokens(batch * seq, 23, 100 + step); };
  auto targets = [&](int step) { return randomTokens(batch * seq, 23, 200 + step); };
  testing::expectDeviceStepsMatch(
      model.parameters(),
      {[&]() -> const std::vector<cuda::DeviceTensor>& { return device.gradients(); },
       [&]() -> std::vector<cuda::DeviceTensor>& { return device.parameters(); }, device.optimizerParameters()},
      [&](int step, rt::Tape& tape) { return model.loss(tape, tokens(step), targets(step), batch, seq); },
      [&](int step) { return device.loss(tokens(step), targets(step), batch, seq, /*backward=*/true); }, 3,
      kTolerance, vanishingGradient);
  device.copyParametersTo(model);
  for (std::size_t i = 0; i < model.parameters().size(); ++i)
    EXPECT_EQ(testing::relativeError(device.parameters()[i].download(DType::F64), model.parameters()[i].var->value), 0.0)
        << model.parameters()[i].var->name;
}

INSTANTIATE_TEST_SUITE_P(Structures, DeviceGptSimulation,
                         ::testing::Values(GptCase{"dense", LayerSelection::All, false, 1.0},
                                           GptCase{"btt(rank=2)", LayerSelection::All, true, 0.7},
                                           GptCase{"monarch(blocks=4)", LayerSelection::Ffn, false, 1.0},
                                           GptCase{"btt(rank=2, norm)", LayerSelection::All, true, 1.0},
                                           GptCase{"btt(rank=2, norm)", LayerSelection::AllButLast, false, 1.0}),
                         [](const auto& info) { return std::to_string(info.index); });

// bf16 autocast against the f32 CPU model: bf16 weights and activations (2^-9 relative
// rounding per kernel, compounded over ~30 kernels) with fp32 accumulation and f32 master
// weights. Measured: loss 2e-3, gradients of the first step <= 2.7e-2 relative (QK-LayerNorm's
// peaked attention amplifies the rounding to ~12%, so it is left out here); the bounds are about
// twice that, while wrong indexing or a missing term gives O(1) errors. Later steps are compared
// by their losses only: AdamW's normalised steps turn tiny gradient differences into different
// parameters.
TEST(DeviceGptSimulationBf16, AutocastTracksTheF32CpuModel) {
  const Gpt model = makeModel(GptCase{"btt(rank=2)", LayerSelection::All, false, 0.7});
  const int64_t batch = 2, seq = 7;
  DeviceGpt device(model, cuda::testing::hostOpDevice(), cuda::Precision::BF16);
  const rt::AdamWConfig adam{1e-2, 0.9, 0.95, 1e-8, 0.1, 1.0};
  rt::AdamW cpuOptimizer(model.parameters(), adam);
  cuda::DeviceAdamW deviceOptimizer(device.optimizerParameters(), adam);
  std::vector<rt::Var> vars;
  for (const rt::ParameterInfo& p : model.parameters()) vars.push_back(p.var);
  // One fixed batch, so that the loss must fall step by step.
  const std::vector<int32_t> tokens = randomTokens(batch * seq, 23, 100);
  const std::vector<int32_t> targets = randomTokens(batch * seq, 23, 200);
  std::vector<double> cpuLosses, deviceLosses;
  for (int step = 0; step < 8; ++step) {
    rt::zeroGrad(vars);
    rt::Tape tape;
    const rt::Var loss = model.loss(tape, tokens, targets, batch, seq);
    tape.backward(loss);
    cpuLosses.push_back(loss->value.get(0));
    deviceLosses.push_back(device.loss(tokens, targets, batch, seq, /*backward=*/true));
    EXPECT_NEAR(deviceLosses.back(), cpuLosses.back(), 3e-2 * cpuLosses.back()) << "step " << step;
    if (step == 0) {
      for (std::size_t i = 0; i < vars.size(); ++i) {
        ASSERT_EQ(device.gradients()[i].precision(), cuda::Precision::BF16) << vars[i]->name;
        EXPECT_LE(testing::relativeError(device.gradients()[i].download(DType::F64), vars[i]->grad), 6e-2) << "d " << vars[i]->name;
      }
    }
    cpuOptimizer.step();
    deviceOptimizer.step(device.gradients());
  }
  for (const cuda::DeviceTensor& p : device.parameters()) EXPECT_EQ(p.precision(), cuda::Precision::F32);
  EXPECT_LT(deviceLosses.back(), 0.9 * deviceLosses.front());
  EXPECT_LT(cpuLosses.back(), 0.9 * cpuLosses.front());
}

TEST(DeviceGptSimulationErrors, BadBatchesAreRefused) {
  GptConfig config;
  config.vocab = 11;
  config.context = 4;
  config.nLayer = 1;
  config.nHead = 2;
  config.dModel = 16;
  const Gpt model(config);
  DeviceGpt device(model, cuda::testing::hostOpDevice());
  EXPECT_THROW(device.loss({1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}, 1, 5, false), UserError);  // seq > context
  EXPECT_THROW(device.loss({1, 2, 3}, {1, 2}, 1, 3, false), UserError);
  EXPECT_THROW(device.loss({1, 2, 30}, {1, 2, 3}, 1, 3, false), UserError);  // token out of range
  EXPECT_GT(device.loss({1, 2, 3}, {2, 3, 4}, 1, 3, false), 0.0);
}

}  // namespace
}  // namespace einjit::models
