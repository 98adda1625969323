#include "models/data/Sampling.h"

#include <cmath>
#include <numbers>

namespace einjit::data {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t deriveSeed(uint64_t seed, uint64_t stream) {
  return splitmix64(splitmix64(seed) ^ stream);
}

uint64_t uniformBelow(std::mt19937_64& rng, uint64_t bound) {
  // (2^64 - bound) % bound == 2^64 % bound: the draws at or above 2^64 - that are rejected.
  const uint64_t rejected = (0 - bound) % bound;
  const uint64_t limit = 0 - rejected;  // 2^64 - rejected, as 0 when rejected == 0
  for (;;) {
    const uint64_t x = rng();
    if (rejected == 0 || x < limit) return x % bound;
  }
}

double uniformUnit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

double standardNormal(std::mt19937_64& rng) {
  const double u1 = 1.0 - uniformUnit(rng);  // (0, 1]: log is finite
  const double u2 = uniformUnit(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace einjit::data
