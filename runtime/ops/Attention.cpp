// Causal self-attention, one task per (batch, head). A task copies its slices of q, k, v into
// zero-padded row-major or transposed buffers, then computes every product (q k^T, p v and the
// four of the backward pass) with register-tiled micro-kernels over those buffers, skipping the
// tiles that the causal mask zeroes. The softmax probabilities (batch, heads, seq, seq) are kept
// for the backward pass.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/ops/Ops.h"
#include "runtime/ops/OpsDetail.h"

namespace einjit::rt {
namespace {

struct AttentionShape {
  int64_t batch, seq, heads, headDim, width;  // width = heads * headDim (a row of q, k, v)
  // Offset of row t of sequence b, head h, in a (batch*seq, width) tensor.
  int64_t offset(int64_t b, int64_t t, int64_t h) const {
    return (b * seq + t) * width + h * headDim;
  }
};

// GCC vector extension: one vector register of T, `Bytes` wide. The tasks are compiled for
// 64-byte (AVX-512), 32-byte (AVX2) and 16-byte (SSE) registers, and the width that matches
// the clone of the multiversioned task the machine runs is picked at run time
// (hostVectorBytes): a 64-byte vector on the AVX2 clone is two registers, so a tile's 8
// accumulators took all 16 and GCC spilled every FMA's operands through the stack (char-GPT
// training on a Zen 3 spent 59% of its time in attention).
template <class T, int Bytes>
struct Simd {
  typedef T Vector __attribute__((vector_size(Bytes)));
  static constexpr int64_t kLanes = Bytes / sizeof(T);
};

// The micro-kernels work on tiles of kTileRows rows x kTileCols columns, held in registers.
constexpr int64_t kTileRows = 4;
template <class T, int Bytes>
constexpr int64_t kTileCols = 2 * Simd<T, Bytes>::kLanes;

// The vector register width of the clone EINJIT_MULTIVERSION picks on this machine.
int hostVectorBytes() {
#if EINJIT_HAS_MULTIVERSION
  static const int bytes = __builtin_cpu_supports("x86-64-v4")   ? 64
                           : __builtin_cpu_supports("x86-64-v3") ? 32
                                                                 : 16;
  return bytes;
#else
  return 16;
#endif
}

std::atomic<int> pinnedVectorBytes{0};  // 0: the host's

// Calls f(std::integral_constant<int, Bytes>) with the vector width the tasks run with.
template <class F>
void withVectorBytes(F&& f) {
  switch (detail::attentionVectorBytes()) {
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    default: f(std::integral_constant<int, 16>{}); break;
  }
}

int64_t roundUp(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// c[r][j] = sum_{k in [begin, end)} a[r][k] * b[k][j] for r < kTileRows, j < kTileCols.
template <class T, int Bytes>
[[gnu::always_inline]] inline void tileProduct(const T* a, int64_t lda, const T* b, int64_t ldb,
                                               int64_t begin, int64_t end, T* c, int64_t ldc) {
  using V = typename Simd<T, Bytes>::Vector;
  constexpr int64_t kLanes = Simd<T, Bytes>::kLanes;
  V acc[kTileRows][2] = {};
  for (int64_t k = begin; k < end; ++k) {
    V b0, b1;
    std::memcpy(&b0, b + k * ldb, sizeof(V));
    std::memcpy(&b1, b + k * ldb + kLanes, sizeof(V));
    for (int64_t r = 0; r < kTileRows; ++r) {
      const T scalar = a[r * lda + k];
      acc[r][0] += scalar * b0;
      acc[r][1] += scalar * b1;
    }
  }
  for (int64_t r = 0; r < kTileRows; ++r) {
    std::memcpy(c + r * ldc, &acc[r][0], sizeof(V));
    std::memcpy(c + r * ldc + kLanes, &acc[r][1], sizeof(V));
  }
}

// Zero-padded copies of one task's slice, sized so that whole tiles can be read and written:
// rows (rowsPadded x colsPadded, row-major) and transposed (headDim x keysPadded).
template <class T, int Bytes>
struct TaskLayout {
  int64_t seq, headDim;
  int64_t rowsPadded, colsPadded, keysPadded;
  explicit TaskLayout(const AttentionShape& a)
      : seq(a.seq),
        headDim(a.headDim),
        rowsPadded(roundUp(a.seq, kTileRows)),
        colsPadded(roundUp(a.headDim, kTileCols<T, Bytes>)),
        keysPadded(roundUp(a.seq, kTileCols<T, Bytes>)) {}
  std::vector<T> rows() const {
    return std::vector<T>(static_cast<size_t>(rowsPadded * colsPadded));
  }
  std::vector<T> transposed() const {
    return std::vector<T>(static_cast<size_t>(headDim * keysPadded));
  }
  std::vector<T> square() const {
    return std::vector<T>(static_cast<size_t>(rowsPadded * keysPadded));
  }
};

template <class T, int Bytes>
void gatherRows(const T* src, const AttentionShape& a, int64_t b, int64_t h,
                const TaskLayout<T, Bytes>& l, T* dst) {
  for (int64_t t = 0; t < a.seq; ++t)
    std::copy(src + a.offset(b, t, h), src + a.offset(b, t, h) + a.headDim, dst + t * l.colsPadded);
}

template <class T, int Bytes>
void gatherTransposed(const T* src, const AttentionShape& a, int64_t b, int64_t h,
                      const TaskLayout<T, Bytes>& l, T* dst) {
  for (int64_t t = 0; t < a.seq; ++t) {
    const T* row = src + a.offset(b, t, h);
    for (int64_t c = 0; c < a.headDim; ++c) dst[c * l.keysPadded + t] = row[c];
  }
}

// a (ld lda) times bRows (ld l.colsPadded), tile by tile, summing over k in [begin(r0), end(r0))
// for the tile of rows [r0, r0 + kTileRows); the rows that exist go to the (b, h) slice of out.
template <class T, int Bytes, class Begin, class End>
[[gnu::always_inline]] inline void multiplyIntoSlice(const T* a, int64_t lda, const T* bRows,
                                                     const TaskLayout<T, Bytes>& l, Begin begin,
                                                     End end,
                                                     const AttentionShape& shape, int64_t b,
                                                     int64_t h, T* out, T* tile) {
  for (int64_t r0 = 0; r0 < l.seq; r0 += kTileRows) {
    for (int64_t d0 = 0; d0 < l.colsPadded; d0 += kTileCols<T, Bytes>)
      tileProduct<T, Bytes>(a + r0 * lda, lda, bRows + d0, l.colsPadded, begin(r0), end(r0),
                            tile + d0, l.colsPadded);
    for (int64_t r = r0; r < std::min(l.seq, r0 + kTileRows); ++r)
      std::copy(tile + (r - r0) * l.colsPadded, tile + (r - r0) * l.colsPadded + l.headDim,
                out + shape.offset(b, r, h));
  }
}

// Forward of the (b, h) slice: out_i = sum_j p_ij v_j with p_i = softmax_j(q_i . k_j * scale)
// over j <= i, in register tiles of kTileRows queries. probabilities (seq x seq, zero after the
// diagonal) receives p unless it is null.
template <class T, int Bytes>
EINJIT_MULTIVERSION void forwardTask(const T* q, const T* k, const T* v, const AttentionShape& a,
                                     int64_t b, int64_t h, T scale, T* probabilities, T* out) {
  const TaskLayout<T, Bytes> l(a);
  const int64_t S = a.seq;
  std::vector<T> qs = l.rows(), vs = l.rows(), kt = l.transposed(), p = l.square();
  std::vector<T> tile(static_cast<size_t>(kTileRows * l.colsPadded));
  gatherRows(q, a, b, h, l, qs.data());
  gatherRows(v, a, b, h, l, vs.data());
  gatherTransposed(k, a, b, h, l, kt.data());
  for (int64_t i0 = 0; i0 < S; i0 += kTileRows) {
    const int64_t keys = std::min(S, i0 + kTileRows);  // the last query of the tile sees these
    T* logits = p.data() + i0 * l.keysPadded;
    for (int64_t j0 = 0; j0 < keys; j0 += kTileCols<T, Bytes>)
      tileProduct<T, Bytes>(qs.data() + i0 * l.colsPadded, l.colsPadded, kt.data() + j0,
                            l.keysPadded, int64_t{0}, l.headDim, logits + j0, l.keysPadded);
    for (int64_t i = i0; i < keys; ++i) {
      T* row = p.data() + i * l.keysPadded;
      const int64_t visible = i + 1;
      T max = row[0] * scale;
      for (int64_t j = 1; j < visible; ++j) max = std::max(max, row[j] * scale);
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < visible; ++j)
        sum += (row[j] = detail::expApprox(T(row[j] * scale - max)));
      const T inv = T(1) / sum;
      for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
      std::fill(row + visible, row + l.keysPadded, T(0));  // the causal mask
      if (probabilities) std::copy(row, row + S, probabilities + i * S);
    }
  }
  multiplyIntoSlice(
      p.data(), l.keysPadded, vs.data(), l, [](int64_t) { return int64_t{0}; },
      [&](int64_t r0) { return std::min(S, r0 + kTileRows); }, a, b, h, out, tile.data());
}

// Gradients of the (b, h) slice: with dP_ij = dO_i . v_j and dS_ij = P_ij (dP_ij - sum_j P_ij
// dP_ij) * scale: dq = dS K, dk = dS^T Q, dv = P^T dO.
template <class T, int Bytes>
EINJIT_MULTIVERSION void backwardTask(const T* q, const T* k, const T* v, const T* dout,
                                      const AttentionShape& a, int64_t b, int64_t h, T scale,
                                      const T* probabilities, T* dq, T* dk, T* dv) {
  const TaskLayout<T, Bytes> l(a);
  const int64_t S = a.seq;
  std::vector<T> gs = l.rows(), qs = l.rows(), ks = l.rows(), vt = l.transposed();
  std::vector<T> ds = l.square(), dsT = l.square(), pT = l.square();
  std::vector<T> tile(static_cast<size_t>(kTileRows * l.colsPadded));
  gatherRows(dout, a, b, h, l, gs.data());
  gatherRows(q, a, b, h, l, qs.data());
  gatherRows(k, a, b, h, l, ks.data());
  gatherTransposed(v, a, b, h, l, vt.data());
  for (int64_t i0 = 0; i0 < S; i0 += kTileRows) {
    const int64_t keys = std::min(S, i0 + kTileRows);
    T* dp = ds.data() + i0 * l.keysPadded;
    for (int64_t j0 = 0; j0 < keys; j0 += kTileCols<T, Bytes>)
      tileProduct<T, Bytes>(gs.data() + i0 * l.colsPadded, l.colsPadded, vt.data() + j0,
                            l.keysPadded, int64_t{0}, l.headDim, dp + j0, l.keysPadded);
    for (int64_t i = i0; i < keys; ++i) {
      const T* p = probabilities + i * S;
      T* row = ds.data() + i * l.keysPadded;
      const int64_t visible = i + 1;
      T rowDot = 0;
#pragma omp simd reduction(+ : rowDot)
      for (int64_t j = 0; j < visible; ++j) rowDot += p[j] * row[j];
      for (int64_t j = 0; j < visible; ++j) {
        row[j] = p[j] * (row[j] - rowDot) * scale;
        dsT[j * l.keysPadded + i] = row[j];
        pT[j * l.keysPadded + i] = p[j];
      }
      std::fill(row + visible, row + l.keysPadded, T(0));
    }
  }
  // Query i sees keys [0, i]; key j is seen by queries [j, S).
  auto fromZero = [](int64_t) { return int64_t{0}; };
  auto toTileEnd = [&](int64_t r0) { return std::min(S, r0 + kTileRows); };
  auto fromTileStart = [](int64_t r0) { return r0; };
  auto toEnd = [&](int64_t) { return S; };
  multiplyIntoSlice(ds.data(), l.keysPadded, ks.data(), l, fromZero, toTileEnd, a, b, h, dq,
                    tile.data());
  multiplyIntoSlice(dsT.data(), l.keysPadded, qs.data(), l, fromTileStart, toEnd, a, b, h, dk,
                    tile.data());
  multiplyIntoSlice(pT.data(), l.keysPadded, gs.data(), l, fromTileStart, toEnd, a, b, h, dv,
                    tile.data());
}

}  // namespace

namespace detail {

int attentionVectorBytes() {
  const int pinned = pinnedVectorBytes.load(std::memory_order_relaxed);
  return pinned != 0 ? pinned : hostVectorBytes();
}

void pinAttentionVectorBytes(int bytes) {
  if (bytes != 0 && bytes != 16 && bytes != 32 && bytes != 64)
    throw UserError(
        "pinAttentionVectorBytes: the width must be 16, 32 or 64 bytes (0: the host's), got " +
        std::to_string(bytes));
  pinnedVectorBytes.store(bytes, std::memory_order_relaxed);
}

}  // namespace detail

Var causalSelfAttention(Tape& tape, const Var& q, const Var& k, const Var& v, int64_t batch,
                        int64_t seq, int64_t heads, double logitScale) {
  const char* op = "causalSelfAttention";
  detail::checkRank2(op, q, "q");
  detail::checkRank2(op, k, "k");
  detail::checkRank2(op, v, "v");
  detail::checkSameDType(op, q, "q", k, "k");
  detail::checkSameDType(op, q, "q", v, "v");
  if (k->value.shape() != q->value.shape() || v->value.shape() != q->value.shape())
    throw UserError(std::string(op) + ": q, k and v must have the same shape, got " +
                    shapeToString(q->value.shape()) + ", " + shapeToString(k->value.shape()) +
                    " and " + shapeToString(v->value.shape()));
  if (batch < 1 || seq < 1 || heads < 1)
    throw UserError(std::string(op) + ": batch, seq and heads must be >= 1, got " +
                    std::to_string(batch) + ", " + std::to_string(seq) + " and " +
                    std::to_string(heads));
  const int64_t rows = q->value.shape()[0], width = q->value.shape()[1];
  if (rows / batch != seq || rows % batch != 0)
    throw UserError(std::string(op) + ": q has " + std::to_string(rows) +
                    " rows, expected batch * seq = " + std::to_string(batch) + " * " +
                    std::to_string(seq));
  if (width == 0 || width % heads != 0)
    throw UserError(std::string(op) + ": the width " + std::to_string(width) +
                    " of q is not a positive multiple of heads = " + std::to_string(heads));
  if (!std::isfinite(logitScale))
    throw UserError(std::string(op) + ": logitScale must be finite, got " +
                    std::to_string(logitScale));
  const AttentionShape shape{batch, seq, heads, width / heads, width};
  const DType dtype = q->value.dtype();

  // The probabilities are kept for the backward pass only.
  const bool backward = detail::needsBackward(tape, {&q, &k, &v});
  const Shape probabilitiesShape{batch, heads, seq, seq};
  auto probabilities =
      backward ? std::make_shared<Tensor>(Tensor::uninitialised(dtype, probabilitiesShape))
               : nullptr;
  // Every element of the outputs below is written by exactly one task.
  Tensor value = Tensor::uninitialised(dtype, q->value.shape());
  detail::dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T scale = static_cast<T>(logitScale);
    withVectorBytes([&](auto bytes) {
      detail::parallelChunks(batch * heads, 1, [&](int64_t task, int64_t, int64_t) {
        const int64_t b = task / heads, h = task % heads;
        forwardTask<T, bytes()>(q->value.data<T>(), k->value.data<T>(), v->value.data<T>(), shape,
                                b, h, scale,
                                backward ? probabilities->data<T>() + task * seq * seq : nullptr,
                                value.data<T>());
      });
    });
  });
  Var out = detail::makeResult(std::move(value), backward);
  if (!backward) return out;
  tape.record([out, q, k, v, probabilities, shape, logitScale] {
    if (out->grad.numel() == 0) return;
    const DType type = q->value.dtype();
    Tensor dq = Tensor::uninitialised(type, q->value.shape());
    Tensor dk = Tensor::uninitialised(type, q->value.shape());
    Tensor dv = Tensor::uninitialised(type, q->value.shape());
    detail::dispatch(type, [&](auto tag) {
      using T = decltype(tag);
      const T scale = static_cast<T>(logitScale);
      withVectorBytes([&](auto bytes) {
        detail::parallelChunks(shape.batch * shape.heads, 1, [&](int64_t task, int64_t, int64_t) {
          const int64_t b = task / shape.heads, h = task % shape.heads;
          backwardTask<T, bytes()>(q->value.data<T>(), k->value.data<T>(), v->value.data<T>(),
                                   out->grad.data<T>(), shape, b, h, scale,
                                   probabilities->data<T>() + task * shape.seq * shape.seq,
                                   dq.data<T>(), dk.data<T>(), dv.data<T>());
        });
      });
    });
    if (q->requiresGrad) detail::accumulate(*q, std::move(dq));
    if (k->requiresGrad) detail::accumulate(*k, std::move(dk));
    if (v->requiresGrad) detail::accumulate(*v, std::move(dv));
  });
  return out;
}

}  // namespace einjit::rt
