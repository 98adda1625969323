#include "tools/Target.h"

#include "compiler/cuda/CudaDriver.h"
#include "einjit/error.h"

namespace einjit::cli {

Target resolveTarget(const std::string& name) {
  if (name == "ref") return Target::Ref;
  if (name == "cpu") return Target::Cpu;
  if (name == "cuda") return Target::Cuda;
  throw UserError("unknown target '" + name + "' (expected ref, cpu or cuda)");
}

void requireRunnable(Target target) {
  if (target == Target::Cuda && !cuda::cudaAvailable()) throw UserError(cuda::cudaUnavailableReason());
}

}  // namespace einjit::cli
