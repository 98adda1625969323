#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/ops/Ops.h"
#include "runtime/ops/OpsDetail.h"

namespace einjit::rt {
namespace {

using detail::accumulate;
using detail::dispatch;
using detail::parallelChunks;
using detail::rowsPerChunk;

void checkAffine(const Var& x, const Var& param, const char* what, int64_t width) {
  if (!param) return;
  detail::checkSameDType("layerNorm", x, "x", param, what);
  if (param->value.shape() != Shape{width})
    throw UserError(std::string("layerNorm: ") + what + " has shape " +
                    shapeToString(param->value.shape()) + ", expected " + shapeToString({width}) +
                    " for x of shape " + shapeToString(x->value.shape()));
}

// Per row: mean and 1/sqrt(var + eps), accumulated in double; y = xhat * gamma + beta.
template <class T>
EINJIT_MULTIVERSION void forwardRows(const T* x, const T* gamma, const T* beta, T* y, double* mean,
                                     double* rstd, int64_t begin, int64_t end, int64_t width,
                                     double eps) {
  for (int64_t r = begin; r < end; ++r) {
    const T* row = x + r * width;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < width; ++j) sum += row[j];
    const double mu = sum / static_cast<double>(width);
    double squares = 0;
#pragma omp simd reduction(+ : squares)
    for (int64_t j = 0; j < width; ++j) {
      const double d = row[j] - mu;
      squares += d * d;
    }
    const double inv = 1.0 / std::sqrt(squares / static_cast<double>(width) + eps);
    mean[r] = mu;
    rstd[r] = inv;
    const T m = static_cast<T>(mu), s = static_cast<T>(inv);
    T* out = y + r * width;
    for (int64_t j = 0; j < width; ++j) {
      const T xhat = (row[j] - m) * s;
      out[j] = gamma ? xhat * gamma[j] : xhat;
      if (beta) out[j] += beta[j];
    }
  }
}

// dx = rstd * (dy*gamma - mean(dy*gamma) - xhat * mean(dy*gamma*xhat)) for rows [begin, end);
// adds dy*xhat into sumGamma and dy into sumBeta (either may be null). xhat and scaled are
// scratch rows.
template <class T>
EINJIT_MULTIVERSION void backwardRows(const T* x, const T* dy, const T* gamma, const double* mean,
                                      const double* rstd, T* dx, T* sumGamma, T* sumBeta, T* xhat,
                                      T* scaled, int64_t begin, int64_t end, int64_t width) {
  for (int64_t r = begin; r < end; ++r) {
    const T* row = x + r * width;
    const T* grow = dy + r * width;
    const T m = static_cast<T>(mean[r]), s = static_cast<T>(rstd[r]);
    double sumScaled = 0, sumScaledXhat = 0;
#pragma omp simd reduction(+ : sumScaled, sumScaledXhat)
    for (int64_t j = 0; j < width; ++j) {
      xhat[j] = (row[j] - m) * s;
      scaled[j] = gamma ? grow[j] * gamma[j] : grow[j];
      sumScaled += scaled[j];
      sumScaledXhat += static_cast<double>(scaled[j]) * xhat[j];
    }
    const T a = static_cast<T>(sumScaled / static_cast<double>(width));
    const T b = static_cast<T>(sumScaledXhat / static_cast<double>(width));
    T* drow = dx + r * width;
    for (int64_t j = 0; j < width; ++j) drow[j] = s * (scaled[j] - a - xhat[j] * b);
    if (sumGamma)
      for (int64_t j = 0; j < width; ++j) sumGamma[j] += grow[j] * xhat[j];
    if (sumBeta)
      for (int64_t j = 0; j < width; ++j) sumBeta[j] += grow[j];
  }
}

}  // namespace

Var layerNorm(Tape& tape, const Var& x, const Var& gamma, const Var& beta, double eps) {
  detail::checkRank2("layerNorm", x, "x");
  const int64_t rows = x->value.shape()[0], width = x->value.shape()[1];
  if (width == 0)
    throw UserError("layerNorm: x " + shapeToString(x->value.shape()) +
                    " has no features to normalise");
  if (!(eps >= 0) || !std::isfinite(eps))
    throw UserError("layerNorm: eps must be finite and >= 0, got " + std::to_string(eps));
  checkAffine(x, gamma, "gamma", width);
  checkAffine(x, beta, "beta", width);

  // Statistics kept for the backward pass (rows doubles each: small next to x).
  auto mean = std::make_shared<std::vector<double>>(static_cast<size_t>(rows));
  auto rstd = std::make_shared<std::vector<double>>(static_cast<size_t>(rows));
  Tensor value = Tensor::uninitialised(x->value.dtype(), x->value.shape());
  dispatch(value.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* g = gamma ? gamma->value.data<T>() : nullptr;
    const T* b = beta ? beta->value.data<T>() : nullptr;
    parallelChunks(rows, rowsPerChunk(width), [&](int64_t, int64_t begin, int64_t end) {
      forwardRows<T>(x->value.data<T>(), g, b, value.data<T>(), mean->data(), rstd->data(), begin,
                     end, width, eps);
    });
  });
  Var out = detail::makeResult(std::move(value), detail::needsBackward(tape, {&x, &gamma, &beta}));
  if (!out->requiresGrad) return out;
  tape.record([out, x, gamma, beta, mean, rstd, rows, width] {
    if (out->grad.numel() == 0) return;
    const bool wantGamma = gamma && gamma->requiresGrad, wantBeta = beta && beta->requiresGrad;
    const int64_t chunkRows = rowsPerChunk(width);
    const int64_t chunks = std::max<int64_t>(1, (rows + chunkRows - 1) / chunkRows);
    dispatch(x->value.dtype(), [&](auto tag) {
      using T = decltype(tag);
      Tensor dx = Tensor::uninitialised(x->value.dtype(), x->value.shape());
      // Per-chunk partial sums of dgamma and dbeta, added in chunk order below.
      std::vector<T> partialGamma(wantGamma ? chunks * width : 0, T(0));
      std::vector<T> partialBeta(wantBeta ? chunks * width : 0, T(0));
      const T* src = x->value.data<T>();
      const T* dy = out->grad.data<T>();
      const T* g = gamma ? gamma->value.data<T>() : nullptr;
      T* dst = dx.data<T>();
      parallelChunks(rows, chunkRows, [&](int64_t c, int64_t begin, int64_t end) {
        std::vector<T> xhat(static_cast<size_t>(width)), scaled(static_cast<size_t>(width));
        backwardRows<T>(src, dy, g, mean->data(), rstd->data(), dst,
                        wantGamma ? partialGamma.data() + c * width : nullptr,
                        wantBeta ? partialBeta.data() + c * width : nullptr, xhat.data(),
                        scaled.data(), begin, end, width);
      });
      auto reduce = [&](const std::vector<T>& partial) {
        Tensor total(x->value.dtype(), {width});
        T* out = total.data<T>();
        for (int64_t c = 0; c < chunks; ++c)
          for (int64_t j = 0; j < width; ++j) out[j] += partial[c * width + j];
        return total;
      };
      if (x->requiresGrad) accumulate(*x, std::move(dx));
      if (wantGamma) accumulate(*gamma, reduce(partialGamma));
      if (wantBeta) accumulate(*beta, reduce(partialBeta));
    });
  });
  return out;
}

}  // namespace einjit::rt
