// The CUDA target: kernel programs rendered by CudaEmitter, compiled by NVRTC for the device's
// architecture (cached in memory and on disk), launched through the driver API; layers
// (forward, backward) and classic einsums with the same contracts as the CPU target.
//
// Cache key: program fingerprint, precision, emit options (shared memory budget), GPU
// architecture, NVRTC version and the codegen version. Disk entries use the CPU cache's verified
// format (compiler/cpu/KernelCache.h: magic, version, key text, length, SHA-256, payload) with
// payload = launch plan text, NUL, cubin; an entry whose plan differs from a fresh rendering,
// or that fails any check, is rebuilt and replaced.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "compiler/cpu/KernelCache.h"
#include "compiler/cuda/CudaDriver.h"
#include "compiler/cuda/CudaEmitter.h"
#include "runtime/reference/ReferenceExecutor.h"

namespace einjit::cuda {

struct CudaOptions {
  // Device storage; nullopt: f64 when the result dtype is float64, else f32.
  std::optional<Precision> precision;
  cpu::CacheOptions cache;
};

// The text a cache entry is keyed by.
std::string cudaCacheKeyText(const KernelProgram& program, const EmitOptions& options,
                             const std::string& arch, const std::string& nvrtcVersion);

// Payload of a disk entry, and its inverse (nullopt unless the plan matches `plan`).
std::string encodeCubinPayload(const std::string& plan, const std::string& cubin);
std::optional<std::string> decodeCubinPayload(const std::string& payload, const std::string& plan);

struct CubinLookup {
  std::string cubin;
  bool diskHit = false;
};

// The cubin for `keyText` from the disk cache of `cache`, else from `compile()` (then stored).
// Needs no GPU. Disk trouble never fails: it is reported once on stderr and `compile` runs.
CubinLookup cachedCubin(const std::string& keyText, const std::string& plan,
                        const cpu::CacheOptions& cache, const std::function<std::string()>& compile);

// A kernel program rendered for the GPU at `precision` (with the device's shared-memory limit),
// compiled with NVRTC (memory and disk caches) and loaded: one function per launch. Kept for
// the process. Throws UserError with cudaUnavailableReason() when there is no usable GPU.
struct LoadedCudaProgram {
  CudaProgram program;
  CUmodule module = nullptr;
  std::vector<CUfunction> functions;  // per launch
};
std::shared_ptr<const LoadedCudaProgram> loadCudaProgram(const KernelProgram& kernel, Precision precision,
                                                         const cpu::CacheOptions& cache = {});
// Launches launch k of `loaded` on `grid` blocks (asynchronously) with the kernels' arguments:
// rows, chunks, then the buffers (inputs, outputs, scratch).
void launchCudaKernel(const LoadedCudaProgram& loaded, std::size_t k, unsigned grid, long long rows,
                      long long chunks, const std::vector<CUdeviceptr>& buffers);

// Layer and einsum entry points (host tensors in and out, as cpuLayerForward and friends).
// Throw UserError with cudaUnavailableReason() when there is no usable GPU.
Tensor cudaLayerForward(const ir::LayerProgram& layer, const TensorMap& params, const Tensor& x,
                        const CudaOptions& options = {});
LayerGradients cudaLayerBackward(const ir::LayerProgram& layer, const TensorMap& params,
                                 const Tensor& x, const Tensor& dy, const CudaOptions& options = {});
Tensor cudaEinsum(const BoundEinsum& einsum, const ContractionPlan& plan,
                  const std::vector<const Tensor*>& operands, DType dtype,
                  const CudaOptions& options = {});

struct CudaLayerTiming {
  double milliseconds = 0;  // per forward (or forward+backward) pass, median of the repeats
  std::string device;
  std::string launchPlan;   // of the forward program (and the backward one when timed)
};

// Times `layer` on `rows` rows with device-resident data (muP init, seed 1): forward, or forward
// then backward; `repeats` timed passes after warm-up, measured with CUDA events.
CudaLayerTiming cudaTimeLayer(const ir::LayerProgram& layer, int64_t rows, Precision precision,
                              bool backward, int repeats);

}  // namespace einjit::cuda
