#include "models/ModelParts.h"

#include "runtime/tensor/Random.h"

namespace einjit::models {

LayerNormParams makeLayerNorm(const std::string& name, int64_t width, DType dtype) {
  Tensor ones(dtype, {width});
  for (int64_t i = 0; i < width; ++i) ones.set(i, 1.0);
  return {rt::parameter(std::move(ones), name + ".gamma"),
          rt::parameter(Tensor(dtype, {width}), name + ".beta")};
}

rt::StructuredLinear makeLinear(const std::string& name, const std::string& spec, int64_t dIn,
                                int64_t dOut, bool zeroLast, uint64_t seed, DType dtype,
                                int64_t muPBaseWidth) {
  // A template without arguments may be written as a bare name: "dense" = "dense()".
  const bool bareName = !spec.empty() && spec.find_first_of("()") == std::string::npos;
  return rt::StructuredLinear(name, bareName ? spec + "()" : spec, dIn, dOut, /*bias=*/false, streamSeed(seed, name), dtype,
                              zeroLast, muPBaseWidth);
}

void appendParameters(std::vector<rt::ParameterInfo>& params, const LayerNormParams& ln) {
  params.push_back({ln.gamma, 1.0, false});
  params.push_back({ln.beta, 1.0, false});
}

void appendParameters(std::vector<rt::ParameterInfo>& params, const rt::StructuredLinear& layer) {
  params.insert(params.end(), layer.parameters().begin(), layer.parameters().end());
}

int64_t parameterCount(const std::vector<rt::ParameterInfo>& params) {
  int64_t count = 0;
  for (const rt::ParameterInfo& p : params) count += p.var->value.numel();
  return count;
}

}  // namespace einjit::models
