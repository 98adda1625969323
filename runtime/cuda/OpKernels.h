// The non-einsum ops of the GPU runtime as CUDA C++: embedding, residual add / scale / bias,
// LayerNorm, tanh-GELU, ReLU, softmax cross-entropy, flash-style causal attention, the AdamW
// multi-tensor update and bf16 <-> fp32 conversion, each forward and backward, for fp32 and
// bf16 storage (math in fp32). One source text holds every kernel; it is compiled once with
// NVRTC per GPU architecture.
//
// Every kernel is written once and rendered in two flavours: for NVRTC, and as plain C++ for
// the host, where a launcher runs the blocks in turn and every thread of a block as a fiber
// that yields at __syncthreads() and at warp shuffles (so barriers and shuffles behave as on
// the GPU; a block whose threads disagree about a barrier is reported). Tests run the host
// flavour to check the kernels without a GPU.
//
// Conventions shared by the kernels and their launchers (runtime/cuda/CudaOps.cpp):
//  - kernels are named einjit_<op>_<f32|bf16> (bf16: bfloat16 bits as unsigned short, stored
//    by round-to-nearest-even), plus einjit_adamw_finish_norm;
//  - every block has kOpThreads threads (a multiple of 32); grids are 2-D at most;
//  - per-row statistics (LayerNorm mean and 1/std, attention log-sum-exp and row dots,
//    cross-entropy log-sum-exp) are fp32;
//  - the host flavour exports, per kernel NAME,
//      extern "C" void NAME_launch(void** args, unsigned gridX, unsigned gridY,
//                                  unsigned block, unsigned char* dynamicShared)
//    taking the arguments as cuLaunchKernel does (args[i] points at argument i), and
//    einjit_sim_problem(): null, or what went wrong in the last launch.
#pragma once

#include <cstdint>
#include <string>

namespace einjit::cuda {

inline constexpr int kOpThreads = 256;
// Attention tiles: kAttentionTile query rows x kAttentionTile keys per block step; the head
// dimension is at most kMaxHeadDim (per-thread accumulators are sized by it).
inline constexpr int64_t kAttentionTile = 64;
inline constexpr int64_t kMaxHeadDim = 128;
// Rows per partial sum of the column reductions (bias, LayerNorm gamma/beta gradients), and
// elements per chunk of the AdamW multi-tensor kernels.
inline constexpr int64_t kColumnSumRows = 64;
inline constexpr int64_t kAdamWChunk = 16384;

// A parameter tensor as the AdamW kernels read it (device addresses; layout fixed: the source
// declares the same struct).
struct AdamWTensorEntry {
  uint64_t param = 0, grad = 0, m = 0, v = 0;  // param, m, v: fp32; grad: the kernel's storage
  int64_t count = 0;
  float stepSize = 0;     // lr / (1 - beta1^t)
  float decayFactor = 1;  // 1 - lr * weightDecay (1 without decay)
};
static_assert(sizeof(AdamWTensorEntry) == 48);
// One chunk of a tensor: elements [begin, min(begin + kAdamWChunk, count)) of entry `tensor`.
struct AdamWChunkEntry {
  int64_t tensor = 0, begin = 0;
};
static_assert(sizeof(AdamWChunkEntry) == 16);

// The CUDA C++ for NVRTC.
const std::string& opKernelSource();
// The same kernels as host C++ (C++17, needs <ucontext.h>), see above.
const std::string& opKernelHostSource();

// Dynamic shared memory (bytes) of the attention kernels for a head dimension.
int64_t attentionForwardSharedBytes(int64_t headDim);
int64_t attentionKeyGradSharedBytes(int64_t headDim);
int64_t attentionQueryGradSharedBytes(int64_t headDim);

}  // namespace einjit::cuda
