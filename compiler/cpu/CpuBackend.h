// The CPU target: compiles kernel programs once (memory and disk cache), runs them on both
// cores, and executes whole layers (forward and backward) and classic einsums with them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compiler/kernel/KernelProgram.h"
#include "compiler/mlir/CpuCodegen.h"
#include "runtime/reference/ReferenceExecutor.h"

namespace einjit::cpu {

struct CacheOptions {
  // Directory of the disk cache; empty: $EINJIT_CACHE_DIR, else $XDG_CACHE_HOME/einjit, else
  // ~/.cache/einjit. Entries are verified (header, length, checksum, key) before use; a bad
  // entry is rebuilt. Writers publish entries atomically, so processes can share a directory.
  std::string directory;
  bool useDisk = true;
};

struct CompileStats {
  bool memoryHit = false, diskHit = false;
  double milliseconds = 0;  // time spent in compileKernel
};

// Compiled code for `program`, from memory, disk or a fresh compile (in that order).
std::shared_ptr<const LoadedKernel> compileKernel(const KernelProgram& program,
                                                  const CacheOptions& cache = {},
                                                  CompileStats* stats = nullptr);

// Runs a compiled kernel on tensors (inputs, then outputs with the right shapes and dtype).
// Work is split by rows over the thread pool; outputs without a row axis (parameter gradients)
// are summed from per-thread partial results.
void runKernel(const KernelProgram& program, const LoadedKernel& kernel, int64_t rows,
               const std::vector<const Tensor*>& inputs, const std::vector<Tensor*>& outputs);

// Runs a training forward (trainingKernels(...).forward) for `rows` rows: writes y (allocated
// by the caller) and returns the saved values, in the order the training backward takes them
// after dy.
std::vector<Tensor> runTrainingForward(const KernelProgram& forward, const LoadedKernel& kernel, int64_t rows,
                                       const std::vector<const Tensor*>& inputs, Tensor& y);

// Layer and einsum entry points with the same contracts as the reference executor.
Tensor cpuLayerForward(const ir::LayerProgram& layer, const TensorMap& params, const Tensor& x);
LayerGradients cpuLayerBackward(const ir::LayerProgram& layer, const TensorMap& params,
                                const Tensor& x, const Tensor& dy);
Tensor cpuEinsum(const BoundEinsum& einsum, const ContractionPlan& plan,
                 const std::vector<const Tensor*>& operands, DType dtype);

}  // namespace einjit::cpu
