// Deterministic parameter initialisation.
//
// Each parameter draws from its own stream, keyed by the seed and the parameter's name, so adding
// or removing a parameter never changes the others. The generator (runtime/tensor/Random.h) gives
// the same numbers on every platform.
#include <cmath>
#include <cstdint>
#include <string>

#include "einjit/error.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/tensor/Random.h"

namespace einjit {
namespace {

// The stream of parameter `name`: the seed's splitmix64 output mixed with the name's hash.
Random parameterStream(uint64_t seed, const std::string& name) {
  uint64_t mixer = seed;
  return Random(splitmix64(mixer) ^ fnv1a(name));
}

}  // namespace

TensorMap initLayerParams(const ir::LayerProgram& program, uint64_t seed, DType dtype,
                          bool zeroLast) {
  TensorMap params;
  for (const ir::Parameter& param : program.params) {
    Tensor tensor(dtype, param.shape);
    if (param.isScalarGain) {
      for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, 1.0);
    } else if (!(zeroLast && param.zeroInitIfResidual)) {
      if (!(param.initStd >= 0) || !std::isfinite(param.initStd))
        throw UserError("parameter '" + param.name + "' of " + program.spec +
                        " has an invalid init std " + std::to_string(param.initStd));
      Random stream = parameterStream(seed, param.name);
      for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, param.initStd * stream.normal());
    }
    params[param.name] = std::move(tensor);
  }
  return params;
}

}  // namespace einjit
