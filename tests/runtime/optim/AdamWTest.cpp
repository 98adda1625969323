// AdamW against hand-computed updates (PyTorch's AdamW arithmetic written out per element), the
// learning-rate schedules at chosen steps, and a small end-to-end training run.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

#include "einjit/error.h"
#include "runtime/ops/Ops.h"
#include "runtime/ops/StructuredLinear.h"
#include "runtime/optim/AdamW.h"

namespace einjit::rt {
namespace {

Tensor vector64(const std::vector<double>& values) {
  Tensor tensor(DType::F64, {static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i) tensor.set(static_cast<int64_t>(i), values[i]);
  return tensor;
}

void setGrad(const Var& var, const std::vector<double>& values) { var->grad = vector64(values); }

// One element of AdamW by hand: returns the new p and updates m, v.
double handStep(double p, double g, double& m, double& v, int t, double lr, double wd, double beta1,
                double beta2, double eps) {
  p *= 1 - lr * wd;
  m = beta1 * m + (1 - beta1) * g;
  v = beta2 * v + (1 - beta2) * g * g;
  const double mHat = m / (1 - std::pow(beta1, t)), vHat = v / (1 - std::pow(beta2, t));
  return p - lr * mHat / (std::sqrt(vHat) + eps);
}

TEST(AdamW, TwoStepsWithMultiplierAndDecay) {
  const std::vector<double> start = {1.0, -2.0, 0.5};
  Var decayed = parameter(vector64(start), "w");
  Var plain = parameter(vector64(start), "gain");
  AdamWConfig config;
  config.lr = 0.1;
  config.weightDecay = 0.1;
  config.clipNorm = 0;  // no clipping
  AdamW optimiser({{decayed, 2.0, true}, {plain, 0.5, false}}, config);
  const std::vector<std::vector<double>> grads = {{0.5, -0.25, 0.0}, {-1.0, 0.5, 2.0}};
  std::vector<double> expectDecayed = start, expectPlain = start;
  std::vector<double> m1(3, 0), v1(3, 0), m2(3, 0), v2(3, 0);
  for (int t = 1; t <= 2; ++t) {
    setGrad(decayed, grads[t - 1]);
    setGrad(plain, grads[t - 1]);
    optimiser.step();
    for (int i = 0; i < 3; ++i) {
      expectDecayed[i] =
          handStep(expectDecayed[i], grads[t - 1][i], m1[i], v1[i], t, 0.2, 0.1, 0.9, 0.95, 1e-8);
      expectPlain[i] =
          handStep(expectPlain[i], grads[t - 1][i], m2[i], v2[i], t, 0.05, 0.0, 0.9, 0.95, 1e-8);
      EXPECT_NEAR(decayed->value.get(i), expectDecayed[i], 1e-12)
          << "step " << t << " element " << i;
      EXPECT_NEAR(plain->value.get(i), expectPlain[i], 1e-12) << "step " << t << " element " << i;
      EXPECT_NEAR(optimiser.firstMoments()[0].get(i), m1[i], 1e-15);
      EXPECT_NEAR(optimiser.secondMoments()[0].get(i), v1[i], 1e-15);
    }
  }
  EXPECT_EQ(optimiser.stepCount(), 2);
  // Step 1 of Adam moves each element by lr * sign(g) (plus decay): a check of the hand formula.
  EXPECT_NEAR(expectPlain[2],
              0.5 - 0.05 * (0.9 * 0 + 0.1 * 2.0) / (1 - 0.81) /
                        (std::sqrt(0.05 * 4.0 / (1 - 0.9025)) + 1e-8),
              1e-12);
}

TEST(AdamW, ClipsTheGlobalNorm) {
  Var a = parameter(vector64({0.0, 0.0}), "a");
  Var b = parameter(vector64({0.0}), "b");
  AdamWConfig config;
  config.lr = 1.0;
  config.clipNorm = 1.0;
  config.eps = 1.0;  // a large eps makes the first step depend on the gradient's size
  AdamW optimiser({{a, 1.0, false}, {b, 1.0, false}}, config);
  setGrad(a, {3.0, 0.0});
  setGrad(b, {4.0});
  const double norm = optimiser.step();
  EXPECT_DOUBLE_EQ(norm, 5.0);
  const double scale = 1.0 / (5.0 + 1e-6);  // torch.nn.utils.clip_grad_norm_
  auto expected = [&](double g) {
    double m = 0, v = 0;
    return handStep(0.0, g * scale, m, v, 1, 1.0, 0.0, 0.9, 0.95, 1.0);
  };
  EXPECT_NEAR(a->value.get(0), expected(3.0), 1e-12);
  EXPECT_EQ(a->value.get(1), 0.0);
  EXPECT_NEAR(b->value.get(0), expected(4.0), 1e-12);

  // Below the threshold nothing is scaled.
  Var c = parameter(vector64({0.0}), "c");
  AdamW small({{c, 1.0, false}}, config);
  setGrad(c, {0.5});
  EXPECT_DOUBLE_EQ(small.step(), 0.5);
  double m = 0, v = 0;
  EXPECT_NEAR(c->value.get(0), handStep(0.0, 0.5, m, v, 1, 1.0, 0.0, 0.9, 0.95, 1.0), 1e-12);
}

TEST(AdamW, ParametersWithoutGradientStayAndLrFactorScales) {
  Var used = parameter(vector64({1.0}), "used");
  Var unused = parameter(vector64({1.0}), "unused");
  AdamWConfig config;
  config.lr = 0.01;
  config.weightDecay = 0.5;
  AdamW optimiser({{used, 1.0, true}, {unused, 1.0, true}}, config);
  setGrad(used, {0.25});
  optimiser.step(0.5);
  double m = 0, v = 0;
  EXPECT_NEAR(used->value.get(0), handStep(1.0, 0.25, m, v, 1, 0.005, 0.5, 0.9, 0.95, 1e-8), 1e-12);
  EXPECT_EQ(unused->value.get(0), 1.0);  // no gradient: no decay either
  EXPECT_EQ(optimiser.firstMoments()[1].get(0), 0.0);
}

TEST(AdamW, FloatParametersMatchDoubleHandValues) {
  Tensor value(DType::F32, {2});
  value.set(0, 0.75);
  value.set(1, -0.5);
  Var p = parameter(value, "p");
  AdamWConfig config;
  config.lr = 0.05;
  config.weightDecay = 0.2;
  AdamW optimiser({{p, 1.0, true}}, config);
  Tensor grad(DType::F32, {2});
  grad.set(0, 0.125);
  grad.set(1, -0.375);
  p->grad = grad;
  optimiser.step();
  double m0 = 0, v0 = 0, m1 = 0, v1 = 0;
  EXPECT_NEAR(p->value.get(0), handStep(0.75, 0.125, m0, v0, 1, 0.05, 0.2, 0.9, 0.95, 1e-8), 1e-6);
  EXPECT_NEAR(p->value.get(1), handStep(-0.5, -0.375, m1, v1, 1, 0.05, 0.2, 0.9, 0.95, 1e-8), 1e-6);
}

TEST(AdamW, BadConfigurationsAndParameters) {
  Var p = parameter(vector64({1.0}), "p");
  AdamWConfig bad;
  bad.beta1 = 1.0;
  EXPECT_THROW(AdamW({{p, 1.0, false}}, bad), UserError);
  bad = AdamWConfig{};
  bad.lr = -1;
  EXPECT_THROW(AdamW({{p, 1.0, false}}, bad), UserError);
  EXPECT_THROW(AdamW({{nullptr, 1.0, false}}, AdamWConfig{}), UserError);
  EXPECT_THROW(AdamW({{constant(vector64({1.0})), 1.0, false}}, AdamWConfig{}), UserError);
  AdamW optimiser({{p, 1.0, false}}, AdamWConfig{});
  EXPECT_THROW(optimiser.step(std::nan("")), UserError);
  optimiser.firstMoments()[0] = vector64({1.0, 2.0});  // a checkpoint with the wrong shape
  setGrad(p, {1.0});
  EXPECT_THROW(optimiser.step(), UserError);
}

TEST(LrSchedule, WarmupConstantAndCosine) {
  LrSchedule constant;
  constant.warmupSteps = 10;
  EXPECT_DOUBLE_EQ(constant.factor(0), 0.1);
  EXPECT_DOUBLE_EQ(constant.factor(4), 0.5);
  EXPECT_DOUBLE_EQ(constant.factor(9), 1.0);
  EXPECT_DOUBLE_EQ(constant.factor(10), 1.0);
  EXPECT_DOUBLE_EQ(constant.factor(100000), 1.0);

  LrSchedule cosine;
  cosine.kind = LrSchedule::Kind::Cosine;
  cosine.warmupSteps = 10;
  cosine.totalSteps = 110;
  cosine.finalFraction = 0.1;
  EXPECT_DOUBLE_EQ(cosine.factor(1), 0.2);
  EXPECT_DOUBLE_EQ(cosine.factor(10), 1.0);
  EXPECT_NEAR(cosine.factor(35), 0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi / 4)), 1e-15);
  EXPECT_NEAR(cosine.factor(60), 0.55, 1e-15);
  EXPECT_NEAR(cosine.factor(110), 0.1, 1e-15);
  EXPECT_NEAR(cosine.factor(500), 0.1, 1e-15);

  LrSchedule noWarmup;
  noWarmup.kind = LrSchedule::Kind::Cosine;
  noWarmup.totalSteps = 4;
  noWarmup.finalFraction = 0;
  EXPECT_DOUBLE_EQ(noWarmup.factor(0), 1.0);
  EXPECT_NEAR(noWarmup.factor(2), 0.5, 1e-15);
  EXPECT_THROW(noWarmup.factor(-1), UserError);
  LrSchedule badWarmup;
  badWarmup.warmupSteps = -1;
  EXPECT_THROW(badWarmup.factor(0), UserError);
}

// A 2-layer MLP (dense + bias, GELU, LayerNorm, dense + bias) on a fixed regression problem.
// Returns the losses of every step.
std::vector<double> trainMlp(int steps) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(0.0, 1.0);
  const int64_t rows = 64, inputs = 4, hidden = 32;
  Tensor x(DType::F32, {rows, inputs}), y(DType::F32, {rows, 1});
  for (int64_t r = 0; r < rows; ++r) {
    double features[4];
    for (int64_t j = 0; j < inputs; ++j) x.set(r * inputs + j, features[j] = normal(rng));
    y.set(r, std::sin(features[0]) + 0.5 * features[1] * features[2] - 0.3 * features[3]);
  }
  StructuredLinear first("fc", "dense", inputs, hidden, true, 11);
  StructuredLinear second("out", "dense", hidden, 1, true, 12, DType::F32, true);
  Var gamma = parameter(Tensor(DType::F32, {hidden}), "ln.gamma");
  for (int64_t j = 0; j < hidden; ++j) gamma->value.set(j, 1.0);
  std::vector<ParameterInfo> params = first.parameters();
  params.insert(params.end(), second.parameters().begin(), second.parameters().end());
  params.push_back({gamma, 1.0, false});
  std::vector<Var> vars;
  for (const ParameterInfo& info : params) vars.push_back(info.var);
  AdamWConfig config;
  config.lr = 1e-2;
  AdamW optimiser(params, config);
  const Var input = constant(x);
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    Tape tape;
    Var h = layerNorm(tape, gelu(tape, first.forward(tape, input)), gamma, nullptr);
    Var loss = meanSquaredError(tape, second.forward(tape, h), y);
    losses.push_back(loss->value.get(0));
    zeroGrad(vars);
    tape.backward(loss);
    optimiser.step();
  }
  return losses;
}

TEST(Training, SmallMlpLearnsAndIsDeterministic) {
  const std::vector<double> losses = trainMlp(100);
  EXPECT_LT(losses.back(), losses.front() / 20)
      << "first " << losses.front() << ", last " << losses.back();
  EXPECT_EQ(trainMlp(100), losses);
}

}  // namespace
}  // namespace einjit::rt
