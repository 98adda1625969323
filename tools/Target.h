// Execution targets named on the command line (--target ref|cpu|cuda).
#pragma once

#include <string>

namespace einjit::cli {

enum class Target { Ref, Cpu, Cuda };

inline const char* kTargetHelp =
    "where to execute: ref (reference executor), cpu (MLIR JIT for this CPU, the default), "
    "cuda (not available yet)";

// Resolves a --target value. Throws UserError for targets that cannot run in this build.
Target resolveTarget(const std::string& name);

}  // namespace einjit::cli
