// Pieces the models share: LayerNorm parameters, parameter lists, per-layer seeds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/ops/StructuredLinear.h"

namespace einjit::models {

// LayerNorm's gamma (init 1) and beta (init 0), named name.gamma / name.beta.
struct LayerNormParams {
  rt::Var gamma, beta;
};
LayerNormParams makeLayerNorm(const std::string& name, int64_t width, DType dtype);

// A bias-free structured linear layer named `name` whose init seed is derived from (seed, name),
// so every layer draws different weights. A bare structure name ("dense", "kron") means its
// defaults, as "dense()".
rt::StructuredLinear makeLinear(const std::string& name, const std::string& spec, int64_t dIn,
                                int64_t dOut, bool zeroLast, uint64_t seed, DType dtype,
                                int64_t muPBaseWidth);

// Appends a LayerNorm's gamma and beta (LR multiplier 1, no weight decay: rank 1), or a linear
// layer's parameters, to `params`.
void appendParameters(std::vector<rt::ParameterInfo>& params, const LayerNormParams& ln);
void appendParameters(std::vector<rt::ParameterInfo>& params, const rt::StructuredLinear& layer);

// Sum of numel over parameters.
int64_t parameterCount(const std::vector<rt::ParameterInfo>& params);

}  // namespace einjit::models
