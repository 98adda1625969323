// Internal to runtime/ops: argument checks, gradient accumulation, dtype dispatch, the fixed
// chunking that spreads work over the CPU target's thread pool, and a vectorisable exp.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compiler/cpu/ThreadPool.h"
#include "einjit/error.h"
#include "runtime/autograd/Tape.h"

// Hot loops are compiled three times, for AVX-512 (x86-64-v4), AVX2 + FMA (x86-64-v3) and
// baseline x86-64, and the loader picks the best for the machine (GCC function multiversioning):
// the project builds without -march=native, so that one binary runs everywhere.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EINJIT_HAS_MULTIVERSION 1
#define EINJIT_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EINJIT_HAS_MULTIVERSION 0
#define EINJIT_MULTIVERSION
#endif

namespace einjit::rt::detail {

// The width in bytes of the vector registers the attention tasks are compiled for: 64, 32 or
// 16, matching the clone of the multiversioned tasks the host runs, unless pinned. Tests pin
// each width in turn (every width runs correctly, if slowly, on every x86-64 host); 0 unpins.
int attentionVectorBytes();
void pinAttentionVectorBytes(int bytes);

// Throws UserError("<op>: <what> is null") for a null Var.
void checkNotNull(const char* op, const Var& var, const char* what);
// Throws UserError unless `var` has rank 2; returns nothing, names `what` in the message.
void checkRank2(const char* op, const Var& var, const char* what);
// Throws UserError unless a and b have the same dtype.
void checkSameDType(const char* op, const Var& a, const char* aName, const Var& b,
                    const char* bName);

// A new intermediate holding `value`; it requires a gradient when `requiresGrad`.
Var makeResult(Tensor value, bool requiresGrad);

// True when the op must record its backward: the tape records and some input needs a gradient.
bool needsBackward(const Tape& tape, std::initializer_list<const Var*> inputs);

// Adds `gradient` (the var's shape and dtype) into var.grad; takes it over when var has none.
void accumulate(VarData& var, Tensor&& gradient);

// Calls f(float{}) or f(double{}) for the dtype.
template <class F>
decltype(auto) dispatch(DType dtype, F&& f) {
  if (dtype == DType::F32) return f(float{});
  return f(double{});
}

// Runs body(chunk, begin, end) for the chunks [c*chunkSize, min(count, (c+1)*chunkSize)) of
// [0, count) on the thread pool. The chunks depend only on count and chunkSize, never on the
// number of threads, so per-chunk partial results summed in chunk order are reproducible.
template <class Body>
void parallelChunks(int64_t count, int64_t chunkSize, Body&& body) {
  if (count <= 0) return;
  chunkSize = std::max<int64_t>(chunkSize, 1);
  const int64_t chunks = (count + chunkSize - 1) / chunkSize;
  if (chunks == 1) {
    body(int64_t{0}, int64_t{0}, count);
    return;
  }
  const std::function<void(int64_t)> task = [&](int64_t c) {
    body(c, c * chunkSize, std::min(count, (c + 1) * chunkSize));
  };
  cpu::defaultThreadPool().parallelFor(chunks, task);
}

// Chunk sizes: about this many elements per task.
inline constexpr int64_t kElementsPerChunk = 1 << 15;
// Rows per chunk for row-wise work on rows of `width` elements.
inline int64_t rowsPerChunk(int64_t width) {
  return std::max<int64_t>(1, kElementsPerChunk / std::max<int64_t>(width, 1));
}

// Column sums of a (rows, cols) array: per fixed chunk of rows a partial sum, partials added in
// chunk order (reproducible for any number of threads).
template <class T>
Tensor columnSums(const Tensor& values) {
  const int64_t rows = values.shape()[0], cols = values.shape()[1];
  const int64_t chunkRows = rowsPerChunk(cols);
  const int64_t chunks = std::max<int64_t>(1, (rows + chunkRows - 1) / chunkRows);
  std::vector<T> partial(static_cast<size_t>(chunks * cols), T(0));
  const T* src = values.data<T>();
  parallelChunks(rows, chunkRows, [&](int64_t c, int64_t begin, int64_t end) {
    T* sum = partial.data() + c * cols;
    for (int64_t r = begin; r < end; ++r) {
      const T* row = src + r * cols;
      for (int64_t j = 0; j < cols; ++j) sum[j] += row[j];
    }
  });
  Tensor result(values.dtype(), {cols});
  T* out = result.data<T>();
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t j = 0; j < cols; ++j) out[j] += partial[c * cols + j];
  return result;
}

// exp(x) for float in a form GCC vectorises (Cephes expf: x = n ln2 + r, |r| <= ln2/2, a
// degree-6 polynomial for e^r, 2^n by exponent bits); relative error ~2 ulp. Inputs are
// clamped to [-87, 88] (results there are within float range: e^-87 ~ 1.6e-38 stands in for
// smaller values). float64 uses std::exp.
inline float expApprox(float x) {
  x = std::min(88.0f, std::max(-87.0f, x));
  // n = round(x / ln2) by the 1.5 * 2^23 trick (no rounding library call, vectorises).
  const float shifted = x * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const int32_t exponent = (static_cast<int32_t>(n) + 127) << 23;
  return er * std::bit_cast<float>(exponent);
}
inline double expApprox(double x) { return std::exp(x); }

}  // namespace einjit::rt::detail
