// Execution targets named on the command line (--target ref|cpu|cuda).
#pragma once

#include <string>

namespace einjit::cli {

enum class Target { Ref, Cpu, Cuda };

inline const char* kTargetHelp =
    "where to execute: ref (reference executor), cpu (MLIR JIT for this CPU, the default), "
    "cuda (NVRTC-compiled kernels on the first NVIDIA GPU)";

// Resolves a --target value. Throws UserError for unknown names.
Target resolveTarget(const std::string& name);

// Throws UserError (one line: why there is no GPU) unless `target` can run here. cuda needs a
// GPU; compiling for cuda (einjit compile) does not, so it does not call this.
void requireRunnable(Target target);

}  // namespace einjit::cli
