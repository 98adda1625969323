#include "runtime/optim/AdamW.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numbers>
#include <string>
#include <utility>

#include "compiler/cpu/ThreadPool.h"
#include "einjit/error.h"

namespace einjit::rt {
namespace {

// Elements per parallel task. Chunks depend only on the tensor size, so the gradient norm
// (per-chunk partial sums added in chunk order) is the same for any number of threads.
constexpr int64_t kChunk = 1 << 15;

template <class Body>
void forChunks(int64_t count, Body&& body) {
  const int64_t chunks = (count + kChunk - 1) / kChunk;
  if (chunks <= 1) {
    if (count > 0) body(int64_t{0}, int64_t{0}, count);
    return;
  }
  const std::function<void(int64_t)> task = [&](int64_t c) {
    body(c, c * kChunk, std::min(count, (c + 1) * kChunk));
  };
  cpu::defaultThreadPool().parallelFor(chunks, task);
}

bool hasGradient(const VarData& var) {
  return var.grad.dtype() == var.value.dtype() && var.grad.shape() == var.value.shape() &&
         var.grad.nbytes() == var.value.nbytes();
}

template <class T>
double squaredNorm(const Tensor& tensor) {
  const T* data = tensor.data<T>();
  const int64_t count = tensor.numel();
  std::vector<double> partial(static_cast<size_t>((count + kChunk - 1) / kChunk), 0.0);
  forChunks(count, [&](int64_t c, int64_t begin, int64_t end) {
    double sum = 0;
    for (int64_t i = begin; i < end; ++i) sum += static_cast<double>(data[i]) * data[i];
    partial[c] = sum;
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

struct UpdateScalars {
  double decayFactor, beta1, beta2, gradScale, stepSize, biasCorrection2Sqrt, eps;
};

// One AdamW update of p, m, v from g (PyTorch's torch.optim.AdamW arithmetic):
// p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
template <class T>
void update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const UpdateScalars& u) {
  T* p = param.data<T>();
  const T* g = grad.data<T>();
  T* mData = m.data<T>();
  T* vData = v.data<T>();
  const T decay = static_cast<T>(u.decayFactor), b1 = static_cast<T>(u.beta1),
          b2 = static_cast<T>(u.beta2), scale = static_cast<T>(u.gradScale),
          stepSize = static_cast<T>(u.stepSize), bc2 = static_cast<T>(u.biasCorrection2Sqrt),
          eps = static_cast<T>(u.eps);
  forChunks(param.numel(), [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T gi = g[i] * scale;
      mData[i] = b1 * mData[i] + (T(1) - b1) * gi;
      vData[i] = b2 * vData[i] + (T(1) - b2) * gi * gi;
      p[i] = p[i] * decay - stepSize * mData[i] / (std::sqrt(vData[i]) / bc2 + eps);
    }
  });
}

}  // namespace

double LrSchedule::factor(int64_t step) const {
  if (step < 0) throw UserError("LrSchedule: step must be >= 0, got " + std::to_string(step));
  if (warmupSteps < 0)
    throw UserError("LrSchedule: warmupSteps must be >= 0, got " + std::to_string(warmupSteps));
  if (step < warmupSteps) return static_cast<double>(step + 1) / static_cast<double>(warmupSteps);
  if (kind == Kind::Constant) return 1.0;
  if (totalSteps < 1)
    throw UserError("LrSchedule: totalSteps must be >= 1, got " + std::to_string(totalSteps));
  if (!(finalFraction >= 0) || !std::isfinite(finalFraction))
    throw UserError("LrSchedule: finalFraction must be finite and >= 0, got " +
                    std::to_string(finalFraction));
  // Cosine from 1 at the end of warmup to finalFraction at totalSteps, then flat.
  const int64_t decaySteps = totalSteps - warmupSteps;
  const double progress = decaySteps <= 0 ? 1.0
                                          : std::min(1.0, static_cast<double>(step - warmupSteps) /
                                                              static_cast<double>(decaySteps));
  return finalFraction +
         (1.0 - finalFraction) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

AdamW::AdamW(std::vector<ParameterInfo> params, AdamWConfig config)
    : params_(std::move(params)), config_(config) {
  auto finiteAtLeast = [](double value, double low) {
    return std::isfinite(value) && value >= low;
  };
  if (!finiteAtLeast(config_.lr, 0) || !finiteAtLeast(config_.weightDecay, 0) ||
      !finiteAtLeast(config_.eps, 0) || !std::isfinite(config_.clipNorm))
    throw UserError("AdamW: lr, weightDecay and eps must be finite and >= 0 and clipNorm finite");
  if (!(config_.beta1 >= 0 && config_.beta1 < 1) || !(config_.beta2 >= 0 && config_.beta2 < 1))
    throw UserError("AdamW: beta1 and beta2 must lie in [0, 1), got " +
                    std::to_string(config_.beta1) + " and " + std::to_string(config_.beta2));
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParameterInfo& info = params_[i];
    if (!info.var) throw UserError("AdamW: parameter " + std::to_string(i) + " is null");
    if (!info.var->requiresGrad)
      throw UserError("AdamW: '" + info.var->name + "' (parameter " + std::to_string(i) +
                      ") does not require a gradient");
    if (!std::isfinite(info.lrMultiplier) || info.lrMultiplier < 0)
      throw UserError("AdamW: '" + info.var->name + "' has an invalid lr multiplier " +
                      std::to_string(info.lrMultiplier));
    m_.emplace_back(info.var->value.dtype(), info.var->value.shape());
    v_.emplace_back(info.var->value.dtype(), info.var->value.shape());
  }
}

double AdamW::step(double lrFactor) {
  if (!std::isfinite(lrFactor) || lrFactor < 0)
    throw UserError("AdamW: lrFactor must be finite and >= 0, got " + std::to_string(lrFactor));
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& value = params_[i].var->value;
    if (m_[i].shape() != value.shape() || m_[i].dtype() != value.dtype() ||
        v_[i].shape() != value.shape() || v_[i].dtype() != value.dtype())
      throw UserError("AdamW: the moments of '" + params_[i].var->name + "' are " +
                      shapeToString(m_[i].shape()) + " and " + shapeToString(v_[i].shape()) +
                      ", expected " + dtypeName(value.dtype()) + " " +
                      shapeToString(value.shape()));
  }

  double squares = 0;
  for (const ParameterInfo& info : params_)
    if (hasGradient(*info.var))
      squares += info.var->grad.dtype() == DType::F32 ? squaredNorm<float>(info.var->grad)
                                                      : squaredNorm<double>(info.var->grad);
  const double norm = std::sqrt(squares);
  // As torch.nn.utils.clip_grad_norm_: scale by clipNorm / (norm + 1e-6) when that is below 1.
  double gradScale = 1.0;
  if (config_.clipNorm > 0) gradScale = std::min(1.0, config_.clipNorm / (norm + 1e-6));

  ++steps_;
  const double t = static_cast<double>(steps_);
  const double biasCorrection1 = 1.0 - std::pow(config_.beta1, t);
  const double biasCorrection2 = 1.0 - std::pow(config_.beta2, t);
  for (size_t i = 0; i < params_.size(); ++i) {
    VarData& var = *params_[i].var;
    if (!hasGradient(var)) continue;
    const double lr = config_.lr * lrFactor * params_[i].lrMultiplier;
    const double decay = params_[i].weightDecay ? config_.weightDecay : 0.0;
    const UpdateScalars scalars{1.0 - lr * decay, config_.beta1,        config_.beta2,
                                gradScale,        lr / biasCorrection1, std::sqrt(biasCorrection2),
                                config_.eps};
    if (var.value.dtype() == DType::F32)
      update<float>(var.value, var.grad, m_[i], v_[i], scalars);
    else
      update<double>(var.value, var.grad, m_[i], v_[i], scalars);
  }
  return norm;
}

}  // namespace einjit::rt
