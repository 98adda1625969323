// Where the GPU ops run: device memory, copies and kernel launches behind one interface. The
// GPU implementation (gpuOpDevice) compiles the op kernels once with NVRTC for the device's
// architecture (kept in the CUDA target's cubin cache), allocates from the caching allocator and
// launches through the dlopen'ed driver; the layer kernels (compiler/kernel programs rendered by
// CudaEmitter) load through the CUDA target's caches. Tests plug in a host implementation that
// runs the host flavour of the same kernels (runtime/cuda/OpKernels.h, emitHostSimulation), so
// the launch wrappers of CudaOps and DeviceLinear are exercised without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "compiler/cpu/KernelCache.h"
#include "compiler/cuda/CudaEmitter.h"
#include "compiler/kernel/KernelProgram.h"

namespace einjit::cuda {

// A block of device memory, released to its device's allocator when the last owner lets go.
class DeviceMemory {
 public:
  DeviceMemory(uint64_t address, std::size_t bytes, std::function<void()> release)
      : address_(address), bytes_(bytes), release_(std::move(release)) {}
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() {
    if (release_) release_();
  }
  uint64_t address() const { return address_; }
  std::size_t bytes() const { return bytes_; }

 private:
  uint64_t address_;
  std::size_t bytes_;
  std::function<void()> release_;
};

// Grid (x, y) of blocks of `threads` threads with `sharedBytes` of dynamic shared memory.
struct LaunchShape {
  unsigned gridX = 1, gridY = 1;
  unsigned threads = 256;
  int64_t sharedBytes = 0;
};

// A kernel program (a layer's forward or backward) rendered by CudaEmitter for one device and
// loaded there.
class DeviceProgram {
 public:
  explicit DeviceProgram(CudaProgram rendering) : rendering_(std::move(rendering)) {}
  virtual ~DeviceProgram() = default;
  const CudaProgram& rendering() const { return rendering_; }
  // Launch k of rendering() on `grid` blocks with the kernels' arguments (rows, chunks, then
  // the buffers: inputs, outputs, scratch).
  virtual void launch(std::size_t k, unsigned grid, long long rows, long long chunks,
                      const std::vector<uint64_t>& buffers) = 0;

 private:
  CudaProgram rendering_;
};

class OpDevice {
 public:
  virtual ~OpDevice() = default;
  virtual std::string name() const = 0;
  // At least `bytes` (at least one byte is allocated for 0).
  virtual std::shared_ptr<DeviceMemory> allocate(std::size_t bytes) = 0;
  virtual void copyToDevice(uint64_t destination, const void* source, std::size_t bytes) = 0;
  // Waits for the kernels launched before it.
  virtual void copyToHost(void* destination, uint64_t source, std::size_t bytes) = 0;
  virtual void fillZero(uint64_t destination, std::size_t bytes) = 0;
  // Launches kernel `kernel` of the op kernel source in launch order; args as cuLaunchKernel's
  // (args[i] points at the value of argument i; device pointers are 64-bit addresses).
  virtual void launch(const std::string& kernel, const LaunchShape& shape, void** args) = 0;
  // Dynamic shared memory one block may use, and the multiprocessors (grid sizes scale with it).
  virtual int64_t sharedBytesPerBlock() const = 0;
  virtual int64_t multiprocessors() const = 0;
  // `program` rendered at `precision` for this device, compiled and loaded; the same program
  // and precision are loaded once per device.
  virtual std::shared_ptr<DeviceProgram> loadProgram(const KernelProgram& program, Precision precision) = 0;
};

// The GPU (device 0). Throws UserError with cudaUnavailableReason() when there is none, or
// with NVRTC's reason when the kernels cannot be compiled.
OpDevice& gpuOpDevice();

// The text the op kernels' cubin for `arch` is cached under (source, architecture, NVRTC version).
std::string opKernelCacheKeyText(const std::string& arch, const std::string& nvrtcVersionText);

// The op kernels' cubin for `arch`, from the disk cache of `cache` or compiled with NVRTC (then
// stored). Needs NVRTC, not a GPU.
std::string opKernelCubin(const std::string& arch, const cpu::CacheOptions& cache = {});

}  // namespace einjit::cuda
