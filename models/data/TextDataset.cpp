#include "models/data/TextDataset.h"

#include <fmt/format.h>

#include <fstream>
#include <random>
#include <sstream>

#include "einjit/error.h"
#include "models/data/CharTokenizer.h"
#include "models/data/Sampling.h"

namespace einjit::data {

namespace {

// A bound on one batch (8 GiB of inputs and targets): larger requests are mistakes.
constexpr int64_t kMaxBatchTokens = int64_t{1} << 30;

}  // namespace

TextDataset::TextDataset(std::vector<int32_t> tokens, int64_t context, uint64_t seed,
                         std::string name)
    : name_(std::move(name)), context_(context), seed_(seed) {
  if (context < 1) {
    throw UserError(
        fmt::format("{}: the context length must be at least 1, got {}", name_, context));
  }
  const auto total = static_cast<int64_t>(tokens.size());
  const int64_t validationSize = total / 10;
  const int64_t trainSize = total - validationSize;
  if (trainSize < context + 1 || validationSize < context + 1) {
    throw UserError(fmt::format(
        "{}: {} tokens give a training split of {} and a validation split (the last 10%) of {} "
        "tokens; each needs at least context + 1 = {}",
        name_, total, trainSize, validationSize, context + 1));
  }
  train_.assign(tokens.begin(), tokens.begin() + trainSize);
  validation_.assign(tokens.begin() + trainSize, tokens.end());
}

TextDataset TextDataset::loadCharText(const std::string& path, int64_t context, uint64_t seed) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(fmt::format("cannot open the text file '{}'", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) throw UserError(fmt::format("cannot read the text file '{}'", path));
  const std::string text = contents.str();
  if (text.empty()) throw UserError(fmt::format("the text file '{}' is empty", path));
  std::vector<int32_t> tokens;
  try {
    tokens = CharTokenizer().encode(text);
  } catch (const UserError& e) {
    throw UserError(fmt::format("'{}': {}", path, e.what()));
  }
  return TextDataset(std::move(tokens), context, seed, fmt::format("'{}'", path));
}

const std::vector<int32_t>& TextDataset::tokens(Split split) const {
  return split == Split::Train ? train_ : validation_;
}

TokenBatch TextDataset::batch(Split split, int64_t batchSize, uint64_t step) const {
  if (batchSize < 1) {
    throw UserError(fmt::format("{}: the batch size must be at least 1, got {}", name_, batchSize));
  }
  if (batchSize > kMaxBatchTokens / context_) {
    throw UserError(fmt::format("{}: a batch of {} x {} tokens is larger than the limit of {}",
                                name_, batchSize, context_, kMaxBatchTokens));
  }
  const std::vector<int32_t>& source = tokens(split);
  // Streams: 2 * step for training batches, 2 * step + 1 for validation batches.
  std::mt19937_64 rng(deriveSeed(seed_, 2 * step + (split == Split::Train ? 0 : 1)));
  const auto starts = static_cast<uint64_t>(source.size()) - static_cast<uint64_t>(context_);
  TokenBatch out{batchSize, context_, {}, {}};
  out.inputs.reserve(batchSize * context_);
  out.targets.reserve(batchSize * context_);
  for (int64_t b = 0; b < batchSize; ++b) {
    const auto start = static_cast<std::ptrdiff_t>(uniformBelow(rng, starts));
    out.inputs.insert(out.inputs.end(), source.begin() + start, source.begin() + start + context_);
    out.targets.insert(out.targets.end(), source.begin() + start + 1,
                       source.begin() + start + context_ + 1);
  }
  return out;
}

}  // namespace einjit::data
