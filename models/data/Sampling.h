// Platform-independent random numbers for the data sets. std::mt19937_64 is specified exactly by
// the C++ standard, but the standard distributions are not (libstdc++ and libc++ give different
// numbers), so the mappings to integers and normals are written out here.
#pragma once

#include <cstdint>
#include <random>

namespace einjit::data {

// A well-mixed 64-bit seed from a base seed and a stream index (splitmix64 of both), so that
// e.g. step 7's batch is independent of step 8's and of other streams.
uint64_t deriveSeed(uint64_t seed, uint64_t stream);

// Uniform integer in [0, bound) (bound >= 1) by rejection: draws below the largest multiple of
// bound that fits in 2^64, then takes the remainder, so every value is exactly equally likely.
uint64_t uniformBelow(std::mt19937_64& rng, uint64_t bound);

// Uniform double in [0, 1) from the top 53 bits of one draw.
double uniformUnit(std::mt19937_64& rng);

// Standard normal by the Box-Muller transform (one pair of uniforms per value; the second value
// of the pair is discarded to keep the generator state a simple function of the count drawn).
double standardNormal(std::mt19937_64& rng);

}  // namespace einjit::data
