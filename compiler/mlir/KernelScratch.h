// The allocator behind the buffers a compiled kernel allocates for itself (packed panels,
// transposed tiles, the sums it carries over row tiles). MLIR's memref.alloc/dealloc lower to
// calls of these (the generic allocation functions of the LLVM conversion), which the loader
// binds to them.
//
// Why not malloc: glibc serves blocks over 32 MB with a fresh mmap every time, and trims the
// heap of freed smaller ones, so a kernel's large buffers came back as untouched pages on every
// call, each page faulting on its first write (dense at d = 4096, 64 MB of packed weights per
// thread: half of the 50 ms the forward spent outside its GEMM). A kernel call runs on one
// thread from start to end and frees what it allocates, so each thread keeps the large blocks
// it freed (up to kRetainedBytesPerThread) and hands them out again; small blocks go to malloc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace einjit::cpu::detail {

// The symbols MLIR's conversion calls with useGenericFunctions, and what they are bound to.
inline constexpr const char* kScratchAllocSymbol = "_mlir_memref_to_llvm_alloc";
inline constexpr const char* kScratchAlignedAllocSymbol = "_mlir_memref_to_llvm_aligned_alloc";
inline constexpr const char* kScratchFreeSymbol = "_mlir_memref_to_llvm_free";
void* scratchAlloc(std::size_t bytes);
void* scratchAlignedAlloc(std::size_t alignment, std::size_t bytes);
void scratchFree(void* pointer);

// Bytes of freed blocks the calling thread holds for reuse (for tests).
std::size_t retainedScratchBytes();

}  // namespace einjit::cpu::detail
