// Text generation from a GPT: autoregressive sampling with temperature and top-k, reproducible
// for a seed (the generator is runtime/tensor/Random.h, the same on every platform).
#pragma once

#include <cstdint>
#include <vector>

#include "models/Gpt.h"

namespace einjit::models {

struct SampleOptions {
  int64_t tokens = 200;      // how many tokens to generate
  double temperature = 1.0;  // 0: always the most likely token (greedy)
  int64_t topK = 0;          // > 0: sample among the k most likely tokens only
  uint64_t seed = 0;
};

// Continues `prompt` (at least one token; only its last `context` tokens are seen) and returns
// the generated tokens. UserError for an empty prompt or bad options.
std::vector<int32_t> sampleTokens(const Gpt& model, const std::vector<int32_t>& prompt,
                                  const SampleOptions& options);

}  // namespace einjit::models
