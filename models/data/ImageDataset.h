// A labelled image set for the MLP classifier, read from an .npz file with four arrays:
//   train_images (N, H, W) or (N, P) float32/float64     train_labels (N,) float32/float64
//   test_images  (M, H, W) or (M, P)                     test_labels  (M,)
// Labels are whole numbers in [0, classes); classes = 1 + the largest label. Images are served
// flattened to (B, pixels) float32. scripts/make_digits.py writes data/digits.npz in this form.
//
// batch(split, B, step) draws B examples uniformly with replacement, with std::mt19937_64 seeded
// from (seed, split, step) and Sampling.h's rejection mapping: the same on every platform and
// independent of earlier draws. whole(split) gives the split in file order (for evaluation).
// Split::Validation stands for the test arrays.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "einjit/tensor.h"
#include "models/data/TextDataset.h"

namespace einjit::data {

struct ImageBatch {
  Tensor images;                // (B, pixels) float32
  std::vector<int32_t> labels;  // B class indices
};

class ImageDataset {
 public:
  // Throws UserError naming the file for a missing or unreadable file, a missing array, wrong
  // ranks or mismatched sizes, a label that is not a whole number >= 0, or non-finite pixels.
  ImageDataset(const std::string& path, uint64_t seed);

  int64_t pixels() const { return pixels_; }
  int64_t classes() const { return classes_; }
  int64_t size(Split split) const;

  ImageBatch batch(Split split, int64_t batchSize, uint64_t step) const;
  ImageBatch whole(Split split) const;

 private:
  struct Part {
    std::vector<float> images;  // (n, pixels) row-major
    std::vector<int32_t> labels;
  };
  const Part& part(Split split) const { return split == Split::Train ? train_ : test_; }

  std::string path_;
  uint64_t seed_ = 0;
  int64_t pixels_ = 0, classes_ = 0;
  Part train_, test_;
};

}  // namespace einjit::data
