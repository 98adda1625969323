// Shared by the CPU target's tests and the cache's child process: random tensors, comparisons
// and the program the cache tests compile.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include "compiler/kernel/KernelProgram.h"
#include "einjit/tensor.h"
#include "frontend/structures/Structures.h"

namespace einjit::cpu::test {

inline Tensor randomTensor(DType dtype, const Shape& shape, uint64_t seed, double scale = 1.0) {
  Tensor tensor(dtype, shape);
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> uniform(-scale, scale);
  for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, uniform(engine));
  return tensor;
}

// A declared kernel shape with the row axis replaced by `rows`.
inline Shape withRows(Shape shape, int64_t rows) {
  for (int64_t& extent : shape)
    if (extent == ir::kRows) extent = rows;
  return shape;
}

inline double maxAbs(const Tensor& tensor) {
  double largest = 0;
  for (int64_t i = 0; i < tensor.numel(); ++i)
    largest = std::max(largest, std::fabs(tensor.get(i)));
  return largest;
}

// Same dtype and shape, and every element within rel * max|expected| of the expected one.
inline void expectClose(const Tensor& actual, const Tensor& expected, double rel,
                        const std::string& what) {
  ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const double tolerance = rel * std::max(maxAbs(expected), 1e-30);
  int64_t bad = 0;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    const double error = std::fabs(actual.get(i) - expected.get(i));
    if (!(error <= tolerance) && bad++ < 5)
      ADD_FAILURE() << what << ": element " << i << " is " << actual.get(i) << ", expected "
                    << expected.get(i) << " (tolerance " << tolerance << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": elements out of tolerance";
}

// The layer whose forward kernel the cache tests compile (no norm: the kernel's inputs are x
// and the parameters in program order).
inline const char* kCacheTestLayer = "btt(in=12, out=20, rank=2)";

inline KernelProgram cacheTestProgram() {
  return forwardKernel(buildLayer(kCacheTestLayer), DType::F64);
}

}  // namespace einjit::cpu::test
