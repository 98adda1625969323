// Runs the host flavour of the CUDA renderer (emitHostSimulation): the generated kernels are
// compiled with the system C++ compiler into a shared library and launched in the order of the
// launch descriptors, block by block and phase by phase, as the GPU would.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compiler/cuda/CudaEmitter.h"
#include "compiler/kernel/KernelProgram.h"
#include "einjit/tensor.h"

namespace einjit::cuda::testing {

// Outputs of `program` (as float64 tensors) for `rows` rows and host `inputs`, computed by the
// generated kernels at `options.precision`. Output and scratch buffers start filled with NaN,
// so an element a kernel forgets to write shows. Throws std::runtime_error if the generated
// code does not compile.
std::vector<Tensor> simulateOnHost(const KernelProgram& program, const EmitOptions& options,
                                   int64_t rows, const std::vector<const Tensor*>& inputs);

// Compiles host C++ `source` (a host simulation flavour) with the system C++ compiler into a
// shared library in a fresh temporary directory; returns the library's path. Throws
// std::runtime_error if it does not compile.
std::string compileHostLibrary(const std::string& source);

// A host simulation flavour compiled (compileHostLibrary) and loaded; its files are removed once
// loaded. Throws std::runtime_error when it does not compile or load.
class HostLibrary {
 public:
  explicit HostLibrary(const std::string& source);
  ~HostLibrary();
  HostLibrary(const HostLibrary&) = delete;
  HostLibrary& operator=(const HostLibrary&) = delete;

  // The address of `name` (std::runtime_error when the library has none).
  void* symbol(const std::string& name) const;
  // What went wrong in the last launch (threads that skipped a barrier), or null.
  const char* problem() const { return problem_(); }

 private:
  void* handle_ = nullptr;
  const char* (*problem_)() = nullptr;
};

}  // namespace einjit::cuda::testing
