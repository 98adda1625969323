// A deterministic test pattern that is exact in float32 and float64, computed the same way
// in C++ (patterned, expectPatterned) and in Python (kPythonPattern's values()).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "einjit/tensor.h"

namespace einjit::testing {

inline double patternValue(int64_t i) {
  return static_cast<double>(i % 7) * 0.5 - 1.25 + static_cast<double>(i / 7) * 0.125;
}

inline Tensor patterned(DType dtype, const Shape& shape) {
  Tensor tensor(dtype, shape);
  for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, patternValue(i));
  return tensor;
}

inline void expectPatterned(const Tensor& tensor, DType dtype, const Shape& shape) {
  EXPECT_EQ(tensor.dtype(), dtype);
  ASSERT_EQ(tensor.shape(), shape);
  for (int64_t i = 0; i < tensor.numel(); ++i) ASSERT_EQ(tensor.get(i), patternValue(i)) << "at flat index " << i;
}

// Python prelude defining values(shape, dtype), the same pattern as patternValue, and
// shape_of("2,3") -> (2, 3).
inline const std::string kPythonPattern = R"(
import sys, zipfile
import numpy as np
def values(shape, dtype):
    i = np.arange(int(np.prod(shape)))
    return ((i % 7) * 0.5 - 1.25 + (i // 7) * 0.125).reshape(shape).astype(dtype)
def shape_of(text):
    return tuple(int(x) for x in text.split(',') if x)
)";

}  // namespace einjit::testing
