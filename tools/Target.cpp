#include "tools/Target.h"

#include "einjit/error.h"

namespace einjit::cli {

Target resolveTarget(const std::string& name) {
  if (name == "ref") return Target::Ref;
  if (name == "cpu") return Target::Cpu;
  if (name == "cuda")
    throw UserError("target 'cuda' is not available in this build (CUDA code generation is not implemented yet)");
  throw UserError("unknown target '" + name + "' (expected ref, cpu or cuda)");
}

}  // namespace einjit::cli
