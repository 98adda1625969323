#include "models/data/ImageDataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "einjit/error.h"
#include "models/data/Sampling.h"
#include "runtime/io/Npy.h"

namespace einjit::data {

namespace {

constexpr int64_t kMaxBatch = int64_t{1} << 24;
constexpr double kMaxClasses = 1 << 20;

const Tensor& member(const std::map<std::string, Tensor>& arrays, const std::string& path,
                     const std::string& name) {
  auto it = arrays.find(name);
  if (it == arrays.end()) {
    throw UserError(
        fmt::format("'{}' has no array '{}' (expected train_images, train_labels, "
                    "test_images, test_labels)",
                    path, name));
  }
  return it->second;
}

}  // namespace

ImageDataset::ImageDataset(const std::string& path, uint64_t seed) : path_(path), seed_(seed) {
  const std::map<std::string, Tensor> arrays = readNpz(path);
  int64_t maxLabel = -1;
  const auto load = [&](const std::string& prefix, Part& part) {
    const Tensor& images = member(arrays, path, prefix + "_images");
    const Tensor& labels = member(arrays, path, prefix + "_labels");
    if (images.rank() != 2 && images.rank() != 3) {
      throw UserError(fmt::format("'{}': {}_images must be (N, H, W) or (N, pixels), got {}", path,
                                  prefix, shapeToString(images.shape())));
    }
    const int64_t n = images.shape()[0];
    const int64_t pixels = n == 0 ? 0 : images.numel() / n;
    if (labels.rank() != 1 || labels.shape()[0] != n) {
      throw UserError(fmt::format("'{}': {}_labels must be ({},) to match {}_images {}, got {}",
                                  path, prefix, n, prefix, shapeToString(images.shape()),
                                  shapeToString(labels.shape())));
    }
    if (n == 0 || pixels == 0) {
      throw UserError(
          fmt::format("'{}': {}_images {} is empty", path, prefix, shapeToString(images.shape())));
    }
    if (pixels_ != 0 && pixels != pixels_) {
      throw UserError(fmt::format("'{}': train images have {} pixels but test images have {}", path,
                                  pixels_, pixels));
    }
    pixels_ = pixels;
    const Tensor asFloat = images.to(DType::F32);
    part.images.assign(asFloat.data<float>(), asFloat.data<float>() + asFloat.numel());
    if (!std::all_of(part.images.begin(), part.images.end(),
                     [](float v) { return std::isfinite(v); })) {
      throw UserError(fmt::format("'{}': {}_images has a NaN or infinite pixel", path, prefix));
    }
    part.labels.resize(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const double label = labels.get(i);
      if (!(label >= 0 && label < kMaxClasses && label == std::floor(label))) {
        throw UserError(fmt::format("'{}': {}_labels[{}] is {}, expected a whole number in [0, {})",
                                    path, prefix, i, label, kMaxClasses));
      }
      part.labels[i] = static_cast<int32_t>(label);
      maxLabel = std::max<int64_t>(maxLabel, part.labels[i]);
    }
  };
  load("train", train_);
  load("test", test_);
  classes_ = maxLabel + 1;
}

int64_t ImageDataset::size(Split split) const {
  return static_cast<int64_t>(part(split).labels.size());
}

ImageBatch ImageDataset::batch(Split split, int64_t batchSize, uint64_t step) const {
  if (batchSize < 1 || batchSize > kMaxBatch) {
    throw UserError(fmt::format("'{}': the batch size must be in [1, {}], got {}", path_, kMaxBatch,
                                batchSize));
  }
  const Part& source = part(split);
  // Streams: 2 * step for training batches, 2 * step + 1 for test batches.
  std::mt19937_64 rng(deriveSeed(seed_, 2 * step + (split == Split::Train ? 0 : 1)));
  ImageBatch out{Tensor(DType::F32, {batchSize, pixels_}), {}};
  out.labels.reserve(batchSize);
  float* images = out.images.data<float>();
  for (int64_t b = 0; b < batchSize; ++b) {
    const auto index = static_cast<int64_t>(uniformBelow(rng, source.labels.size()));
    std::copy_n(source.images.begin() + index * pixels_, pixels_, images + b * pixels_);
    out.labels.push_back(source.labels[index]);
  }
  return out;
}

ImageBatch ImageDataset::whole(Split split) const {
  const Part& source = part(split);
  const auto n = static_cast<int64_t>(source.labels.size());
  ImageBatch out{Tensor(DType::F32, {n, pixels_}), source.labels};
  std::copy(source.images.begin(), source.images.end(), out.images.data<float>());
  return out;
}

}  // namespace einjit::data
