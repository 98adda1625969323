// Helpers of the device-model tests: every model's device counterpart (models/DeviceGpt.h,
// models/DeviceMlp.h) is checked the same way against the CPU model on the tape.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "runtime/autograd/Tape.h"
#include "runtime/cuda/CudaOps.h"
#include "runtime/optim/AdamW.h"

namespace einjit::models::testing {

inline uint64_t nextRandom(uint64_t& state) {
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  return state >> 11;
}

// Uniform in [-amount, amount), deterministic in `state`.
inline double randomUniform(uint64_t& state, double amount) {
  return amount * (static_cast<double>(nextRandom(state) % 2001) / 1000.0 - 1.0);
}

// Moves every parameter off its init (zeroed last cores would otherwise leave most gradients
// zero).
inline void perturbParameters(const std::vector<rt::ParameterInfo>& params, uint64_t seed, double amount) {
  for (const rt::ParameterInfo& p : params)
    for (int64_t i = 0; i < p.var->value.numel(); ++i) p.var->value.set(i, p.var->value.get(i) + randomUniform(seed, amount));
}

// max |device - cpu| / max |cpu| (infinity for a shape mismatch or a non-finite value).
inline double relativeError(const Tensor& device, const Tensor& cpu) {
  if (device.shape() != cpu.shape()) return std::numeric_limits<double>::infinity();
  double scale = 1e-30, error = 0;
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    if (!std::isfinite(device.get(i))) return std::numeric_limits<double>::infinity();
    scale = std::max(scale, std::abs(cpu.get(i)));
    error = std::max(error, std::abs(device.get(i) - cpu.get(i)));
  }
  return error / scale;
}

// A device model as the checks see it.
struct DeviceModelView {
  std::function<const std::vector<cuda::DeviceTensor>&()> gradients;
  std::function<std::vector<cuda::DeviceTensor>&()> parameters;
  std::vector<cuda::DeviceAdamW::Parameter> optimizerParameters;
};

// `steps` training steps on both sides, AdamW after each: cpuLoss(step, tape) records the CPU
// model's loss, deviceLoss(step) runs the device model's forward and backward on the same batch.
// The loss, every gradient, the gradient norm and every parameter after the step agree within
// `tolerance` (relative to each tensor's largest value), except the parameters `skip` names.
inline void expectDeviceStepsMatch(const std::vector<rt::ParameterInfo>& params, const DeviceModelView& device,
                                   const std::function<rt::Var(int, rt::Tape&)>& cpuLoss,
                                   const std::function<double(int)>& deviceLoss, int steps, double tolerance,
                                   const std::function<bool(const std::string&)>& skip = {}) {
  const rt::AdamWConfig adam{1e-2, 0.9, 0.95, 1e-8, 0.1, 1.0};
  rt::AdamW cpuOptimizer(params, adam);
  cuda::DeviceAdamW deviceOptimizer(device.optimizerParameters, adam);
  std::vector<rt::Var> vars;
  for (const rt::ParameterInfo& p : params) vars.push_back(p.var);
  auto compared = [&](std::size_t i) { return !skip || !skip(vars[i]->name); };
  for (int step = 0; step < steps; ++step) {
    rt::zeroGrad(vars);
    rt::Tape tape;
    const rt::Var loss = cpuLoss(step, tape);
    tape.backward(loss);
    const double expected = loss->value.get(0);
    EXPECT_NEAR(deviceLoss(step), expected, tolerance * std::abs(expected)) << "step " << step;
    for (std::size_t i = 0; i < vars.size(); ++i) {
      ASSERT_TRUE(device.gradients()[i].defined()) << vars[i]->name;
      if (!compared(i)) continue;
      EXPECT_LE(relativeError(device.gradients()[i].download(DType::F64), vars[i]->grad), tolerance)
          << "d " << vars[i]->name << ", step " << step;
    }
    const double cpuNorm = cpuOptimizer.step();
    EXPECT_NEAR(deviceOptimizer.step(device.gradients()), cpuNorm, tolerance * cpuNorm) << "step " << step;
    for (std::size_t i = 0; i < vars.size(); ++i) {
      if (!compared(i)) continue;
      EXPECT_LE(relativeError(device.parameters()[i].download(DType::F64), vars[i]->value), tolerance)
          << vars[i]->name << " after step " << step;
    }
  }
}

}  // namespace einjit::models::testing
