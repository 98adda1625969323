// AdamW with one group per parameter tensor (lr = base lr x the tensor's muP multiplier, weight
// decay only where the parameter says), global-norm gradient clipping, and the learning-rate
// schedules of the reference runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/ops/StructuredLinear.h"

namespace einjit::rt {

struct AdamWConfig {
  double lr = 3e-3;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weightDecay = 0.0;
  double clipNorm = 1.0;  // <= 0: no clipping
};

// Linear warmup over `warmupSteps`, then constant or cosine decay to lr * finalFraction at
// `totalSteps`. Returns the factor that multiplies the base learning rate at `step` (0-based).
struct LrSchedule {
  enum class Kind { Constant, Cosine } kind = Kind::Constant;
  int64_t warmupSteps = 0;
  int64_t totalSteps = 1;
  double finalFraction = 0.1;
  double factor(int64_t step) const;
};

class AdamW {
 public:
  AdamW(std::vector<ParameterInfo> params, AdamWConfig config);

  // Clips the global gradient norm, then updates every parameter with lr = config.lr *
  // lrFactor * multiplier. Parameters without a gradient this step are left as they are.
  // Returns the gradient norm before clipping.
  double step(double lrFactor = 1.0);

  int64_t stepCount() const { return steps_; }
  const std::vector<ParameterInfo>& parameters() const { return params_; }
  // Moments, for checkpoints: one (m, v) pair per parameter, in order.
  std::vector<Tensor>& firstMoments() { return m_; }
  std::vector<Tensor>& secondMoments() { return v_; }
  void setStepCount(int64_t steps) { steps_ = steps; }

 private:
  std::vector<ParameterInfo> params_;
  AdamWConfig config_;
  std::vector<Tensor> m_, v_;
  int64_t steps_ = 0;
};

}  // namespace einjit::rt
