#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "models/data/Sampling.h"
#include "models/data/TeacherTask.h"
#include "tests/models/data/TestFiles.h"

namespace einjit::data {
namespace {

using testing::expectUserError;

TeacherConfig small() {
  TeacherConfig config;
  config.hidden = 32;
  config.depth = 3;
  config.statSamples = 256;
  config.testSize = 64;
  return config;
}

// The raw teacher output for one input, by plain loops in double.
double naiveTeacher(const TeacherTask& task, const float* x) {
  const auto& w = task.weights();
  std::vector<double> h(x, x + task.config().inputDim);
  for (std::size_t layer = 0; layer < w.size(); ++layer) {
    const std::size_t fanIn = h.size(), fanOut = w[layer].size() / fanIn;
    std::vector<double> next(fanOut, 0.0);
    for (std::size_t i = 0; i < fanIn; ++i) {
      for (std::size_t j = 0; j < fanOut; ++j) next[j] += h[i] * w[layer][i * fanOut + j];
    }
    if (layer + 1 < w.size()) {
      for (double& v : next) v = std::sqrt(2.0) * std::max(v, 0.0);
    }
    h = next;
  }
  return h[0];
}

TEST(TeacherTask, WeightsHaveTheDocumentedShapesAndScale) {
  TeacherConfig config = small();
  config.hidden = 256;
  config.depth = 2;
  const TeacherTask task(config);
  const auto& w = task.weights();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].size(), 8u * 256u);
  EXPECT_EQ(w[1].size(), 256u * 256u);
  EXPECT_EQ(w[2].size(), 256u);
  // Variance 1/fan_in; relative standard error sqrt(2/n): 0.5% for w[1], 3% for w[0].
  const auto variance = [](const std::vector<float>& v) {
    double s = 0;
    for (float x : v) s += double(x) * x;
    return s / v.size();
  };
  EXPECT_NEAR(variance(w[0]) * 8, 1.0, 0.12);
  EXPECT_NEAR(variance(w[1]) * 256, 1.0, 0.03);
}

TEST(TeacherTask, LabelsAreTheStandardisedTeacherOutputs) {
  const TeacherTask task(small());
  // The statistics: the documented stream (seed, 1), index 0, of statSamples x 8 normals.
  std::mt19937_64 rng(deriveSeed(deriveSeed(42, 1), 0));
  std::vector<float> inputs(256 * 8);
  for (float& v : inputs) v = static_cast<float>(standardNormal(rng));
  double sum = 0, squares = 0;
  std::vector<double> raw;
  for (int i = 0; i < 256; ++i) raw.push_back(naiveTeacher(task, &inputs[i * 8]));
  for (double r : raw) sum += r;
  const double mean = sum / 256;
  for (double r : raw) squares += (r - mean) * (r - mean);
  const double stddev = std::sqrt(squares / 255);
  EXPECT_NEAR(task.outputMean(), mean, 1e-4 * stddev);
  EXPECT_NEAR(task.outputStd(), stddev, 1e-4 * stddev);

  const RegressionBatch batch = task.trainBatch(16, 3);
  ASSERT_EQ(batch.x.shape(), (Shape{16, 8}));
  ASSERT_EQ(batch.y.shape(), (Shape{16, 1}));
  for (int i = 0; i < 16; ++i) {
    const double expected = (naiveTeacher(task, batch.x.data<float>() + i * 8) - mean) / stddev;
    EXPECT_NEAR(batch.y.data<float>()[i], expected, 1e-4 * (1 + std::abs(expected)));
  }
}

TEST(TeacherTask, IsDeterministicAndFreshPerStep) {
  const TeacherTask a(small()), b(small());
  EXPECT_EQ(a.outputMean(), b.outputMean());
  const RegressionBatch a3 = a.trainBatch(32, 3), b3 = b.trainBatch(32, 3);
  a.trainBatch(32, 9);
  EXPECT_TRUE(std::equal(a3.x.data<float>(), a3.x.data<float>() + 256, b3.x.data<float>()));
  EXPECT_TRUE(std::equal(a3.y.data<float>(), a3.y.data<float>() + 32, b3.y.data<float>()));
  const RegressionBatch a4 = a.trainBatch(32, 4);
  EXPECT_FALSE(std::equal(a3.x.data<float>(), a3.x.data<float>() + 256, a4.x.data<float>()));
  const RegressionBatch& test = a.testBatch();
  ASSERT_EQ(test.x.shape(), (Shape{64, 8}));
  EXPECT_TRUE(
      std::equal(test.y.data<float>(), test.y.data<float>() + 64, b.testBatch().y.data<float>()));
  EXPECT_FALSE(std::equal(a3.x.data<float>(), a3.x.data<float>() + 256, test.x.data<float>()));
  TeacherConfig otherSeed = small();
  otherSeed.seed = 43;
  EXPECT_NE(TeacherTask(otherSeed).outputMean(), a.outputMean());
}

// The reference configuration: width 1024, depth 6, statistics from 1024 samples.
TEST(TeacherTask, FreshBatchesAreStandardised) {
  const TeacherTask task;
  EXPECT_EQ(task.testBatch().x.shape(), (Shape{4096, 8}));
  const RegressionBatch batch = task.trainBatch(4096, 1);
  double sum = 0, squares = 0;
  for (int i = 0; i < 4096; ++i) sum += batch.y.data<float>()[i];
  const double mean = sum / 4096;
  for (int i = 0; i < 4096; ++i) squares += std::pow(batch.y.data<float>()[i] - mean, 2);
  // Sampling error of the 1024-sample statistics plus that of this batch: a few percent.
  EXPECT_NEAR(mean, 0.0, 0.1);
  EXPECT_NEAR(std::sqrt(squares / 4095), 1.0, 0.1);
}

TEST(TeacherTask, RejectsBadSizes) {
  TeacherConfig config = small();
  config.hidden = 0;
  expectUserError([&] { TeacherTask{config}; }, {"hidden width", "0"});
  config = small();
  config.statSamples = 1;
  expectUserError([&] { TeacherTask{config}; }, {"statistics samples"});
  const TeacherTask task(small());
  expectUserError([&] { task.trainBatch(0, 0); }, {"batch size", "0"});
  expectUserError([&] { task.label(Tensor(DType::F32, {4, 7})); }, {"(B, 8)", "(4, 7)"});
  expectUserError([&] { task.label(Tensor(DType::F64, {4, 8})); }, {"float64"});
}

}  // namespace
}  // namespace einjit::data
