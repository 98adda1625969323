#include "models/Sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "einjit/error.h"
#include "runtime/tensor/Random.h"

namespace einjit::models {
namespace {

void checkOptions(const SampleOptions& o) {
  if (o.tokens < 0) throw UserError("the number of tokens to generate must be >= 0, got " + std::to_string(o.tokens));
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw UserError("temperature must be a finite number >= 0, got " + std::to_string(o.temperature));
  if (o.topK < 0) throw UserError("top-k must be >= 0 (0: no limit), got " + std::to_string(o.topK));
}

// Picks a token from the logits of the last position.
int32_t pick(const Tensor& logits, int64_t row, const SampleOptions& o, Random& random) {
  const int64_t vocab = logits.shape()[1];
  std::vector<double> values(static_cast<size_t>(vocab));
  for (int64_t j = 0; j < vocab; ++j) values[static_cast<size_t>(j)] = logits.get(row * vocab + j);
  // Candidates by descending logit, ties by token id, so the order is fully determined.
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)]; });
  if (o.temperature == 0) return order[0];
  const size_t keep = o.topK > 0 ? std::min<size_t>(static_cast<size_t>(o.topK), order.size()) : order.size();
  const double top = values[static_cast<size_t>(order[0])];
  std::vector<double> weights(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    weights[i] = std::exp((values[static_cast<size_t>(order[i])] - top) / o.temperature);
    total += weights[i];
  }
  const double u = random.uniform() * total;
  double cumulative = 0;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += weights[i];
    if (u < cumulative) return order[i];
  }
  return order[keep - 1];
}

}  // namespace

std::vector<int32_t> sampleTokens(const Gpt& model, const std::vector<int32_t>& prompt,
                                  const SampleOptions& options) {
  checkOptions(options);
  if (prompt.empty()) throw UserError("the prompt must hold at least one token");
  const int64_t context = model.config().context;
  std::vector<int32_t> sequence = prompt;
  std::vector<int32_t> generated;
  Random random(streamSeed(options.seed, "sample"));
  rt::Tape tape;
  tape.setRecording(false);
  for (int64_t n = 0; n < options.tokens; ++n) {
    const int64_t seq = std::min<int64_t>(context, static_cast<int64_t>(sequence.size()));
    std::vector<int32_t> window(sequence.end() - seq, sequence.end());
    rt::Var logits = model.logits(tape, window, 1, seq);
    const int32_t next = pick(logits->value, seq - 1, options, random);
    sequence.push_back(next);
    generated.push_back(next);
  }
  return generated;
}

}  // namespace einjit::models
