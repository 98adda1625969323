#include "tests/runtime/cuda/OpChecks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "compiler/kernel/KernelProgram.h"
#include "frontend/structures/Structures.h"
#include "runtime/cuda/CudaOps.h"
#include "runtime/cuda/DeviceLinear.h"
#include "runtime/reference/ReferenceKernel.h"
#include "runtime/reference/ReferenceKernelProgram.h"
#include "runtime/reference/ReferenceOps.h"
#include "runtime/reference/WeightNorm.h"
#include "runtime/ops/Ops.h"
#include "runtime/optim/AdamW.h"

namespace einjit::cuda::testing {
namespace {

// bfloat16 of x by round-to-nearest-even on the float bits (finite inputs), written
// independently of the kernels.
double roundToStorage(double value, Precision precision) {
  float f = static_cast<float>(value);
  if (precision == Precision::BF16) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    std::memcpy(&f, &u, 4);
  }
  return f;
}

// Uniform in [-range, range), rounded to `precision`; float64.
Tensor randomTensor(const Shape& shape, uint64_t seed, Precision precision, double range = 1.0) {
  Tensor tensor(DType::F64, shape);
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < tensor.numel(); ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const double unit = static_cast<double>(state >> 11) / 9007199254740992.0;
    tensor.set(i, roundToStorage((unit * 2 - 1) * range, precision));
  }
  return tensor;
}

std::vector<int32_t> randomIds(int64_t count, int64_t classes, uint64_t seed) {
  std::vector<int32_t> ids(static_cast<std::size_t>(count));
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 7;
  for (auto& id : ids) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(classes));
  }
  return ids;
}

// max |actual - expected| / max |expected|; infinity when a shape differs or a value is not
// finite (a NaN would otherwise compare as no error).
double relativeError(const Tensor& actual, const Tensor& expected, double scaleFloor = 1e-30) {
  if (actual.shape() != expected.shape()) return std::numeric_limits<double>::infinity();
  double scale = scaleFloor, error = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    if (!std::isfinite(actual.get(i))) return std::numeric_limits<double>::infinity();
    scale = std::max(scale, std::abs(expected.get(i)));
    error = std::max(error, std::abs(actual.get(i) - expected.get(i)));
  }
  return error / scale;
}

// `scaleFloor`: the least scale errors are measured against, for results that may vanish.
void expectClose(const DeviceTensor& actual, const Tensor& expected, Precision precision, const std::string& what,
                 double scaleFloor = 1e-30) {
  EXPECT_LE(relativeError(actual.download(DType::F64), expected, scaleFloor), toleranceFor(precision))
      << what << " (" << precisionName(precision) << ")";
}

rt::Var leaf(const Tensor& value) { return rt::parameter(value, "x"); }

}  // namespace

double toleranceFor(Precision precision) { return precision == Precision::BF16 ? 1e-2 : 1e-5; }

std::string AttentionCase::name() const {
  std::string text = "b";
  for (const auto& [value, next] : {std::pair{batch, "_t"}, std::pair{seq, "_h"}, std::pair{heads, "_d"}})
    text.append(std::to_string(value)).append(next);
  return text.append(std::to_string(headDim));
}

void checkEmbedding(OpDevice& device, Precision precision, int64_t vocab, int64_t width, int64_t count) {
  const Tensor table = randomTensor({vocab, width}, 1, precision);
  const Tensor dout = randomTensor({count, width}, 2, precision);
  const std::vector<int32_t> ids = randomIds(count, vocab, 3);
  rt::Tape tape;
  const rt::Var cpuTable = leaf(table);
  const rt::Var out = rt::embedding(tape, ids, cpuTable);
  tape.backward(out, dout);

  const DeviceIds deviceIds(device, ids, vocab, "embedding");
  const DeviceTensor deviceTable = DeviceTensor::upload(device, table, precision);
  expectClose(embedding(deviceIds, deviceTable), out->value, precision, "embedding");
  expectClose(embeddingBackward(deviceIds, DeviceTensor::upload(device, dout, precision)), cpuTable->grad, precision,
              "embedding d(table)");
}

void checkResidualOps(OpDevice& device, Precision precision, int64_t rows, int64_t width) {
  const Tensor a = randomTensor({rows, width}, 4, precision), b = randomTensor({rows, width}, 5, precision);
  const Tensor bias = randomTensor({width}, 6, precision), dy = randomTensor({rows, width}, 7, precision);
  rt::Tape tape;
  const rt::Var x = leaf(a), y = leaf(b), cpuBias = leaf(bias);
  const rt::Var sum = rt::add(tape, x, y);
  const rt::Var scaled = rt::scale(tape, x, -0.75);
  const rt::Var biased = rt::addBias(tape, y, cpuBias);
  tape.backward(biased, dy);

  const DeviceTensor da = DeviceTensor::upload(device, a, precision), db = DeviceTensor::upload(device, b, precision);
  expectClose(add(da, db), sum->value, precision, "add");
  expectClose(scale(da, -0.75), scaled->value, precision, "scale");
  expectClose(addBias(db, DeviceTensor::upload(device, bias, precision)), biased->value, precision, "addBias");
  expectClose(columnSums(DeviceTensor::upload(device, dy, precision)), cpuBias->grad, precision, "d(bias)");
  DeviceTensor accumulated = DeviceTensor::upload(device, a, precision);
  addInto(accumulated, db);
  expectClose(accumulated, sum->value, precision, "addInto");
}

void checkLayerNorm(OpDevice& device, Precision precision, int64_t rows, int64_t width, bool affine) {
  const Tensor x = randomTensor({rows, width}, 8, precision, 3.0), dy = randomTensor({rows, width}, 9, precision);
  const Tensor gamma = randomTensor({width}, 10, precision), beta = randomTensor({width}, 11, precision);
  rt::Tape tape;
  const rt::Var cpuX = leaf(x);
  const rt::Var cpuGamma = affine ? leaf(gamma) : nullptr, cpuBeta = affine ? leaf(beta) : nullptr;
  const rt::Var y = rt::layerNorm(tape, cpuX, cpuGamma, cpuBeta, 1e-5);
  tape.backward(y, dy);

  const DeviceTensor dx = DeviceTensor::upload(device, x, precision);
  const DeviceTensor dgamma = DeviceTensor::upload(device, gamma, precision);
  const DeviceTensor dbeta = DeviceTensor::upload(device, beta, precision);
  const LayerNormForward forward = layerNorm(dx, affine ? &dgamma : nullptr, affine ? &dbeta : nullptr, 1e-5);
  expectClose(forward.y, y->value, precision, "layerNorm y");
  const LayerNormGradients grads = layerNormBackward(dx, affine ? &dgamma : nullptr, forward,
                                                     DeviceTensor::upload(device, dy, precision), affine);
  expectClose(grads.dx, cpuX->grad, precision, "layerNorm dx");
  if (affine) {
    expectClose(grads.dgamma, cpuGamma->grad, precision, "layerNorm dgamma");
    expectClose(grads.dbeta, cpuBeta->grad, precision, "layerNorm dbeta");
  }
}

void checkActivations(OpDevice& device, Precision precision, int64_t rows, int64_t width) {
  const Tensor x = randomTensor({rows, width}, 12, precision, 4.0), dy = randomTensor({rows, width}, 13, precision);
  const double gain = std::sqrt(2.0);
  rt::Tape geluTape, reluTape;
  const rt::Var geluIn = leaf(x), reluIn = leaf(x);
  const rt::Var geluOut = rt::gelu(geluTape, geluIn);
  geluTape.backward(geluOut, dy);
  const rt::Var reluOut = rt::relu(reluTape, reluIn, gain);
  reluTape.backward(reluOut, dy);

  const DeviceTensor dx = DeviceTensor::upload(device, x, precision), ddy = DeviceTensor::upload(device, dy, precision);
  expectClose(gelu(dx), geluOut->value, precision, "gelu");
  expectClose(geluBackward(dx, ddy), geluIn->grad, precision, "gelu dx");
  expectClose(relu(dx, gain), reluOut->value, precision, "relu");
  expectClose(reluBackward(dx, ddy, gain), reluIn->grad, precision, "relu dx");
}

void checkCrossEntropy(OpDevice& device, Precision precision, int64_t rows, int64_t vocab, double lossGradient) {
  const Tensor logits = randomTensor({rows, vocab}, 14, precision, 5.0);
  const std::vector<int32_t> targets = randomIds(rows, vocab, 15);
  rt::Tape tape;
  const rt::Var cpuLogits = leaf(logits);
  const rt::Var loss = rt::crossEntropy(tape, cpuLogits, targets);
  Tensor seed(DType::F64, {});
  seed.set(0, lossGradient);
  tape.backward(loss, seed);

  const DeviceIds deviceTargets(device, targets, vocab, "crossEntropy");
  const DeviceTensor deviceLogits = DeviceTensor::upload(device, logits, precision);
  const CrossEntropyForward forward = crossEntropy(deviceLogits, deviceTargets);
  // The loss is f32 whatever the storage: fp32 math only.
  EXPECT_LE(relativeError(forward.loss.download(DType::F64), loss->value), 1e-5) << "cross-entropy loss";
  expectClose(crossEntropyBackward(deviceLogits, deviceTargets, forward, lossGradient), cpuLogits->grad, precision,
              "cross-entropy d(logits)");
}

void checkAttention(OpDevice& device, Precision precision, const AttentionCase& c) {
  const int64_t rows = c.batch * c.seq, width = c.heads * c.headDim;
  const Tensor q = randomTensor({rows, width}, 16, precision, 2.0), k = randomTensor({rows, width}, 17, precision, 2.0);
  const Tensor v = randomTensor({rows, width}, 18, precision), dout = randomTensor({rows, width}, 19, precision);
  rt::Tape tape;
  const rt::Var cq = leaf(q), ck = leaf(k), cv = leaf(v);
  const rt::Var out = rt::causalSelfAttention(tape, cq, ck, cv, c.batch, c.seq, c.heads, c.logitScale);
  tape.backward(out, dout);

  const AttentionShape shape{c.batch, c.seq, c.heads, c.logitScale};
  const DeviceTensor dq = DeviceTensor::upload(device, q, precision), dk = DeviceTensor::upload(device, k, precision);
  const DeviceTensor dv = DeviceTensor::upload(device, v, precision);
  const AttentionForward forward = causalSelfAttention(dq, dk, dv, shape);
  expectClose(forward.out, out->value, precision, "attention out " + c.name());
  const AttentionGradients grads =
      causalSelfAttentionBackward(dq, dk, dv, forward, DeviceTensor::upload(device, dout, precision), shape);
  // With one key (seq 1) dq and dk vanish (the softmax is constant): the kernels return the
  // rounding noise of dout . v - dout . out, measured against a scale of 1e-2.
  expectClose(grads.dq, cq->grad, precision, "attention dq " + c.name(), 1e-2);
  expectClose(grads.dk, ck->grad, precision, "attention dk " + c.name(), 1e-2);
  expectClose(grads.dv, cv->grad, precision, "attention dv " + c.name());
}

void checkConversion(OpDevice& device, int64_t count) {
  // Values between bf16 neighbours, ties included (x.5 ulp: round to even), and a NaN.
  Tensor x(DType::F64, {count});
  for (int64_t i = 0; i < count; ++i) x.set(i, (1.0 + static_cast<double>(i) / 1024.0) * (i % 2 ? -1 : 1));
  x.set(count - 1, std::numeric_limits<double>::quiet_NaN());
  Tensor expected(DType::F64, {count});
  for (int64_t i = 0; i < count; ++i) expected.set(i, roundToStorage(x.get(i), Precision::BF16));
  const DeviceTensor bf16 = convert(DeviceTensor::upload(device, x, Precision::F32), Precision::BF16);
  const Tensor back = convert(bf16, Precision::F32).download(DType::F64);
  for (int64_t i = 0; i + 1 < count; ++i) EXPECT_EQ(back.get(i), expected.get(i)) << "element " << i;
  EXPECT_TRUE(std::isnan(back.get(count - 1))) << "NaN must stay NaN in bf16";
}

void checkAdamW(OpDevice& device, Precision gradPrecision, double clipNorm, int steps) {
  const std::vector<Shape> shapes = {{5, 7}, {7}, {2 * 16384 + 100}};
  const std::vector<double> multipliers = {1.0, 0.5, 2.0};
  const std::vector<bool> decay = {true, false, true};
  rt::AdamWConfig config;
  config.lr = 1e-2;
  config.weightDecay = 0.1;
  config.clipNorm = clipNorm;
  std::vector<rt::ParameterInfo> cpuParams;
  std::vector<DeviceAdamW::Parameter> deviceParams;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const Tensor value = randomTensor(shapes[i], 20 + i, Precision::F32);
    cpuParams.push_back({rt::parameter(value, std::string("p").append(std::to_string(i))), multipliers[i], decay[i]});
    deviceParams.push_back({DeviceTensor::upload(device, value, Precision::F32), multipliers[i], decay[i]});
  }
  rt::AdamW cpu(cpuParams, config);
  DeviceAdamW gpu(deviceParams, config);
  for (int step = 0; step < steps; ++step) {
    std::vector<DeviceTensor> grads;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      // Large enough that clipping (clipNorm 1) takes effect.
      const Tensor grad = randomTensor(shapes[i], 100 * step + i, gradPrecision, 0.05);
      cpuParams[i].var->grad = grad;
      grads.push_back(DeviceTensor::upload(device, grad, gradPrecision));
    }
    const double lrFactor = 0.7;
    const double cpuNorm = cpu.step(lrFactor);
    const double gpuNorm = gpu.step(grads, lrFactor);
    EXPECT_NEAR(gpuNorm, cpuNorm, 1e-5 * cpuNorm) << "gradient norm, step " << step;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const std::string what = std::string("parameter ").append(std::to_string(i)).append(" after step ").append(std::to_string(step));
      EXPECT_LE(relativeError(gpu.parameters()[i].value.download(DType::F64), cpuParams[i].var->value), 1e-5) << what;
      EXPECT_LE(relativeError(gpu.firstMoments()[i].download(DType::F64), cpu.firstMoments()[i]), 1e-5) << what;
      EXPECT_LE(relativeError(gpu.secondMoments()[i].download(DType::F64), cpu.secondMoments()[i]), 1e-5) << what;
    }
  }
}

void checkDeviceLinear(OpDevice& device, Precision precision, const std::string& spec, int64_t dIn, int64_t dOut,
                       int64_t rows) {
  const ir::LayerProgram layer = buildLayer(parseStructureSpec(spec), dIn, dOut);
  const std::string what = spec + " " + std::to_string(dIn) + "->" + std::to_string(dOut) + ", " +
                           std::to_string(rows) + " rows";
  // The kernels' weights, rounded to the storage precision so both sides see the same numbers.
  std::vector<Tensor> weights = kernelParameterTensors(layer, initLayerParams(layer, 11, DType::F64), DType::F64);
  for (Tensor& weight : weights)
    for (int64_t i = 0; i < weight.numel(); ++i) weight.set(i, roundToStorage(weight.get(i), precision));
  const Tensor x = randomTensor({rows, dIn}, 12, precision), dy = randomTensor({rows, dOut}, 13, precision);

  std::vector<const Tensor*> inputs = {&x};
  for (const Tensor& weight : weights) inputs.push_back(&weight);
  const Tensor y = referenceRunKernel(forwardKernel(layer, DType::F64), rows, inputs).front();
  inputs.push_back(&dy);
  const std::vector<Tensor> gradients = referenceRunKernel(backwardKernel(layer, DType::F64), rows, inputs);

  const DeviceLinear linear(device, layer, precision);
  std::vector<DeviceTensor> deviceWeights;
  for (const Tensor& weight : weights) deviceWeights.push_back(DeviceTensor::upload(device, weight, precision));
  const DeviceTensor deviceX = DeviceTensor::upload(device, x, precision);
  expectClose(linear.forward(deviceWeights, deviceX), y, precision, what + ": y");
  const DeviceLinear::Gradients deviceGradients =
      linear.backward(deviceWeights, deviceX, DeviceTensor::upload(device, dy, precision));
  expectClose(deviceGradients.dx, gradients[0], precision, what + ": dx");
  ASSERT_EQ(deviceGradients.dweights.size() + 1, gradients.size()) << what;
  for (std::size_t k = 0; k < deviceGradients.dweights.size(); ++k)
    expectClose(deviceGradients.dweights[k], gradients[k + 1], precision, what + ": d(weight " + std::to_string(k) + ")");
}

void checkMeanSquaredError(OpDevice& device, Precision precision, int64_t rows, int64_t width, double lossGradient) {
  const Tensor pred = randomTensor({rows, width}, 31, precision), target = randomTensor({rows, width}, 32, precision);
  rt::Tape tape;
  const rt::Var cpuPred = leaf(pred);
  const rt::Var loss = rt::meanSquaredError(tape, cpuPred, target);
  Tensor seed(DType::F64, {});
  seed.set(0, lossGradient);
  tape.backward(loss, seed);
  const DeviceTensor devicePred = DeviceTensor::upload(device, pred, precision);
  const DeviceTensor deviceTarget = DeviceTensor::upload(device, target, precision);
  // The loss is f32 in every storage precision.
  expectClose(meanSquaredError(devicePred, deviceTarget), loss->value, Precision::F32, "mse");
  expectClose(meanSquaredErrorBackward(devicePred, deviceTarget, lossGradient), cpuPred->grad, precision,
              "mse d(pred)");
}

void checkWeightNorm(OpDevice& device, Precision precision, int64_t n, bool withGamma, bool clamped) {
  const std::string what = "weight norm of " + std::to_string(n) + (withGamma ? " with" : " without") + " gamma, " +
                           (clamped ? "clamped" : "not clamped");
  ir::Op op;
  op.kind = ir::OpKind::WeightNorm;
  op.normEps = 1e-8;
  // w in [-1, 1): RMS ~ 0.58; sigma below it activates the clamp.
  op.normSigma = clamped ? 0.1 : 5.0;
  const Tensor w = randomTensor({n}, 21, Precision::F32);
  Tensor gamma(DType::F64, {});
  gamma.set(0, 1.3);
  const Tensor dNormalised = randomTensor({n}, 22, precision);
  const reference::Array gammaArray = reference::toArray(gamma);
  const reference::Array* gain = withGamma ? &gammaArray : nullptr;
  const Tensor expected = reference::toTensor(reference::weightNormForward(op, reference::toArray(w), gain), DType::F64);
  const reference::WeightNormGradient gradient =
      reference::weightNormBackward(op, reference::toArray(w), gain, reference::toArray(dNormalised));

  const DeviceTensor deviceW = DeviceTensor::upload(device, w, Precision::F32);
  const DeviceTensor deviceGamma = DeviceTensor::upload(device, gamma, Precision::F32);
  const DeviceTensor* deviceGain = withGamma ? &deviceGamma : nullptr;
  expectClose(weightNorm(deviceW, deviceGain, op.normSigma, op.normEps, precision), expected, precision, what + ": w~");
  const WeightNormGradients g = weightNormBackward(deviceW, deviceGain, op.normSigma, op.normEps,
                                                   DeviceTensor::upload(device, dNormalised, precision));
  expectClose(g.dw, reference::toTensor(gradient.dw, DType::F64), precision, what + ": dw");
  if (withGamma) {
    Tensor dgamma(DType::F64, {});
    dgamma.set(0, gradient.dgamma);
    expectClose(g.dgamma, dgamma, precision, what + ": dgamma");
  } else {
    EXPECT_FALSE(g.dgamma.defined()) << what;
  }
}

}  // namespace einjit::cuda::testing
