#include "models/data/TeacherTask.h"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "einjit/error.h"
#include "models/data/Sampling.h"

namespace einjit::data {

namespace {

// Stream tags for deriveSeed: each kind of randomness has its own.
enum Stream : uint64_t { kWeights = 0, kStatistics = 1, kTest = 2, kTrain = 3 };

constexpr int64_t kMaxBatch = int64_t{1} << 20;
constexpr int64_t kMaxWidth = int64_t{1} << 16;

}  // namespace

TeacherTask::TeacherTask(TeacherConfig config) : config_(config) {
  const auto check = [](int64_t value, int64_t lo, int64_t hi, const char* what) {
    if (value < lo || value > hi) {
      throw UserError(
          fmt::format("teacher task: {} must be in [{}, {}], got {}", what, lo, hi, value));
    }
  };
  check(config_.inputDim, 1, kMaxWidth, "the input dimension");
  check(config_.hidden, 1, kMaxWidth, "the hidden width");
  check(config_.depth, 1, 64, "the depth");
  check(config_.statSamples, 2, kMaxBatch, "the number of statistics samples");
  check(config_.testSize, 1, kMaxBatch, "the test batch size");

  std::mt19937_64 rng(deriveSeed(config_.seed, kWeights));
  int64_t fanIn = config_.inputDim;
  for (int64_t layer = 0; layer <= config_.depth; ++layer) {
    const int64_t fanOut = layer < config_.depth ? config_.hidden : 1;
    const double scale = 1.0 / std::sqrt(static_cast<double>(fanIn));
    std::vector<float> w(static_cast<std::size_t>(fanIn * fanOut));
    for (float& v : w) v = static_cast<float>(standardNormal(rng) * scale);
    weights_.push_back(std::move(w));
    fanIn = fanOut;
  }

  const std::vector<float> raw = forward(sampleInputs(config_.statSamples, kStatistics, 0));
  double sum = 0;
  for (float v : raw) sum += v;
  mean_ = sum / static_cast<double>(raw.size());
  double squares = 0;
  for (float v : raw) squares += (v - mean_) * (v - mean_);
  std_ = std::sqrt(squares / static_cast<double>(raw.size() - 1));
  if (!(std_ > 0)) {
    throw UserError(
        fmt::format("teacher task: the teacher's outputs on {} samples do not vary "
                    "(hidden width {}, depth {}); cannot standardise them",
                    config_.statSamples, config_.hidden, config_.depth));
  }

  Tensor testX = sampleInputs(config_.testSize, kTest, 0);
  Tensor testY = label(testX);
  test_ = {std::move(testX), std::move(testY)};
}

Tensor TeacherTask::sampleInputs(int64_t count, uint64_t stream, uint64_t index) const {
  std::mt19937_64 rng(deriveSeed(deriveSeed(config_.seed, stream), index));
  Tensor x(DType::F32, {count, config_.inputDim});
  float* data = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) data[i] = static_cast<float>(standardNormal(rng));
  return x;
}

std::vector<float> TeacherTask::forward(const Tensor& x) const {
  if (x.dtype() != DType::F32 || x.rank() != 2 || x.shape()[1] != config_.inputDim) {
    throw UserError(fmt::format("teacher task: inputs must be float32 (B, {}), got {} {}",
                                config_.inputDim, dtypeName(x.dtype()), shapeToString(x.shape())));
  }
  const int64_t rows = x.shape()[0];
  std::vector<float> input(x.data<float>(), x.data<float>() + x.numel());
  std::vector<float> output;
  int64_t fanIn = config_.inputDim;
  const float gain = std::sqrt(2.0f);
  for (std::size_t layer = 0; layer < weights_.size(); ++layer) {
    const bool hiddenLayer = layer + 1 < weights_.size();
    const int64_t fanOut = hiddenLayer ? config_.hidden : 1;
    output.assign(static_cast<std::size_t>(rows * fanOut), 0.0f);
    if (rows > 0) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                  static_cast<int>(fanOut), static_cast<int>(fanIn), 1.0f, input.data(),
                  static_cast<int>(fanIn), weights_[layer].data(), static_cast<int>(fanOut), 0.0f,
                  output.data(), static_cast<int>(fanOut));
    }
    if (hiddenLayer) {
      for (float& v : output) v = gain * std::max(v, 0.0f);
    }
    input.swap(output);
    fanIn = fanOut;
  }
  return input;
}

Tensor TeacherTask::label(const Tensor& x) const {
  const std::vector<float> raw = forward(x);
  Tensor y(DType::F32, {x.shape()[0], 1});
  float* data = y.data<float>();
  for (std::size_t i = 0; i < raw.size(); ++i) {
    data[i] = static_cast<float>((raw[i] - mean_) / std_);
  }
  return y;
}

RegressionBatch TeacherTask::trainBatch(int64_t batchSize, uint64_t step) const {
  if (batchSize < 1 || batchSize > kMaxBatch) {
    throw UserError(fmt::format("teacher task: the batch size must be in [1, {}], got {}",
                                kMaxBatch, batchSize));
  }
  Tensor x = sampleInputs(batchSize, kTrain, step);
  Tensor y = label(x);
  return {std::move(x), std::move(y)};
}

}  // namespace einjit::data
