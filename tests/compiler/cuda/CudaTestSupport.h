// Shared helpers of the CUDA target tests: the structures and einsums every test covers, bf16
// rounding written independently of the emitter, and relative-error checks.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "einjit/tensor.h"

namespace einjit::cuda::testing {

// Small non-square sizes, padding (monarch, theta), truncation, 2 and 3 cores/factors.
inline const std::vector<std::string> kSmallStructures = {
    "dense(in=7, out=5)",
    "lowrank(in=7, out=5, rank=2)",
    "kron(in=6, out=10)",
    "kron(in=12, out=30, factors=3)",
    "tt(in=6, out=10, rank=2)",
    "tt(in=12, out=30, rank=2, cores=3)",
    "monarch(in=10, out=20, blocks=3)",
    "monarch(in=20, out=10, blocks=3)",
    "btt(in=12, out=20, rank=2)",
    "btt(in=24, out=30, rank=3, cores=3)",
    "theta(in=18, out=15, alpha=0.5, beta=0.25, gamma=0.25, delta=0.25, epsilon=0.5, phi=0.25, "
    "rho=0.25)",
    "theta(in=15, out=18, alpha=0.5, beta=0.5, gamma=0, delta=0.5, epsilon=0.5, phi=0, rho=0.5)",
};

// `spec` with ", norm" before its closing parenthesis.
inline std::string withNorm(const std::string& spec) {
  return spec.substr(0, spec.size() - 1) + ", norm)";
}

// bfloat16 of x by round-to-nearest-even on the float bits (finite inputs).
inline float roundToBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

// max |a - b| / max(max |b|, tiny): the error relative to the reference's scale.
inline double relativeError(const Tensor& actual, const Tensor& expected) {
  double scale = 1e-30, error = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) scale = std::max(scale, std::abs(expected.get(i)));
  for (int64_t i = 0; i < expected.numel(); ++i)
    error = std::max(error, std::abs(actual.get(i) - expected.get(i)));
  return error / scale;
}

}  // namespace einjit::cuda::testing
