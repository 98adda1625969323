// Elementwise ops, bias, embedding and the losses. Attention and LayerNorm have their own files.
#include "runtime/ops/Ops.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numbers>
#include <string>
#include <utility>
#include <vector>

#include "runtime/ops/OpsDetail.h"

namespace einjit::rt {
namespace {

using detail::accumulate;
using detail::checkNotNull;
using detail::checkRank2;
using detail::checkSameDType;
using detail::dispatch;
using detail::kElementsPerChunk;
using detail::makeResult;
using detail::needsBackward;
using detail::parallelChunks;
using detail::rowsPerChunk;

// out[i] = f(in[i]) over every element, in parallel chunks.
template <class T, class F>
void mapElements(const Tensor& in, Tensor& out, F f) {
  const T* src = in.data<T>();
  T* dst = out.data<T>();
  parallelChunks(in.numel(), kElementsPerChunk, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dst[i] = f(src[i]);
  });
}

// GELU, tanh approximation: 0.5 u (1 + tanh(s)) = u * sigmoid(2 s),
// s = sqrt(2/pi) (u + 0.044715 u^3).
constexpr double kGeluC = 0.044715;
const double kSqrt2OverPi = std::sqrt(2.0 / std::numbers::pi);

template <class T>
EINJIT_MULTIVERSION void geluRange(const T* x, T* y, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const T u = x[i];
    const T s = T(kSqrt2OverPi) * (u + T(kGeluC) * u * u * u);
    y[i] = u / (T(1) + detail::expApprox(T(-2) * s));
  }
}

// d/du [u * sigma(2 s)] = sigma + 2 u sigma (1 - sigma) s'(u).
template <class T>
EINJIT_MULTIVERSION void geluBackwardRange(const T* x, const T* dy, T* dx, int64_t begin,
                                           int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const T u = x[i];
    const T s = T(kSqrt2OverPi) * (u + T(kGeluC) * u * u * u);
    const T sigma = T(1) / (T(1) + detail::expApprox(T(-2) * s));
    const T ds = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluC) * u * u);
    dx[i] = dy[i] * (sigma + u * T(2) * sigma * (T(1) - sigma) * ds);
  }
}

}  // namespace

Var embedding(Tape& tape, const std::vector<int32_t>& ids, const Var& table) {
  checkRank2("embedding", table, "the table");
  const int64_t vocab = table->value.shape()[0], width = table->value.shape()[1];
  if (ids.empty()) throw UserError("embedding: no ids given (expected at least one)");
  for (size_t r = 0; r < ids.size(); ++r)
    if (ids[r] < 0 || ids[r] >= vocab)
      throw UserError("embedding: id " + std::to_string(ids[r]) + " at position " +
                      std::to_string(r) + " is out of range, expected [0, " +
                      std::to_string(vocab) + ")");
  const int64_t rows = static_cast<int64_t>(ids.size());
  const DType dtype = table->value.dtype();
  Tensor value = Tensor::uninitialised(dtype, {rows, width});
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* src = table->value.data<T>();
    T* dst = value.data<T>();
    parallelChunks(rows, rowsPerChunk(width), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        std::copy(src + ids[r] * width, src + (ids[r] + 1) * width, dst + r * width);
    });
  });
  Var out = makeResult(std::move(value), needsBackward(tape, {&table}));
  if (out->requiresGrad)
    tape.record([out, table, ids, vocab, width] {
      if (out->grad.numel() == 0) return;
      // Rows grouped by id (counting sort, rows ascending within an id), so that every table
      // row sums its contributions in a fixed order and table rows can run in parallel.
      std::vector<int64_t> start(static_cast<size_t>(vocab) + 1, 0);
      for (int32_t id : ids) ++start[static_cast<size_t>(id) + 1];
      for (int64_t v = 0; v < vocab; ++v) start[v + 1] += start[v];
      std::vector<int64_t> order(ids.size()), next(start.begin(), start.end() - 1);
      for (size_t r = 0; r < ids.size(); ++r) order[next[ids[r]]++] = static_cast<int64_t>(r);
      Tensor dtable = Tensor::uninitialised(table->value.dtype(), table->value.shape());
      dispatch(dtable.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* g = out->grad.data<T>();
        T* dst = dtable.data<T>();
        parallelChunks(vocab, rowsPerChunk(width), [&](int64_t, int64_t begin, int64_t end) {
          for (int64_t v = begin; v < end; ++v) {
            T* target = dst + v * width;
            if (start[v] == start[v + 1]) {
              std::fill(target, target + width, T(0));
              continue;
            }
            // The first contribution is copied (0 + row is row exactly), the others added.
            const T* first = g + order[start[v]] * width;
            std::copy(first, first + width, target);
            for (int64_t k = start[v] + 1; k < start[v + 1]; ++k) {
              const T* row = g + order[k] * width;
              for (int64_t j = 0; j < width; ++j) target[j] += row[j];
            }
          }
        });
      });
      accumulate(*table, std::move(dtable));
    });
  return out;
}

Var add(Tape& tape, const Var& a, const Var& b) {
  checkNotNull("add", a, "a");
  checkNotNull("add", b, "b");
  checkSameDType("add", a, "a", b, "b");
  if (a->value.shape() != b->value.shape())
    throw UserError("add: shapes differ, a is " + shapeToString(a->value.shape()) + " and b is " +
                    shapeToString(b->value.shape()) + "; expected equal shapes");
  Tensor value = Tensor::uninitialised(a->value.dtype(), a->value.shape());
  dispatch(value.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* x = a->value.data<T>();
    const T* y = b->value.data<T>();
    T* dst = value.data<T>();
    parallelChunks(value.numel(), kElementsPerChunk, [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) dst[i] = x[i] + y[i];
    });
  });
  Var out = makeResult(std::move(value), needsBackward(tape, {&a, &b}));
  if (out->requiresGrad)
    tape.record([out, a, b] {
      if (out->grad.numel() == 0) return;
      // This closure is the only reader of out->grad, so the last use may take it over.
      if (a->requiresGrad)
        accumulate(*a, b->requiresGrad ? Tensor(out->grad) : std::move(out->grad));
      if (b->requiresGrad) accumulate(*b, std::move(out->grad));
    });
  return out;
}

Var addBias(Tape& tape, const Var& x, const Var& bias) {
  checkRank2("addBias", x, "x");
  checkNotNull("addBias", bias, "the bias");
  checkSameDType("addBias", x, "x", bias, "the bias");
  const int64_t rows = x->value.shape()[0], width = x->value.shape()[1];
  if (bias->value.shape() != Shape{width})
    throw UserError("addBias: the bias has shape " + shapeToString(bias->value.shape()) +
                    ", expected " + shapeToString({width}) + " for x of shape " +
                    shapeToString(x->value.shape()));
  Tensor value = Tensor::uninitialised(x->value.dtype(), x->value.shape());
  dispatch(value.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* src = x->value.data<T>();
    const T* b = bias->value.data<T>();
    T* dst = value.data<T>();
    parallelChunks(rows, rowsPerChunk(width), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        for (int64_t j = 0; j < width; ++j) dst[r * width + j] = src[r * width + j] + b[j];
    });
  });
  Var out = makeResult(std::move(value), needsBackward(tape, {&x, &bias}));
  if (out->requiresGrad)
    tape.record([out, x, bias] {
      if (out->grad.numel() == 0) return;
      if (bias->requiresGrad)
        dispatch(out->grad.dtype(), [&](auto tag) {
          accumulate(*bias, detail::columnSums<decltype(tag)>(out->grad));
        });
      // This closure is the only reader of out->grad: x may take it over.
      if (x->requiresGrad) accumulate(*x, std::move(out->grad));
    });
  return out;
}

Var scale(Tape& tape, const Var& x, double s) {
  checkNotNull("scale", x, "x");
  if (!std::isfinite(s))
    throw UserError("scale: the factor must be finite, got " + std::to_string(s));
  Tensor value = Tensor::uninitialised(x->value.dtype(), x->value.shape());
  dispatch(value.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T factor = static_cast<T>(s);
    mapElements<T>(x->value, value, [factor](T v) { return v * factor; });
  });
  Var out = makeResult(std::move(value), needsBackward(tape, {&x}));
  if (out->requiresGrad)
    tape.record([out, x, s] {
      if (out->grad.numel() == 0) return;
      Tensor dx = Tensor::uninitialised(out->grad.dtype(), out->grad.shape());
      dispatch(dx.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T factor = static_cast<T>(s);
        mapElements<T>(out->grad, dx, [factor](T v) { return v * factor; });
      });
      accumulate(*x, std::move(dx));
    });
  return out;
}

Var reshape(Tape& tape, const Var& x, const Shape& shape) {
  checkNotNull("reshape", x, "x");
  if (shapeNumel(shape) != x->value.numel())
    throw UserError("reshape: cannot view " + shapeToString(x->value.shape()) + " (" +
                    std::to_string(x->value.numel()) + " elements) as " + shapeToString(shape) +
                    " (" + std::to_string(shapeNumel(shape)) + " elements)");
  Var out = makeResult(x->value.reshaped(shape), needsBackward(tape, {&x}));
  if (out->requiresGrad)
    tape.record([out, x] {
      if (out->grad.numel() == 0) return;
      accumulate(*x, out->grad.reshaped(x->value.shape()));
    });
  return out;
}

Var gelu(Tape& tape, const Var& x) {
  checkNotNull("gelu", x, "x");
  Tensor value = Tensor::uninitialised(x->value.dtype(), x->value.shape());
  dispatch(value.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* src = x->value.data<T>();
    T* dst = value.data<T>();
    parallelChunks(value.numel(), kElementsPerChunk,
                   [&](int64_t, int64_t begin, int64_t end) { geluRange(src, dst, begin, end); });
  });
  Var out = makeResult(std::move(value), needsBackward(tape, {&x}));
  if (out->requiresGrad)
    tape.record([out, x] {
      if (out->grad.numel() == 0) return;
      Tensor dx = Tensor::uninitialised(x->value.dtype(), x->value.shape());
      dispatch(dx.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* u = x->value.data<T>();
        const T* g = out->grad.data<T>();
        T* dst = dx.data<T>();
        parallelChunks(dx.numel(), kElementsPerChunk, [&](int64_t, int64_t begin, int64_t end) {
          geluBackwardRange(u, g, dst, begin, end);
        });
      });
      accumulate(*x, std::move(dx));
    });
  return out;
}

Var relu(Tape& tape, const Var& x, double gain) {
  checkNotNull("relu", x, "x");
  if (!std::isfinite(gain))
    throw UserError("relu: the gain must be finite, got " + std::to_string(gain));
  Tensor value = Tensor::uninitialised(x->value.dtype(), x->value.shape());
  dispatch(value.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T factor = static_cast<T>(gain);
    mapElements<T>(x->value, value, [factor](T u) { return u > T(0) ? u * factor : T(0); });
  });
  Var out = makeResult(std::move(value), needsBackward(tape, {&x}));
  if (out->requiresGrad)
    tape.record([out, x, gain] {
      if (out->grad.numel() == 0) return;
      Tensor dx = Tensor::uninitialised(x->value.dtype(), x->value.shape());
      dispatch(dx.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T factor = static_cast<T>(gain);
        const T* u = x->value.data<T>();
        const T* g = out->grad.data<T>();
        T* dst = dx.data<T>();
        parallelChunks(dx.numel(), kElementsPerChunk, [&](int64_t, int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) dst[i] = u[i] > T(0) ? g[i] * factor : T(0);
        });
      });
      accumulate(*x, std::move(dx));
    });
  return out;
}

Var crossEntropy(Tape& tape, const Var& logits, const std::vector<int32_t>& targets) {
  checkRank2("crossEntropy", logits, "the logits");
  const int64_t rows = logits->value.shape()[0], vocab = logits->value.shape()[1];
  if (rows == 0 || vocab == 0)
    throw UserError("crossEntropy: the logits " + shapeToString(logits->value.shape()) +
                    " are empty; expected at least one row and one class");
  if (static_cast<int64_t>(targets.size()) != rows)
    throw UserError("crossEntropy: " + std::to_string(targets.size()) + " targets for " +
                    std::to_string(rows) + " rows of logits; expected one target per row");
  for (size_t r = 0; r < targets.size(); ++r)
    if (targets[r] < 0 || targets[r] >= vocab)
      throw UserError("crossEntropy: target " + std::to_string(targets[r]) + " at position " +
                      std::to_string(r) + " is out of range, expected [0, " +
                      std::to_string(vocab) + ")");
  const DType dtype = logits->value.dtype();
  // log-sum-exp of every row, kept for the backward pass.
  auto logSumExp = std::make_shared<std::vector<double>>(static_cast<size_t>(rows));
  const int64_t chunkRows = rowsPerChunk(vocab);
  const int64_t chunks = (rows + chunkRows - 1) / chunkRows;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits->value.data<T>();
    parallelChunks(rows, chunkRows, [&](int64_t c, int64_t begin, int64_t end) {
      std::vector<T> shifted(static_cast<size_t>(vocab));
      for (int64_t r = begin; r < end; ++r) {
        const T* row = x + r * vocab;
        T max = row[0];
        for (int64_t j = 1; j < vocab; ++j) max = std::max(max, row[j]);
        for (int64_t j = 0; j < vocab; ++j) shifted[j] = detail::expApprox(T(row[j] - max));
        double sum = 0;
        for (int64_t j = 0; j < vocab; ++j) sum += shifted[j];
        const double lse = static_cast<double>(max) + std::log(sum);
        (*logSumExp)[r] = lse;
        partial[c] += lse - static_cast<double>(row[targets[r]]);
      }
    });
  });
  double total = 0;
  for (double p : partial) total += p;
  Tensor value(dtype, {});
  value.set(0, total / static_cast<double>(rows));
  Var out = makeResult(std::move(value), needsBackward(tape, {&logits}));
  if (out->requiresGrad)
    tape.record([out, logits, targets, logSumExp, rows, vocab] {
      if (out->grad.numel() == 0) return;
      Tensor dlogits = Tensor::uninitialised(logits->value.dtype(), logits->value.shape());
      dispatch(dlogits.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T g = static_cast<T>(out->grad.get(0) / static_cast<double>(rows));
        const T* x = logits->value.data<T>();
        T* dst = dlogits.data<T>();
        parallelChunks(rows, rowsPerChunk(vocab), [&](int64_t, int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            const T lse = static_cast<T>((*logSumExp)[r]);
            const T* row = x + r * vocab;
            T* drow = dst + r * vocab;
            for (int64_t j = 0; j < vocab; ++j) drow[j] = g * detail::expApprox(T(row[j] - lse));
            drow[targets[r]] -= g;
          }
        });
      });
      accumulate(*logits, std::move(dlogits));
    });
  return out;
}

Var meanSquaredError(Tape& tape, const Var& pred, const Tensor& target) {
  checkNotNull("meanSquaredError", pred, "the prediction");
  if (target.dtype() != pred->value.dtype())
    throw UserError(std::string("meanSquaredError: the prediction is ") +
                    dtypeName(pred->value.dtype()) + " but the target is " +
                    dtypeName(target.dtype()) + "; both must have the same dtype");
  if (target.shape() != pred->value.shape())
    throw UserError("meanSquaredError: the prediction has shape " +
                    shapeToString(pred->value.shape()) + " but the target has shape " +
                    shapeToString(target.shape()) + "; expected equal shapes");
  const int64_t count = target.numel();
  if (count == 0) throw UserError("meanSquaredError: the prediction is empty");
  const int64_t chunks = (count + kElementsPerChunk - 1) / kElementsPerChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  dispatch(target.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = pred->value.data<T>();
    const T* t = target.data<T>();
    parallelChunks(count, kElementsPerChunk, [&](int64_t c, int64_t begin, int64_t end) {
      double sum = 0;
      for (int64_t i = begin; i < end; ++i) {
        const double d = static_cast<double>(p[i]) - static_cast<double>(t[i]);
        sum += d * d;
      }
      partial[c] = sum;
    });
  });
  double total = 0;
  for (double p : partial) total += p;
  Tensor value(target.dtype(), {});
  value.set(0, total / static_cast<double>(count));
  Var out = makeResult(std::move(value), needsBackward(tape, {&pred}));
  if (out->requiresGrad)
    tape.record([out, pred, target, count] {
      if (out->grad.numel() == 0) return;
      Tensor dpred = Tensor::uninitialised(target.dtype(), target.shape());
      dispatch(dpred.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T factor = static_cast<T>(2.0 * out->grad.get(0) / static_cast<double>(count));
        const T* p = pred->value.data<T>();
        const T* t = target.data<T>();
        T* dst = dpred.data<T>();
        parallelChunks(count, kElementsPerChunk, [&](int64_t, int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) dst[i] = factor * (p[i] - t[i]);
        });
      });
      accumulate(*pred, std::move(dpred));
    });
  return out;
}

}  // namespace einjit::rt
