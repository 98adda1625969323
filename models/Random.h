// A small deterministic random generator for the models: parameter init outside the structured
// layers (embeddings), per-layer seeds, and token sampling. xoshiro256** seeded through
// splitmix64, uniforms from the top 53 bits, normals by Box-Muller, all written out here (the
// <random> distributions are implementation-defined), so a seed gives the same numbers everywhere.
#pragma once

#include <cstdint>
#include <string>

namespace einjit::models {

// FNV-1a of `text` mixed with `seed`: independent seeds for named streams.
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

}  // namespace einjit::models
