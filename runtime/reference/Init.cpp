// Deterministic parameter initialisation.
//
// Each parameter draws from its own stream, keyed by the seed and the parameter's name, so adding
// or removing a parameter never changes the others. The generator is xoshiro256** seeded through
// splitmix64, and normals come from Box-Muller (both outputs used, in order), written out here
// rather than taken from <random>, whose distributions are implementation-defined. The only
// platform dependence left is the last-ulp behaviour of std::log / std::cos / std::sin.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>

#include "einjit/error.h"
#include "runtime/reference/ReferenceExecutor.h"

namespace einjit {
namespace {

uint64_t splitmix64(uint64_t& state) {
  state += 0x9E3779B97F4A7C15ull;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& text) {
  uint64_t hash = 0xCBF29CE484222325ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001B3ull;
  }
  return hash;
}

uint64_t rotateLeft(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

class NormalStream {
 public:
  NormalStream(uint64_t seed, const std::string& name) {
    uint64_t mixer = seed;
    uint64_t state = splitmix64(mixer) ^ fnv1a(name);
    for (uint64_t& word : s_) word = splitmix64(state);
  }

  double next() {
    if (hasSpare_) {
      hasSpare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform();  // in (0, 1]: log(u1) is finite
    const double u2 = uniform();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 2.0 * std::numbers::pi * u2;
    spare_ = radius * std::sin(angle);
    hasSpare_ = true;
    return radius * std::cos(angle);
  }

 private:
  // xoshiro256**
  uint64_t nextBits() {
    const uint64_t result = rotateLeft(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotateLeft(s_[3], 45);
    return result;
  }
  double uniform() { return static_cast<double>(nextBits() >> 11) * 0x1.0p-53; }  // [0, 1)

  uint64_t s_[4] = {};
  double spare_ = 0;
  bool hasSpare_ = false;
};

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
      NormalStream stream(seed, param.name);
      for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, param.initStd * stream.next());
    }
    params[param.name] = std::move(tensor);
  }
  return params;
}

}  // namespace einjit
