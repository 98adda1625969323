#include "runtime/cuda/OpKernels.h"

namespace einjit::cuda {
namespace {

// Bumped whenever the kernels change; part of the source text, hence of the cubin cache key.
constexpr const char* kOpKernelsVersion = "einjit-op-kernels 3";

constexpr const char* kDevicePrelude = R"CUDA(#define EINJIT_FN __device__ __forceinline__
#define EINJIT_KERNEL(name, params, call) \
  extern "C" __global__ void __launch_bounds__(EINJIT_THREADS) name params { call }
extern __shared__ __align__(16) unsigned char einjit_dynamic_shared[];
EINJIT_FN float einjit_bits_to_float(unsigned u) { return __uint_as_float(u); }
EINJIT_FN unsigned einjit_float_to_bits(float x) { return __float_as_uint(x); }
EINJIT_FN float einjit_shfl_xor(float value, int laneMask) {
  return __shfl_xor_sync(0xffffffffu, value, laneMask);
}
)CUDA";

// The host runtime: CUDA's indices as globals, and a block scheduler running every thread as
// a fiber (ucontext). A thread yields at __syncthreads() (released when every thread of the
// block waits there) and twice per warp shuffle (released when all 32 lanes of its warp wait
// there: once after publishing its value, once after reading its partner's, so no lane
// overwrites a value another has yet to read). Anything else is reported as a problem.
constexpr const char* kHostPrelude = R"CUDA(#include <math.h>
#include <cstring>
#include <functional>
#include <type_traits>
#include <ucontext.h>
#include <utility>
#include <vector>
#define __restrict__
#define __shared__ static
#define EINJIT_FN static inline
struct einjit_dim { unsigned x = 0, y = 0; };
static einjit_dim blockIdx, threadIdx, blockDim, gridDim;
static unsigned char* einjit_dynamic_shared = nullptr;
enum { einjit_runnable, einjit_at_barrier, einjit_at_shuffle, einjit_finished };
static ucontext_t einjit_sim_scheduler;
static std::vector<ucontext_t> einjit_sim_threads;
static std::vector<std::vector<char>> einjit_sim_stacks;
static std::vector<int> einjit_sim_state;
static std::vector<float> einjit_sim_lanes;
static std::function<void()> einjit_sim_body;
static const char* einjit_sim_error = nullptr;
extern "C" const char* einjit_sim_problem() { return einjit_sim_error; }
static void einjit_sim_entry() {
  einjit_sim_body();
  einjit_sim_state[threadIdx.x] = einjit_finished;
}
static void einjit_sim_yield(int state) {
  const unsigned t = threadIdx.x;
  einjit_sim_state[t] = state;
  swapcontext(&einjit_sim_threads[t], &einjit_sim_scheduler);
}
static void __syncthreads() { einjit_sim_yield(einjit_at_barrier); }
static float einjit_shfl_xor(float value, int laneMask) {
  const unsigned t = threadIdx.x;
  einjit_sim_lanes[t] = value;
  einjit_sim_yield(einjit_at_shuffle);
  const float other = einjit_sim_lanes[t ^ (unsigned)laneMask];
  einjit_sim_yield(einjit_at_shuffle);
  return other;
}
static void einjit_sim_block(unsigned block) {
  einjit_sim_threads.assign(block, ucontext_t());
  einjit_sim_state.assign(block, einjit_runnable);
  einjit_sim_lanes.assign(block, 0.0f);
  if (einjit_sim_stacks.size() < block) einjit_sim_stacks.resize(block);
  for (unsigned t = 0; t < block; ++t) {
    einjit_sim_stacks[t].resize(1 << 17);
    getcontext(&einjit_sim_threads[t]);
    einjit_sim_threads[t].uc_stack.ss_sp = einjit_sim_stacks[t].data();
    einjit_sim_threads[t].uc_stack.ss_size = einjit_sim_stacks[t].size();
    einjit_sim_threads[t].uc_link = &einjit_sim_scheduler;
    makecontext(&einjit_sim_threads[t], einjit_sim_entry, 0);
  }
  for (;;) {  // every runnable thread runs to its next barrier, shuffle or end
    for (unsigned t = 0; t < block; ++t)
      if (einjit_sim_state[t] == einjit_runnable) {
        threadIdx.x = t;
        swapcontext(&einjit_sim_scheduler, &einjit_sim_threads[t]);
      }
    unsigned finished = 0, atBarrier = 0;
    for (unsigned t = 0; t < block; ++t) {
      finished += einjit_sim_state[t] == einjit_finished;
      atBarrier += einjit_sim_state[t] == einjit_at_barrier;
    }
    if (finished == block) return;
    bool released = false;
    for (unsigned warp = 0; warp < block; warp += 32) {
      bool whole = true;
      for (unsigned lane = 0; lane < 32; ++lane) whole = whole && einjit_sim_state[warp + lane] == einjit_at_shuffle;
      if (!whole) continue;
      for (unsigned lane = 0; lane < 32; ++lane) einjit_sim_state[warp + lane] = einjit_runnable;
      released = true;
    }
    if (released) continue;
    if (atBarrier == block) {
      for (unsigned t = 0; t < block; ++t) einjit_sim_state[t] = einjit_runnable;
      continue;
    }
    einjit_sim_error =
        "threads of a block disagree: some wait at __syncthreads() or at a warp shuffle that "
        "others of their block or warp never reach";
    return;
  }
}
template <class... A, std::size_t... I>
static void einjit_sim_call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
  kernel(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}
template <class... A>
static void einjit_sim_launch(void (*kernel)(A...), void** args, unsigned gridX, unsigned gridY,
                              unsigned block, unsigned char* shared) {
  einjit_sim_error = nullptr;
  if (block == 0 || block % 32 != 0) {
    einjit_sim_error = "the block size is not a positive multiple of 32";
    return;
  }
  gridDim.x = gridX;
  gridDim.y = gridY;
  blockDim.x = block;
  einjit_dynamic_shared = shared;
  einjit_sim_body = [&] { einjit_sim_call(kernel, args, std::index_sequence_for<A...>{}); };
  for (blockIdx.y = 0; blockIdx.y < gridY; ++blockIdx.y)
    for (blockIdx.x = 0; blockIdx.x < gridX; ++blockIdx.x) {
      einjit_sim_block(block);
      if (einjit_sim_error) return;
    }
}
EINJIT_FN float einjit_bits_to_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }
EINJIT_FN unsigned einjit_float_to_bits(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
#define EINJIT_KERNEL(name, params, call) \
  static void name params { call } \
  extern "C" void name##_launch(void** args, unsigned gridX, unsigned gridY, unsigned block, \
                                unsigned char* shared) { \
    einjit_sim_launch(name, args, gridX, gridY, block, shared); \
  }
)CUDA";

// The kernels, the same text in both flavours.
constexpr const char* kKernels = R"CUDA(
#define EINJIT_KEYS_PER_THREAD (EINJIT_TILE / 4)
#define EINJIT_COLS_PER_THREAD (EINJIT_MAX_HEAD_DIM / 4)
typedef unsigned short bf16_t;

// ---- storage ----
EINJIT_FN float einjit_load(const float* p, long long i) { return p[i]; }
EINJIT_FN float einjit_load(const bf16_t* p, long long i) {
  return einjit_bits_to_float((unsigned)p[i] << 16);
}
// bfloat16: round to nearest even; NaN stays NaN.
EINJIT_FN bf16_t einjit_to_bf16(float x) {
  unsigned u = einjit_float_to_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (bf16_t)(u >> 16);
}
EINJIT_FN void einjit_store(float* p, long long i, float x) { p[i] = x; }
EINJIT_FN void einjit_store(bf16_t* p, long long i, float x) { p[i] = einjit_to_bf16(x); }
EINJIT_FN float einjit_negative_infinity() { return einjit_bits_to_float(0xff800000u); }

// ---- indices and reductions ----
EINJIT_FN long long einjit_first_index() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
EINJIT_FN long long einjit_index_stride() { return (long long)gridDim.x * blockDim.x; }
// Butterfly reductions: every lane ends with the same value (each step adds the same two
// operands on both lanes of a pair).
EINJIT_FN float einjit_warp_sum(float v) {
  for (int mask = 16; mask > 0; mask >>= 1) v += einjit_shfl_xor(v, mask);
  return v;
}
EINJIT_FN float einjit_warp_max(float v) {
  for (int mask = 16; mask > 0; mask >>= 1) v = fmaxf(v, einjit_shfl_xor(v, mask));
  return v;
}
// Sum over the block in a fixed order (warp sums, then the warps in order); every thread gets
// it. `scratch` holds 32 floats of shared memory; every thread must call.
EINJIT_FN float einjit_block_sum(float v, float* scratch) {
  v = einjit_warp_sum(v);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
  for (unsigned w = 0; w < blockDim.x / 32; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

// ---- elementwise ----
template <class S>
EINJIT_FN void einjit_add(const S* a, const S* b, S* y, long long n) {
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride())
    einjit_store(y, i, einjit_load(a, i) + einjit_load(b, i));
}
template <class S>
EINJIT_FN void einjit_scale(const S* x, S* y, long long n, float factor) {
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride())
    einjit_store(y, i, einjit_load(x, i) * factor);
}
template <class S>
EINJIT_FN void einjit_add_bias(const S* x, const S* bias, S* y, long long rows, long long width) {
  for (long long i = einjit_first_index(); i < rows * width; i += einjit_index_stride())
    einjit_store(y, i, einjit_load(x, i) + einjit_load(bias, i % width));
}
// GELU, tanh approximation: 0.5 u (1 + tanh(s)) = u * sigmoid(2 s), s = sqrt(2/pi) (u + 0.044715 u^3).
#define EINJIT_SQRT_2_OVER_PI 0.7978845608028654f
#define EINJIT_GELU_C 0.044715f
template <class S>
EINJIT_FN void einjit_gelu(const S* x, S* y, long long n) {
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride()) {
    const float u = einjit_load(x, i);
    const float s = EINJIT_SQRT_2_OVER_PI * (u + EINJIT_GELU_C * u * u * u);
    einjit_store(y, i, u / (1.0f + expf(-2.0f * s)));
  }
}
// d/du [u sigma(2 s)] = sigma + 2 u sigma (1 - sigma) s'(u).
template <class S>
EINJIT_FN void einjit_gelu_backward(const S* x, const S* dy, S* dx, long long n) {
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride()) {
    const float u = einjit_load(x, i);
    const float s = EINJIT_SQRT_2_OVER_PI * (u + EINJIT_GELU_C * u * u * u);
    const float sigma = 1.0f / (1.0f + expf(-2.0f * s));
    const float ds = EINJIT_SQRT_2_OVER_PI * (1.0f + 3.0f * EINJIT_GELU_C * u * u);
    einjit_store(dx, i, einjit_load(dy, i) * (sigma + 2.0f * u * sigma * (1.0f - sigma) * ds));
  }
}
template <class S>
EINJIT_FN void einjit_relu(const S* x, S* y, long long n, float gain) {
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride()) {
    const float u = einjit_load(x, i);
    einjit_store(y, i, u > 0.0f ? u * gain : 0.0f);
  }
}
template <class S>
EINJIT_FN void einjit_relu_backward(const S* x, const S* dy, S* dx, long long n, float gain) {
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride())
    einjit_store(dx, i, einjit_load(x, i) > 0.0f ? einjit_load(dy, i) * gain : 0.0f);
}
template <class D, class S>
EINJIT_FN void einjit_convert(const S* x, D* y, long long n) {
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride())
    einjit_store(y, i, einjit_load(x, i));
}

// ---- column sums (bias and LayerNorm parameter gradients), no atomics ----
// partial[c * cols + j] = sum of column j over the rows of chunk c (EINJIT_COLUMN_ROWS rows).
template <class S>
EINJIT_FN void einjit_column_partials(const S* x, float* partial, long long rows, long long cols) {
  const long long chunks = (rows + EINJIT_COLUMN_ROWS - 1) / EINJIT_COLUMN_ROWS;
  for (long long i = einjit_first_index(); i < chunks * cols; i += einjit_index_stride()) {
    const long long chunk = i / cols, j = i % cols;
    const long long end = min(rows, (chunk + 1) * EINJIT_COLUMN_ROWS);
    float sum = 0.0f;
    for (long long r = chunk * EINJIT_COLUMN_ROWS; r < end; ++r) sum += einjit_load(x, r * cols + j);
    partial[i] = sum;
  }
}
// out[j] = the partials of column j added in chunk order.
template <class S>
EINJIT_FN void einjit_column_finish(const float* partial, S* out, long long chunks, long long cols) {
  for (long long j = einjit_first_index(); j < cols; j += einjit_index_stride()) {
    float sum = 0.0f;
    for (long long c = 0; c < chunks; ++c) sum += partial[c * cols + j];
    einjit_store(out, j, sum);
  }
}

// ---- embedding ----
template <class S>
EINJIT_FN void einjit_embedding(const int* ids, const S* table, S* out, long long rows, long long width) {
  for (long long i = einjit_first_index(); i < rows * width; i += einjit_index_stride())
    out[i] = table[(long long)ids[i / width] * width + i % width];
}
// One block per table row (grid-stride): the rows of dout whose id is v, listed in ascending
// order in order[start[v] .. start[v + 1]), are added in that order. Rows no id picks get 0.
template <class S>
EINJIT_FN void einjit_embedding_backward(const long long* start, const long long* order, const S* dout,
                                         S* dtable, long long vocab, long long width) {
  for (long long v = blockIdx.x; v < vocab; v += gridDim.x)
    for (long long j = threadIdx.x; j < width; j += blockDim.x) {
      float sum = 0.0f;
      for (long long k = start[v]; k < start[v + 1]; ++k) sum += einjit_load(dout, order[k] * width + j);
      einjit_store(dtable, v * width + j, sum);
    }
}

// ---- LayerNorm: one warp per row, two passes over the row ----
template <class S>
EINJIT_FN void einjit_layer_norm(const S* x, const S* gamma, const S* beta, S* y, float* mean, float* rstd,
                                 long long rows, long long width, float eps) {
  const long long warps = blockDim.x / 32;
  const unsigned lane = threadIdx.x % 32;
  for (long long r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
    const S* row = x + r * width;
    float sum = 0.0f;
    for (long long j = lane; j < width; j += 32) sum += einjit_load(row, j);
    const float mu = einjit_warp_sum(sum) / (float)width;
    float squares = 0.0f;
    for (long long j = lane; j < width; j += 32) {
      const float d = einjit_load(row, j) - mu;
      squares += d * d;
    }
    const float inv = 1.0f / sqrtf(einjit_warp_sum(squares) / (float)width + eps);
    if (lane == 0) {
      mean[r] = mu;
      rstd[r] = inv;
    }
    for (long long j = lane; j < width; j += 32) {
      const float xhat = (einjit_load(row, j) - mu) * inv;
      float value = gamma ? xhat * einjit_load(gamma, j) : xhat;
      if (beta) value += einjit_load(beta, j);
      einjit_store(y, r * width + j, value);
    }
  }
}
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma.
template <class S>
EINJIT_FN void einjit_layer_norm_backward(const S* x, const S* dy, const S* gamma, const float* mean,
                                          const float* rstd, S* dx, long long rows, long long width) {
  const long long warps = blockDim.x / 32;
  const unsigned lane = threadIdx.x % 32;
  for (long long r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
    const long long o = r * width;
    const float mu = mean[r], inv = rstd[r];
    float sumG = 0.0f, sumGXhat = 0.0f;
    for (long long j = lane; j < width; j += 32) {
      const float xhat = (einjit_load(x, o + j) - mu) * inv;
      const float g = gamma ? einjit_load(dy, o + j) * einjit_load(gamma, j) : einjit_load(dy, o + j);
      sumG += g;
      sumGXhat += g * xhat;
    }
    const float a = einjit_warp_sum(sumG) / (float)width;
    const float b = einjit_warp_sum(sumGXhat) / (float)width;
    for (long long j = lane; j < width; j += 32) {
      const float xhat = (einjit_load(x, o + j) - mu) * inv;
      const float g = gamma ? einjit_load(dy, o + j) * einjit_load(gamma, j) : einjit_load(dy, o + j);
      einjit_store(dx, o + j, inv * (g - a - xhat * b));
    }
  }
}
// Per chunk of rows: partial sums of dy * xhat (dgamma) and of dy (dbeta), as einjit_column_partials.
template <class S>
EINJIT_FN void einjit_layer_norm_param_partials(const S* x, const S* dy, const float* mean, const float* rstd,
                                                float* partialGamma, float* partialBeta, long long rows,
                                                long long cols) {
  const long long chunks = (rows + EINJIT_COLUMN_ROWS - 1) / EINJIT_COLUMN_ROWS;
  for (long long i = einjit_first_index(); i < chunks * cols; i += einjit_index_stride()) {
    const long long chunk = i / cols, j = i % cols;
    const long long end = min(rows, (chunk + 1) * EINJIT_COLUMN_ROWS);
    float sumGamma = 0.0f, sumBeta = 0.0f;
    for (long long r = chunk * EINJIT_COLUMN_ROWS; r < end; ++r) {
      const float g = einjit_load(dy, r * cols + j);
      sumGamma += g * ((einjit_load(x, r * cols + j) - mean[r]) * rstd[r]);
      sumBeta += g;
    }
    partialGamma[i] = sumGamma;
    partialBeta[i] = sumBeta;
  }
}

// ---- softmax cross-entropy: one warp per row ----
template <class S>
EINJIT_FN void einjit_cross_entropy(const S* logits, const int* targets, float* lse, float* rowLoss,
                                    long long rows, long long vocab) {
  const long long warps = blockDim.x / 32;
  const unsigned lane = threadIdx.x % 32;
  for (long long r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
    const S* row = logits + r * vocab;
    float max = einjit_negative_infinity();
    for (long long j = lane; j < vocab; j += 32) max = fmaxf(max, einjit_load(row, j));
    max = einjit_warp_max(max);
    float sum = 0.0f;
    for (long long j = lane; j < vocab; j += 32) sum += expf(einjit_load(row, j) - max);
    const float logSumExp = max + logf(einjit_warp_sum(sum));
    if (lane == 0) {
      lse[r] = logSumExp;
      rowLoss[r] = logSumExp - einjit_load(row, targets[r]);
    }
  }
}
// loss[0] = mean of rowLoss, one block, fixed order.
EINJIT_FN void einjit_mean_of_rows(const float* rowLoss, float* loss, long long rows) {
  __shared__ float scratch[32];
  float sum = 0.0f;
  for (long long r = threadIdx.x; r < rows; r += blockDim.x) sum += rowLoss[r];
  sum = einjit_block_sum(sum, scratch);
  if (threadIdx.x == 0) loss[0] = sum / (float)rows;
}
// dlogits = scale * (softmax(logits) - onehot(target)); scale = d(loss) / rows.
template <class S>
EINJIT_FN void einjit_cross_entropy_backward(const S* logits, const int* targets, const float* lse, S* dlogits,
                                             long long rows, long long vocab, float scale) {
  for (long long i = einjit_first_index(); i < rows * vocab; i += einjit_index_stride()) {
    const long long r = i / vocab;
    float p = expf(einjit_load(logits, i) - lse[r]);
    if (i % vocab == targets[r]) p -= 1.0f;
    einjit_store(dlogits, i, scale * p);
  }
}

// ---- flash-style causal attention ----
// q, k, v, out: (batch*seq, heads*headDim), rows batch-major; block (x, y) takes the tile of
// EINJIT_TILE query (or key) rows x of head y % heads of sequence y / heads. A thread owns row
// threadIdx.x / 4 of the tile; the four threads of a row split the keys (key quad + 4 j) and the
// head dimension (column quad + 4 c). Tiles live in shared memory as fp32 with rows of
// headDim + 1 floats (no bank conflicts across rows). Statistics (lse, delta) are (batch*seq, heads).

// Rows [row0, row0 + EINJIT_TILE) of one head into `tile`; rows past seq are zero.
template <class S>
EINJIT_FN void einjit_load_tile(const S* src, long long base, long long row0, long long seq, long long width,
                                long long headDim, float* tile) {
  const long long ld = headDim + 1;
  for (long long i = threadIdx.x; i < EINJIT_TILE * headDim; i += blockDim.x) {
    const long long r = i / headDim, d = i % headDim;
    tile[r * ld + d] = row0 + r < seq ? einjit_load(src, base + (row0 + r) * width + d) : 0.0f;
  }
}
EINJIT_FN float einjit_dot(const float* a, const float* b, long long n) {
  float sum = 0.0f;
  for (long long d = 0; d < n; ++d) sum += a[d] * b[d];
  return sum;
}
// Stores acc (columns quad + 4 c) as row `row` of one head of dst, scaled by `factor`.
template <class S>
EINJIT_FN void einjit_store_row(S* dst, long long offset, const float* acc, int quad, long long headDim,
                                float factor) {
#pragma unroll
  for (int c = 0; c < EINJIT_COLS_PER_THREAD; ++c)
    if (quad + 4 * c < headDim) einjit_store(dst, offset + quad + 4 * c, acc[c] * factor);
}

// Forward: per key tile, logits of the thread's row, the online softmax (running max and sum,
// earlier output rescaled by exp(old max - new max)), then out += p v. Only key tiles up to
// the diagonal are visited; lse = max + log(sum) is kept for the backward pass.
template <class S>
EINJIT_FN void einjit_attention(const S* q, const S* k, const S* v, S* out, float* lse, long long seq,
                                long long heads, long long headDim, float scale) {
  const long long ld = headDim + 1, width = heads * headDim, pld = EINJIT_TILE + 1;
  const long long b = blockIdx.y / heads, h = blockIdx.y % heads;
  const long long base = b * seq * width + h * headDim;
  const long long q0 = (long long)blockIdx.x * EINJIT_TILE;
  float* qs = (float*)einjit_dynamic_shared;
  float* ks = qs + EINJIT_TILE * ld;
  float* vs = ks + EINJIT_TILE * ld;
  float* ps = vs + EINJIT_TILE * ld;
  const int row = threadIdx.x / 4, quad = threadIdx.x % 4;
  const long long query = q0 + row;
  einjit_load_tile(q, base, q0, seq, width, headDim, qs);
  float acc[EINJIT_COLS_PER_THREAD];
#pragma unroll
  for (int c = 0; c < EINJIT_COLS_PER_THREAD; ++c) acc[c] = 0.0f;
  float runningMax = einjit_negative_infinity(), runningSum = 0.0f;
  const long long keyEnd = min(seq, q0 + EINJIT_TILE);
  for (long long k0 = 0; k0 < keyEnd; k0 += EINJIT_TILE) {
    __syncthreads();  // the previous tile is consumed (and the query tile is loaded)
    einjit_load_tile(k, base, k0, seq, width, headDim, ks);
    einjit_load_tile(v, base, k0, seq, width, headDim, vs);
    __syncthreads();
    float logits[EINJIT_KEYS_PER_THREAD];
    float tileMax = einjit_negative_infinity();
#pragma unroll
    for (int j = 0; j < EINJIT_KEYS_PER_THREAD; ++j) {
      const long long key = k0 + quad + 4 * j;
      logits[j] = key <= query && key < seq
                      ? einjit_dot(qs + row * ld, ks + (quad + 4 * j) * ld, headDim) * scale
                      : einjit_negative_infinity();
      tileMax = fmaxf(tileMax, logits[j]);
    }
    tileMax = fmaxf(tileMax, einjit_shfl_xor(tileMax, 1));
    tileMax = fmaxf(tileMax, einjit_shfl_xor(tileMax, 2));
    // Key 0 is in the first tile and visible to every row: the max is finite from then on.
    const float newMax = fmaxf(runningMax, tileMax);
    const float alpha = expf(runningMax - newMax);
    float tileSum = 0.0f;
#pragma unroll
    for (int j = 0; j < EINJIT_KEYS_PER_THREAD; ++j) {
      const float p = expf(logits[j] - newMax);
      ps[row * pld + quad + 4 * j] = p;
      tileSum += p;
    }
    tileSum += einjit_shfl_xor(tileSum, 1);
    tileSum += einjit_shfl_xor(tileSum, 2);
    runningSum = runningSum * alpha + tileSum;
    runningMax = newMax;
#pragma unroll
    for (int c = 0; c < EINJIT_COLS_PER_THREAD; ++c) acc[c] *= alpha;
    __syncthreads();  // the row's probabilities, written by its four threads
    const long long keys = min((long long)EINJIT_TILE, seq - k0);
    for (long long key = 0; key < keys; ++key) {
      const float p = ps[row * pld + key];
      const float* vrow = vs + key * ld;
#pragma unroll
      for (int c = 0; c < EINJIT_COLS_PER_THREAD; ++c)
        if (quad + 4 * c < headDim) acc[c] += p * vrow[quad + 4 * c];
    }
  }
  if (query < seq) {
    einjit_store_row(out, base + query * width, acc, quad, headDim, 1.0f / runningSum);
    if (quad == 0) lse[(b * seq + query) * heads + h] = runningMax + logf(runningSum);
  }
}
// delta[row, head] = dout . out over the head's columns (= sum_j P_ij dP_ij), one warp each.
template <class S>
EINJIT_FN void einjit_attention_row_dot(const S* out, const S* dout, float* delta, long long rows,
                                        long long heads, long long headDim) {
  const long long warps = blockDim.x / 32;
  const unsigned lane = threadIdx.x % 32;
  for (long long item = blockIdx.x * warps + threadIdx.x / 32; item < rows * heads; item += gridDim.x * warps) {
    const long long offset = item * headDim;  // (row, head) items are laid out as the columns
    float sum = 0.0f;
    for (long long d = lane; d < headDim; d += 32) sum += einjit_load(out, offset + d) * einjit_load(dout, offset + d);
    sum = einjit_warp_sum(sum);
    if (lane == 0) delta[item] = sum;
  }
}
// dK and dV of one key tile: the query tiles from the key tile on (earlier queries see none of
// these keys); P recomputed as exp(logit - lse), dS = P (dout . v - delta) * scale;
// dV += P^T dout, dK += dS^T q. A thread owns key row threadIdx.x / 4.
template <class S>
EINJIT_FN void einjit_attention_key_grad(const S* q, const S* k, const S* v, const S* dout, const float* lse,
                                         const float* delta, S* dk, S* dv, long long seq, long long heads,
                                         long long headDim, float scale) {
  const long long ld = headDim + 1, width = heads * headDim, pld = EINJIT_TILE + 1;
  const long long b = blockIdx.y / heads, h = blockIdx.y % heads;
  const long long base = b * seq * width + h * headDim;
  const long long k0 = (long long)blockIdx.x * EINJIT_TILE;
  float* ks = (float*)einjit_dynamic_shared;
  float* vs = ks + EINJIT_TILE * ld;
  float* qs = vs + EINJIT_TILE * ld;
  float* dos = qs + EINJIT_TILE * ld;
  float* pt = dos + EINJIT_TILE * ld;  // pt[key][query]
  float* dst = pt + EINJIT_TILE * pld;
  float* rowLse = dst + EINJIT_TILE * pld;
  float* rowDelta = rowLse + EINJIT_TILE;
  const int row = threadIdx.x / 4, quad = threadIdx.x % 4;
  const long long key = k0 + row;
  einjit_load_tile(k, base, k0, seq, width, headDim, ks);
  einjit_load_tile(v, base, k0, seq, width, headDim, vs);
  float dkAcc[EINJIT_COLS_PER_THREAD], dvAcc[EINJIT_COLS_PER_THREAD];
#pragma unroll
  for (int c = 0; c < EINJIT_COLS_PER_THREAD; ++c) dkAcc[c] = dvAcc[c] = 0.0f;
  for (long long q0 = k0; q0 < seq; q0 += EINJIT_TILE) {
    __syncthreads();
    einjit_load_tile(q, base, q0, seq, width, headDim, qs);
    einjit_load_tile(dout, base, q0, seq, width, headDim, dos);
    for (long long i = threadIdx.x; i < EINJIT_TILE; i += blockDim.x) {
      const bool valid = q0 + i < seq;
      rowLse[i] = valid ? lse[(b * seq + q0 + i) * heads + h] : 0.0f;
      rowDelta[i] = valid ? delta[(b * seq + q0 + i) * heads + h] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < EINJIT_KEYS_PER_THREAD; ++j) {
      const int c = quad + 4 * j;
      const long long query = q0 + c;
      float p = 0.0f, ds = 0.0f;
      if (key <= query && query < seq && key < seq) {
        p = expf(einjit_dot(qs + c * ld, ks + row * ld, headDim) * scale - rowLse[c]);
        ds = p * (einjit_dot(dos + c * ld, vs + row * ld, headDim) - rowDelta[c]) * scale;
      }
      pt[row * pld + c] = p;
      dst[row * pld + c] = ds;
    }
    __syncthreads();
    const long long queries = min((long long)EINJIT_TILE, seq - q0);
    for (long long c = 0; c < queries; ++c) {
      const float p = pt[row * pld + c], ds = dst[row * pld + c];
#pragma unroll
      for (int d = 0; d < EINJIT_COLS_PER_THREAD; ++d)
        if (quad + 4 * d < headDim) {
          dvAcc[d] += p * dos[c * ld + quad + 4 * d];
          dkAcc[d] += ds * qs[c * ld + quad + 4 * d];
        }
    }
  }
  if (key < seq) {
    einjit_store_row(dk, base + key * width, dkAcc, quad, headDim, 1.0f);
    einjit_store_row(dv, base + key * width, dvAcc, quad, headDim, 1.0f);
  }
}
// dQ of one query tile in its own pass (no atomics): dQ += dS K over the key tiles up to the
// diagonal. A thread owns query row threadIdx.x / 4.
template <class S>
EINJIT_FN void einjit_attention_query_grad(const S* q, const S* k, const S* v, const S* dout, const float* lse,
                                           const float* delta, S* dq, long long seq, long long heads,
                                           long long headDim, float scale) {
  const long long ld = headDim + 1, width = heads * headDim, pld = EINJIT_TILE + 1;
  const long long b = blockIdx.y / heads, h = blockIdx.y % heads;
  const long long base = b * seq * width + h * headDim;
  const long long q0 = (long long)blockIdx.x * EINJIT_TILE;
  float* qs = (float*)einjit_dynamic_shared;
  float* dos = qs + EINJIT_TILE * ld;
  float* ks = dos + EINJIT_TILE * ld;
  float* vs = ks + EINJIT_TILE * ld;
  float* dss = vs + EINJIT_TILE * ld;
  const int row = threadIdx.x / 4, quad = threadIdx.x % 4;
  const long long query = q0 + row;
  const bool valid = query < seq;
  const float rowLse = valid ? lse[(b * seq + query) * heads + h] : 0.0f;
  const float rowDelta = valid ? delta[(b * seq + query) * heads + h] : 0.0f;
  einjit_load_tile(q, base, q0, seq, width, headDim, qs);
  einjit_load_tile(dout, base, q0, seq, width, headDim, dos);
  float acc[EINJIT_COLS_PER_THREAD];
#pragma unroll
  for (int c = 0; c < EINJIT_COLS_PER_THREAD; ++c) acc[c] = 0.0f;
  const long long keyEnd = min(seq, q0 + EINJIT_TILE);
  for (long long k0 = 0; k0 < keyEnd; k0 += EINJIT_TILE) {
    __syncthreads();
    einjit_load_tile(k, base, k0, seq, width, headDim, ks);
    einjit_load_tile(v, base, k0, seq, width, headDim, vs);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < EINJIT_KEYS_PER_THREAD; ++j) {
      const int c = quad + 4 * j;
      const long long key = k0 + c;
      float ds = 0.0f;
      if (key <= query && key < seq && valid) {
        const float p = expf(einjit_dot(qs + row * ld, ks + c * ld, headDim) * scale - rowLse);
        ds = p * (einjit_dot(dos + row * ld, vs + c * ld, headDim) - rowDelta) * scale;
      }
      dss[row * pld + c] = ds;
    }
    __syncthreads();
    const long long keys = min((long long)EINJIT_TILE, seq - k0);
    for (long long c = 0; c < keys; ++c) {
      const float ds = dss[row * pld + c];
#pragma unroll
      for (int d = 0; d < EINJIT_COLS_PER_THREAD; ++d)
        if (quad + 4 * d < headDim) acc[d] += ds * ks[c * ld + quad + 4 * d];
    }
  }
  if (valid) einjit_store_row(dq, base + query * width, acc, quad, headDim, 1.0f);
}

// ---- AdamW, multi-tensor: one block per chunk of a tensor (grid-stride over chunks) ----
struct einjit_adamw_tensor {
  unsigned long long param, grad, m, v;
  long long count;
  float stepSize, decayFactor;
};
struct einjit_adamw_chunk {
  long long tensor, begin;
};
// partial[c] = sum of grad^2 over chunk c.
template <class S>
EINJIT_FN void einjit_adamw_square_partials(const einjit_adamw_tensor* tensors, const einjit_adamw_chunk* chunks,
                                            long long chunkCount, float* partial) {
  __shared__ float scratch[32];
  for (long long c = blockIdx.x; c < chunkCount; c += gridDim.x) {
    const einjit_adamw_tensor t = tensors[chunks[c].tensor];
    const S* grad = (const S*)t.grad;
    const long long end = min(t.count, chunks[c].begin + EINJIT_ADAMW_CHUNK);
    float sum = 0.0f;
    for (long long i = chunks[c].begin + threadIdx.x; i < end; i += blockDim.x) {
      const float g = einjit_load(grad, i);
      sum += g * g;
    }
    sum = einjit_block_sum(sum, scratch);
    if (threadIdx.x == 0) partial[c] = sum;
  }
}
// scalars[0] = the global gradient norm, scalars[1] = the clip factor min(1, clip / (norm + 1e-6))
// (1 when clipNorm <= 0), as torch.nn.utils.clip_grad_norm_. One block; partials added in double
// in a fixed order.
EINJIT_FN void einjit_adamw_norm_and_clip(const float* partial, long long count, float clipNorm, float* scalars) {
  __shared__ double sums[EINJIT_THREADS];
  double sum = 0.0;
  for (long long i = threadIdx.x; i < count; i += blockDim.x) sum += partial[i];
  sums[threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (unsigned t = 0; t < blockDim.x; ++t) total += sums[t];
    const double norm = sqrt(total);
    scalars[0] = (float)norm;
    scalars[1] = clipNorm > 0.0f ? (float)fmin(1.0, clipNorm / (norm + 1e-6)) : 1.0f;
  }
}
// torch.optim.AdamW on fp32 master weights and moments, gradients scaled by scalars[1]:
// p *= decayFactor; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= stepSize m / (sqrt(v) / bc2 + eps).
template <class S>
EINJIT_FN void einjit_adamw_update(const einjit_adamw_tensor* tensors, const einjit_adamw_chunk* chunks,
                                   long long chunkCount, const float* scalars, float beta1, float beta2, float eps,
                                   float biasCorrection2Sqrt) {
  const float gradScale = scalars[1];
  for (long long c = blockIdx.x; c < chunkCount; c += gridDim.x) {
    const einjit_adamw_tensor t = tensors[chunks[c].tensor];
    float* p = (float*)t.param;
    const S* grad = (const S*)t.grad;
    float* m = (float*)t.m;
    float* v = (float*)t.v;
    const long long end = min(t.count, chunks[c].begin + EINJIT_ADAMW_CHUNK);
    for (long long i = chunks[c].begin + threadIdx.x; i < end; i += blockDim.x) {
      const float g = einjit_load(grad, i) * gradScale;
      const float mi = beta1 * m[i] + (1.0f - beta1) * g;
      const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * t.decayFactor - t.stepSize * mi / (sqrtf(vi) / biasCorrection2Sqrt + eps);
    }
  }
}

// ---- mean squared error, in one block (regression batches are small), fixed order ----
template <class S>
EINJIT_FN void einjit_mse(const S* p, const S* t, float* loss, long long n) {
  __shared__ float scratch[32];
  float sum = 0.0f;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const float d = einjit_load(p, i) - einjit_load(t, i);
    sum += d * d;
  }
  sum = einjit_block_sum(sum, scratch);
  if (threadIdx.x == 0) loss[0] = sum / (float)n;
}
// dp = factor * (p - t), factor = 2 * d(loss) / n.
template <class S>
EINJIT_FN void einjit_mse_backward(const S* p, const S* t, S* dp, long long n, float factor) {
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride())
    einjit_store(dp, i, factor * (einjit_load(p, i) - einjit_load(t, i)));
}

// ---- weight normalisation of a layer core (structures.md section 4) ----
// w (f32 master weights, n elements), gamma (f32 scalar or null: 1). One block sums w*w and,
// for the backward pass, g*w in a fixed order into stats[0], stats[1].
template <class S>
EINJIT_FN void einjit_weight_norm_stats(const float* w, const S* g, float* stats, long long n) {
  __shared__ float scratch[32];
  float squares = 0.0f, dot = 0.0f;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = w[i];
    squares += v * v;
    if (g) dot += einjit_load(g, i) * v;
  }
  squares = einjit_block_sum(squares, scratch);
  dot = einjit_block_sum(dot, scratch);
  if (threadIdx.x == 0) {
    stats[0] = squares;
    stats[1] = dot;
  }
}
// rms = sqrt(mean(w^2) + eps), ratio = rms / sigma.
EINJIT_FN float einjit_weight_norm_rms(const float* stats, long long n, float eps) {
  return sqrtf((n > 0 ? stats[0] / (float)n : 0.0f) + eps);
}
template <class S>
EINJIT_FN void einjit_weight_norm_apply(const float* w, const float* gamma, const float* stats, S* y, long long n,
                                        float sigma, float eps) {
  const float ratio = einjit_weight_norm_rms(stats, n, eps) / sigma;
  const float gain = gamma ? gamma[0] : 1.0f;
  const float scale = ratio > 1.0f ? gain / ratio : gain;
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride()) einjit_store(y, i, w[i] * scale);
}
// dw = gain/ratio * g - gain * dot * sigma / (n rms^3) * w when the clamp is active (ratio > 1),
// else gain * g; dgamma = dot / ratio, or dot.
template <class S>
EINJIT_FN void einjit_weight_norm_backward(const float* w, const float* gamma, const float* stats, const S* g,
                                           S* dw, S* dgamma, long long n, float sigma, float eps) {
  const float rms = einjit_weight_norm_rms(stats, n, eps), ratio = rms / sigma, dot = stats[1];
  const float gain = gamma ? gamma[0] : 1.0f;
  const bool clamped = ratio > 1.0f;
  const float direct = clamped ? gain / ratio : gain;
  const float throughRms = clamped ? gain * dot * sigma / ((float)n * rms * rms * rms) : 0.0f;
  for (long long i = einjit_first_index(); i < n; i += einjit_index_stride())
    einjit_store(dw, i, direct * einjit_load(g, i) - throughRms * w[i]);
  if (dgamma && einjit_first_index() == 0) einjit_store(dgamma, 0, clamped ? dot / ratio : dot);
}

// ---- the kernels, per storage type ----
#define EINJIT_STORAGE_KERNELS(tag, S) \
  EINJIT_KERNEL(einjit_add_##tag, (const S* a, const S* b, S* y, long long n), einjit_add<S>(a, b, y, n);) \
  EINJIT_KERNEL(einjit_scale_##tag, (const S* x, S* y, long long n, float factor), \
                einjit_scale<S>(x, y, n, factor);) \
  EINJIT_KERNEL(einjit_add_bias_##tag, (const S* x, const S* bias, S* y, long long rows, long long width), \
                einjit_add_bias<S>(x, bias, y, rows, width);) \
  EINJIT_KERNEL(einjit_gelu_##tag, (const S* x, S* y, long long n), einjit_gelu<S>(x, y, n);) \
  EINJIT_KERNEL(einjit_gelu_backward_##tag, (const S* x, const S* dy, S* dx, long long n), \
                einjit_gelu_backward<S>(x, dy, dx, n);) \
  EINJIT_KERNEL(einjit_relu_##tag, (const S* x, S* y, long long n, float gain), einjit_relu<S>(x, y, n, gain);) \
  EINJIT_KERNEL(einjit_relu_backward_##tag, (const S* x, const S* dy, S* dx, long long n, float gain), \
                einjit_relu_backward<S>(x, dy, dx, n, gain);) \
  EINJIT_KERNEL(einjit_column_partials_##tag, (const S* x, float* partial, long long rows, long long cols), \
                einjit_column_partials<S>(x, partial, rows, cols);) \
  EINJIT_KERNEL(einjit_column_finish_##tag, (const float* partial, S* out, long long chunks, long long cols), \
                einjit_column_finish<S>(partial, out, chunks, cols);) \
  EINJIT_KERNEL(einjit_embedding_##tag, (const int* ids, const S* table, S* out, long long rows, long long width), \
                einjit_embedding<S>(ids, table, out, rows, width);) \
  EINJIT_KERNEL(einjit_embedding_backward_##tag, \
                (const long long* start, const long long* order, const S* dout, S* dtable, long long vocab, \
                 long long width), \
                einjit_embedding_backward<S>(start, order, dout, dtable, vocab, width);) \
  EINJIT_KERNEL(einjit_layer_norm_##tag, \
                (const S* x, const S* gamma, const S* beta, S* y, float* mean, float* rstd, long long rows, \
                 long long width, float eps), \
                einjit_layer_norm<S>(x, gamma, beta, y, mean, rstd, rows, width, eps);) \
  EINJIT_KERNEL(einjit_layer_norm_backward_##tag, \
                (const S* x, const S* dy, const S* gamma, const float* mean, const float* rstd, S* dx, \
                 long long rows, long long width), \
                einjit_layer_norm_backward<S>(x, dy, gamma, mean, rstd, dx, rows, width);) \
  EINJIT_KERNEL(einjit_layer_norm_param_partials_##tag, \
                (const S* x, const S* dy, const float* mean, const float* rstd, float* partialGamma, \
                 float* partialBeta, long long rows, long long cols), \
                einjit_layer_norm_param_partials<S>(x, dy, mean, rstd, partialGamma, partialBeta, rows, cols);) \
  EINJIT_KERNEL(einjit_cross_entropy_##tag, \
                (const S* logits, const int* targets, float* lse, float* rowLoss, long long rows, long long vocab), \
                einjit_cross_entropy<S>(logits, targets, lse, rowLoss, rows, vocab);) \
  EINJIT_KERNEL(einjit_cross_entropy_backward_##tag, \
                (const S* logits, const int* targets, const float* lse, S* dlogits, long long rows, \
                 long long vocab, float scale), \
                einjit_cross_entropy_backward<S>(logits, targets, lse, dlogits, rows, vocab, scale);) \
  EINJIT_KERNEL(einjit_attention_##tag, \
                (const S* q, const S* k, const S* v, S* out, float* lse, long long seq, long long heads, \
                 long long headDim, float scale), \
                einjit_attention<S>(q, k, v, out, lse, seq, heads, headDim, scale);) \
  EINJIT_KERNEL(einjit_attention_row_dot_##tag, \
                (const S* out, const S* dout, float* delta, long long rows, long long heads, long long headDim), \
                einjit_attention_row_dot<S>(out, dout, delta, rows, heads, headDim);) \
  EINJIT_KERNEL(einjit_attention_key_grad_##tag, \
                (const S* q, const S* k, const S* v, const S* dout, const float* lse, const float* delta, S* dk, \
                 S* dv, long long seq, long long heads, long long headDim, float scale), \
                einjit_attention_key_grad<S>(q, k, v, dout, lse, delta, dk, dv, seq, heads, headDim, scale);) \
  EINJIT_KERNEL(einjit_attention_query_grad_##tag, \
                (const S* q, const S* k, const S* v, const S* dout, const float* lse, const float* delta, S* dq, \
                 long long seq, long long heads, long long headDim, float scale), \
                einjit_attention_query_grad<S>(q, k, v, dout, lse, delta, dq, seq, heads, headDim, scale);) \
  EINJIT_KERNEL(einjit_adamw_square_partials_##tag, \
                (const einjit_adamw_tensor* tensors, const einjit_adamw_chunk* chunks, long long chunkCount, \
                 float* partial), \
                einjit_adamw_square_partials<S>(tensors, chunks, chunkCount, partial);) \
  EINJIT_KERNEL(einjit_adamw_update_##tag, \
                (const einjit_adamw_tensor* tensors, const einjit_adamw_chunk* chunks, long long chunkCount, \
                 const float* scalars, float beta1, float beta2, float eps, float biasCorrection2Sqrt), \
                einjit_adamw_update<S>(tensors, chunks, chunkCount, scalars, beta1, beta2, eps, \
                                       biasCorrection2Sqrt);) \
  EINJIT_KERNEL(einjit_mse_##tag, (const S* p, const S* t, float* loss, long long n), einjit_mse<S>(p, t, loss, n);) \
  EINJIT_KERNEL(einjit_mse_backward_##tag, (const S* p, const S* t, S* dp, long long n, float factor), \
                einjit_mse_backward<S>(p, t, dp, n, factor);) \
  EINJIT_KERNEL(einjit_weight_norm_stats_##tag, (const float* w, const S* g, float* stats, long long n), \
                einjit_weight_norm_stats<S>(w, g, stats, n);) \
  EINJIT_KERNEL(einjit_weight_norm_apply_##tag, \
                (const float* w, const float* gamma, const float* stats, S* y, long long n, float sigma, float eps), \
                einjit_weight_norm_apply<S>(w, gamma, stats, y, n, sigma, eps);) \
  EINJIT_KERNEL(einjit_weight_norm_backward_##tag, \
                (const float* w, const float* gamma, const float* stats, const S* g, S* dw, S* dgamma, long long n, \
                 float sigma, float eps), \
                einjit_weight_norm_backward<S>(w, gamma, stats, g, dw, dgamma, n, sigma, eps);)
EINJIT_STORAGE_KERNELS(f32, float)
EINJIT_STORAGE_KERNELS(bf16, bf16_t)

EINJIT_KERNEL(einjit_convert_f32_to_bf16, (const float* x, bf16_t* y, long long n), einjit_convert<bf16_t>(x, y, n);)
EINJIT_KERNEL(einjit_convert_bf16_to_f32, (const bf16_t* x, float* y, long long n), einjit_convert<float>(x, y, n);)
EINJIT_KERNEL(einjit_cross_entropy_mean, (const float* rowLoss, float* loss, long long rows),
              einjit_mean_of_rows(rowLoss, loss, rows);)
EINJIT_KERNEL(einjit_adamw_finish_norm, (const float* partial, long long count, float clipNorm, float* scalars),
              einjit_adamw_norm_and_clip(partial, count, clipNorm, scalars);)
)CUDA";

// The constants the kernels and their launchers share.
std::string constants() {
  return "// " + std::string(kOpKernelsVersion) + "\n#define EINJIT_THREADS " + std::to_string(kOpThreads) +
         "\n#define EINJIT_TILE " + std::to_string(kAttentionTile) + "\n#define EINJIT_MAX_HEAD_DIM " +
         std::to_string(kMaxHeadDim) + "\n#define EINJIT_COLUMN_ROWS " + std::to_string(kColumnSumRows) +
         "LL\n#define EINJIT_ADAMW_CHUNK " + std::to_string(kAdamWChunk) + "LL\n";
}

// Square tiles of fp32 rows padded to headDim + 1, and TILE x (TILE + 1) probability tiles.
int64_t tileBytes(int64_t headDim) { return kAttentionTile * (headDim + 1) * 4; }
constexpr int64_t kProbabilityTileBytes = kAttentionTile * (kAttentionTile + 1) * 4;

}  // namespace

const std::string& opKernelSource() {
  static const std::string source = constants() + kDevicePrelude + kKernels;
  return source;
}

const std::string& opKernelHostSource() {
  // min() is CUDA's built-in for integers; the host gets it from std.
  static const std::string source = constants() + kHostPrelude +
                                    "#include <algorithm>\nusing std::min;\n" + kKernels;
  return source;
}

int64_t attentionForwardSharedBytes(int64_t headDim) {
  return 3 * tileBytes(headDim) + kProbabilityTileBytes;
}

int64_t attentionKeyGradSharedBytes(int64_t headDim) {
  return 4 * tileBytes(headDim) + 2 * kProbabilityTileBytes + 2 * kAttentionTile * 4;
}

int64_t attentionQueryGradSharedBytes(int64_t headDim) {
  return 4 * tileBytes(headDim) + kProbabilityTileBytes;
}

}  // namespace einjit::cuda
