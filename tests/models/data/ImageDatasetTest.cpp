#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>

#include "models/data/ImageDataset.h"
#include "runtime/io/Npy.h"
#include "tests/models/data/TestFiles.h"

namespace einjit::data {
namespace {

using testing::expectUserError;
using testing::ScratchDir;

// Image i of a split has pixels base + i + p / 10 (p = 0..3), so every row is recognisable.
Tensor images(int64_t count, double base) {
  Tensor t(DType::F32, {count, 2, 2});
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t p = 0; p < 4; ++p) t.set(i * 4 + p, base + i + p / 10.0);
  }
  return t;
}

Tensor labels(const std::vector<double>& values) {
  Tensor t(DType::F64, {static_cast<int64_t>(values.size())});
  for (std::size_t i = 0; i < values.size(); ++i) t.set(i, values[i]);
  return t;
}

std::map<std::string, Tensor> tinySet() {
  return {{"train_images", images(6, 0)},
          {"train_labels", labels({0, 1, 2, 0, 1, 2})},
          {"test_images", images(2, 100)},
          {"test_labels", labels({1, 4})}};
}

// Checks that row b of `batch` is image indices[b] of a split whose images start at `base`.
void expectRows(const ImageBatch& batch, const std::vector<int>& indices, double base,
                const std::vector<int32_t>& splitLabels) {
  ASSERT_EQ(batch.images.shape(), (Shape{static_cast<int64_t>(indices.size()), 4}));
  ASSERT_EQ(batch.labels.size(), indices.size());
  for (std::size_t b = 0; b < indices.size(); ++b) {
    for (int p = 0; p < 4; ++p) {
      EXPECT_FLOAT_EQ(batch.images.get(b * 4 + p), base + indices[b] + p / 10.0) << b;
    }
    EXPECT_EQ(batch.labels[b], splitLabels[indices[b]]);
  }
}

TEST(ImageDataset, LoadsSplitsInFileOrder) {
  ScratchDir dir;
  const std::string path = dir.file("set.npz");
  writeNpz(path, tinySet());
  const ImageDataset data(path, 3);
  EXPECT_EQ(data.pixels(), 4);
  EXPECT_EQ(data.classes(), 5);
  EXPECT_EQ(data.size(Split::Train), 6);
  EXPECT_EQ(data.size(Split::Validation), 2);
  expectRows(data.whole(Split::Train), {0, 1, 2, 3, 4, 5}, 0, {0, 1, 2, 0, 1, 2});
  expectRows(data.whole(Split::Validation), {0, 1}, 100, {1, 4});
}

// Sample indices from tests/models/data/make_sampling_cases.py.
TEST(ImageDataset, BatchesAreExactSeededSamples) {
  ScratchDir dir;
  const std::string path = dir.file("set.npz");
  writeNpz(path, tinySet());
  const ImageDataset data(path, 3);
  expectRows(data.batch(Split::Train, 8, 4), {1, 1, 5, 3, 5, 5, 1, 0}, 0, {0, 1, 2, 0, 1, 2});
  expectRows(data.batch(Split::Validation, 8, 4), {1, 0, 1, 0, 0, 1, 1, 1}, 100, {1, 4});
  const ImageDataset again(path, 3);
  EXPECT_EQ(again.batch(Split::Train, 8, 5).labels, data.batch(Split::Train, 8, 5).labels);
}

TEST(ImageDataset, ReportsBadFiles) {
  ScratchDir dir;
  expectUserError([&] { ImageDataset(dir.file("absent.npz"), 1); }, {"absent.npz"});
  const auto expectBad = [&](std::map<std::string, Tensor> arrays,
                             std::initializer_list<std::string> parts) {
    const std::string path = dir.file("bad.npz");
    writeNpz(path, arrays);
    expectUserError([&] { ImageDataset(path, 1); }, parts);
  };
  auto arrays = tinySet();
  arrays.erase("test_labels");
  expectBad(arrays, {"bad.npz", "test_labels"});
  arrays = tinySet();
  arrays["train_labels"] = labels({0, 1, 2.5, 0, 1, 2});
  expectBad(arrays, {"bad.npz", "train_labels[2]", "2.5", "whole number"});
  arrays = tinySet();
  arrays["test_labels"] = labels({-1, 0});
  expectBad(arrays, {"test_labels[0]", "-1"});
  arrays = tinySet();
  arrays["train_labels"] = labels({0, 1, 2});
  expectBad(arrays, {"train_labels", "(6,)", "(3,)"});
  arrays = tinySet();
  arrays["test_images"] = Tensor(DType::F32, {2, 3, 3});
  expectBad(arrays, {"4 pixels", "9"});
  arrays = tinySet();
  arrays["train_images"] = Tensor(DType::F32, {6});
  expectBad(arrays, {"train_images", "(6,)"});
  arrays = tinySet();
  arrays["train_images"].set(5, std::numeric_limits<double>::quiet_NaN());
  expectBad(arrays, {"train_images", "NaN"});
  arrays = tinySet();
  arrays["test_images"] = Tensor(DType::F32, {0, 2, 2});
  arrays["test_labels"] = labels({});
  expectBad(arrays, {"test_images", "empty"});

  writeNpz(dir.file("ok.npz"), tinySet());
  const ImageDataset data(dir.file("ok.npz"), 1);
  expectUserError([&] { data.batch(Split::Train, 0, 0); }, {"batch size", "0"});
}

TEST(ImageDataset, LoadsTheGeneratedDigits) {
  EINJIT_REQUIRE_DATA_FILE("digits.npz");
  const ImageDataset data(testing::dataFile("digits.npz"), 1);
  EXPECT_EQ(data.pixels(), 256);
  EXPECT_EQ(data.classes(), 10);
  EXPECT_EQ(data.size(Split::Train), 6000);
  EXPECT_EQ(data.size(Split::Validation), 1000);
  const ImageBatch train = data.whole(Split::Train);
  std::vector<int> counts(10, 0);
  for (int32_t label : train.labels) ++counts[label];
  EXPECT_EQ(counts, std::vector<int>(10, 600));
  const float* pixels = train.images.data<float>();
  EXPECT_TRUE(
      std::all_of(pixels, pixels + train.images.numel(), [](float v) { return v >= 0 && v <= 1; }));
}

}  // namespace
}  // namespace einjit::data
