// The project's deterministic random generator: xoshiro256** seeded through splitmix64, uniforms
// from the top 53 bits, normals by Box-Muller (both outputs used, in order), all written out
// here because the <random> distributions are implementation-defined; a seed gives the same
// numbers on every platform (up to the last-ulp behaviour of std::log / cos / sin). Used for
// parameter initialisation (runtime/reference/Init.cpp, models/) and token sampling.
#pragma once

#include <cstdint>
#include <string>

namespace einjit {

// One step of splitmix64 on `state` (advanced in place).
uint64_t splitmix64(uint64_t& state);
// FNV-1a hash of `text`.
uint64_t fnv1a(const std::string& text);
// FNV-1a of `name` mixed with `seed`: independent seeds for named streams.
uint64_t streamSeed(uint64_t seed, const std::string& name);

class Random {
 public:
  explicit Random(uint64_t seed);

  uint64_t nextBits();
  double uniform();  // [0, 1)
  double normal();   // N(0, 1)

 private:
  uint64_t s_[4] = {};
  double spare_ = 0;
  bool hasSpare_ = false;
};

}  // namespace einjit
