// The synthetic regression task of the MLP scaling experiments (structures.md section 6): a
// fixed random "teacher" MLP labels Gaussian inputs, and students learn to imitate it.
//
// Teacher: x ~ N(0, I_inputDim) -> `depth` hidden layers of width `hidden`, each
// h = sqrt(2) * relu(h W) -> y = h W_out (width 1). No biases; every weight ~ N(0, 1/fan_in).
// Its outputs are standardised with the mean and (unbiased) standard deviation of the outputs on
// `statSamples` inputs, so targets have mean ~0 and std ~1.
//
// Randomness (Sampling.h: std::mt19937_64, Box-Muller; identical on every platform up to the
// last bits of libm's log/cos): the weights, the statistics inputs, the test inputs and each
// training step's inputs come from separate streams derived from `seed`. A training batch is a
// function of (seed, step) only; the test batch is fixed. These are not the numbers PyTorch's
// torch.manual_seed(42) would give: the task is the same distribution, not the same draw.
//
// Speed: the teacher forward is matrix products (4096 x 1024 x 1024 five times per 4096-batch,
// about 25 GMAC), done with OpenBLAS sgemm in float32. OpenBLAS rather than the JIT's dense
// layer because the teacher is fixed data preparation, not a model: it needs no autograd or
// structure, and sgemm is the fastest dense product available here without compiling kernels.
#pragma once

#include <cstdint>
#include <vector>

#include "einjit/tensor.h"

namespace einjit::data {

struct TeacherConfig {
  int64_t inputDim = 8;
  int64_t hidden = 1024;
  int64_t depth = 6;
  uint64_t seed = 42;
  int64_t statSamples = 1024;
  int64_t testSize = 4096;
};

struct RegressionBatch {
  Tensor x;  // (B, inputDim) float32
  Tensor y;  // (B, 1) float32, standardised teacher outputs
};

class TeacherTask {
 public:
  // Throws UserError for a non-positive size, fewer than 2 statistics samples, or a teacher
  // whose outputs have zero variance.
  explicit TeacherTask(TeacherConfig config = {});

  const TeacherConfig& config() const { return config_; }
  double outputMean() const { return mean_; }
  double outputStd() const { return std_; }

  // A fresh batch for training step `step` (UserError for batchSize < 1 or absurdly large).
  RegressionBatch trainBatch(int64_t batchSize, uint64_t step) const;
  // The fixed test batch of config().testSize examples.
  const RegressionBatch& testBatch() const { return test_; }

  // Standardised teacher outputs (B, 1) float32 for inputs x (B, inputDim) float32 (UserError
  // for other shapes or dtypes).
  Tensor label(const Tensor& x) const;

  // The teacher's weights: depth + 1 matrices, layer l (fan_in, fan_out) row-major float32.
  const std::vector<std::vector<float>>& weights() const { return weights_; }

 private:
  // Raw (unstandardised) outputs, one per row of x.
  std::vector<float> forward(const Tensor& x) const;
  Tensor sampleInputs(int64_t count, uint64_t stream, uint64_t index) const;

  TeacherConfig config_;
  std::vector<std::vector<float>> weights_;  // layer l: (fan_in, fan_out) row-major
  double mean_ = 0, std_ = 1;
  RegressionBatch test_;
};

}  // namespace einjit::data
