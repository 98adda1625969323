// Device memory shared by the CUDA target and the GPU runtime: a caching allocator with free
// lists by power-of-two size class. Freed blocks are kept for reuse, never returned to the
// driver (training allocates the same sizes every step, so the cache stops growing after the
// first step).
#pragma once

#include <cstddef>

#include "compiler/cuda/CudaDriver.h"

namespace einjit::cuda {

// A block of at least `bytes` (its size class: a power of two, at least 256 bytes, stored in
// `sizeClass`), from the cache when one is free, else from cuMemAlloc. Throws UserError with
// cudaUnavailableReason() without a GPU, or when cuMemAlloc fails.
CUdeviceptr allocateDevice(std::size_t bytes, std::size_t& sizeClass);
// Returns a block to the cache of its size class.
void releaseDevice(CUdeviceptr pointer, std::size_t sizeClass);

// One block, returned to the cache when destroyed.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes);
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  CUdeviceptr pointer() const { return pointer_; }
  std::size_t bytes() const { return bytes_; }

 private:
  CUdeviceptr pointer_ = 0;
  std::size_t bytes_ = 0, sizeClass_ = 0;
};

}  // namespace einjit::cuda
