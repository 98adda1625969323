// The CUDA renderer: a KernelProgram becomes CUDA C++ source (one or more __global__ kernels)
// plus launch descriptors that say, for a given row count, how to launch each kernel.
//
// How a program is split into kernels:
//  - Values without a row axis that need no row (parameter-only values; every value of a
//    classic einsum) are computed first, each by an "elements" kernel (grid-stride over its
//    elements, reductions in a register).
//  - All row values run in ONE fused "row tile" kernel: each block takes `rowsPerTile` rows and
//    computes every contraction of the chain for them, one phase per materialised value,
//    __syncthreads() between phases. Intermediates live in shared memory (fp32, or fp64 at f64
//    precision) when the tile fits the budget, else in a global scratch buffer. The layer thus
//    reads X once and writes Y once.
//  - Values without a row axis that sum over rows (parameter gradients) come after: a "row
//    chunks" kernel writes one partial result per chunk of rows, then a "chunk sum" kernel adds
//    the partials in chunk order. No atomics: results are bitwise reproducible for a row count.
//  - A two-operand contraction that is a batched matrix product (every label a batch, M, N or K
//    label; the row axis in M for row values, in K for row sums) runs as a tiled GEMM: output
//    tiles of BM x BN, a K loop staging BK-deep slices of both operands in shared memory, each
//    of the 256 threads accumulating a (BM/16) x (BN/16) register block; at bf16 the tiles are
//    multiples of 16 (zero padded) and warps multiply them on tensor cores (wmma m16n16k16,
//    fp32 accumulation). Row sums split K over row chunks, one block per (chunk, tile). Tile
//    sizes are chosen per contraction from its extents (padding waste against shared-memory
//    traffic per FMA). Other contractions use one thread per output element.
// Reshape, Permute, Pad, Truncate and Add are never materialised unless they are outputs: they
// become index arithmetic inside the accessors of the values that read them.
//
// Kernel signature (every kernel of a program takes the same arguments):
//   (long long rows, long long chunks, const S* in0, ..., S* out0, ..., A* scratch0, ...)
// S is the storage type (float, double, or bf16 bits as unsigned short), A the accumulator type
// (float, or double at f64 precision). Outputs are fully written.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compiler/kernel/KernelProgram.h"

namespace einjit::cuda {

// Storage precision on the device. F32 and F64 accumulate in their own type; BF16 stores
// bfloat16 (round to nearest even) and accumulates in fp32. Host tensors stay f32/f64 and are
// converted on upload and download.
enum class Precision { F32, F64, BF16 };
const char* precisionName(Precision precision);  // "f32", "f64", "bf16"
Precision parsePrecision(const std::string& name);  // throws UserError for other names
std::size_t storageBytes(Precision precision);
std::size_t accumulatorBytes(Precision precision);

struct EmitOptions {
  Precision precision = Precision::F32;
  // Dynamic shared memory the row tile kernel may use (bytes). 227 KiB is the opt-in limit
  // per block on sm_90; the backend passes the device's own limit.
  int64_t sharedBytesBudget = 227 * 1024;
  int threadsPerBlock = 256;
};

enum class LaunchKind {
  Elements,   // grid-stride over `elements`
  RowTiles,   // one block per `rowsPerTile` rows
  RowChunks,  // grid-stride over chunks x `elements`
  ChunkSum,   // grid-stride over `elements`
};
const char* launchKindName(LaunchKind kind);

struct KernelLaunch {
  std::string kernel;  // the __global__ function
  LaunchKind kind = LaunchKind::Elements;
  int64_t elements = 0;     // elements of the value computed (not RowTiles)
  int64_t rowsPerTile = 0;  // RowTiles
  int64_t maxChunks = 1;    // RowChunks / ChunkSum: the most row chunks used
  int64_t tilesPerChunk = 0;  // RowChunks of a tiled GEMM: blocks per row chunk (0: not tiled)
  std::string tiles;          // tile shapes of the tiled contractions, for the launch plan
  int threads = 256;
  int64_t sharedBytes = 0;
};

// A device buffer the kernels share besides inputs and outputs.
struct ScratchBuffer {
  std::string purpose;  // the value it holds
  int64_t bytesPerRow = 0;
  int64_t fixedBytes = 0;
  int64_t bytes(int64_t rows) const { return bytesPerRow * rows + fixedBytes; }
};

struct CudaProgram {
  std::string name;
  Precision precision = Precision::F32;
  std::string source;                  // CUDA C++ for NVRTC
  std::vector<KernelLaunch> launches;  // in launch order
  std::vector<ScratchBuffer> scratch;  // kernel arguments after the outputs, in order
  // One line per launch (kind, tile, threads, shared memory): the choices that the cache
  // entry records and the CLI prints.
  std::string launchPlan() const;
};

// Row chunks a RowChunks/ChunkSum launch uses for `rows` (1 ..= maxChunks).
int64_t chunkCount(const KernelLaunch& launch, int64_t rows);
// Blocks of a launch for `rows`; 0 means the launch has nothing to do.
int64_t gridBlocks(const KernelLaunch& launch, int64_t rows);

// Calls launch(k, grid, chunks) for every launch k of `program` that has work for `rows`, in
// launch order (the walk every launcher shares: GPU, device programs, host simulation); UserError
// when a grid needs more blocks than CUDA allows.
void forEachLaunch(const CudaProgram& program, int64_t rows,
                   const std::function<void(std::size_t k, unsigned grid, long long chunks)>& launch);

// Throws UserError when the program cannot be rendered (checkKernelProgram's errors, or a row
// value that needs a row sum first, which would take two passes over the rows).
CudaProgram emitCuda(const KernelProgram& program, const EmitOptions& options);

// The same kernels as plain C++ for the host: every kernel becomes
//   extern "C" void NAME(<kernel arguments>, unsigned grid, unsigned block, unsigned char* shared)
// which runs the blocks in turn and, inside a block, every thread as a fiber that runs to its
// next __syncthreads() before the next thread runs (so barriers inside loops and per-thread
// register tiles behave as on the GPU), plus NAME_packed(rows, chunks, void* const* buffers,
// grid, block, shared) taking the buffers as one array (inputs, outputs, scratch), and
// einjit_sim_problem(): null, or what went wrong (threads that skipped a barrier). bf16 tensor-core
// fragments are whole 16x16 tiles on the host (every lane computes the tile). The kernel bodies
// are the very text emitCuda renders, so running this on the host checks the index arithmetic,
// the tiling and the barriers without a GPU.
std::string emitHostSimulation(const KernelProgram& program, const EmitOptions& options);

}  // namespace einjit::cuda
