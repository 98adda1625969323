// A token stream split into training and validation parts, serving random windows for
// next-token prediction.
//
// The last 10% of the tokens (floor(n / 10)) are the validation split, the rest the training
// split: deterministic and contiguous, so validation text is never seen in training windows.
// A batch is B windows of T + 1 consecutive tokens, each starting at a position drawn uniformly
// from the split; inputs are the first T tokens of each window, targets the last T.
// The draw for (split, step) comes from std::mt19937_64 seeded with deriveSeed(seed, ...) and
// the rejection mapping of Sampling.h, so it is the same on every platform and does not depend
// on which batches were drawn before (a resumed run gets the same batches).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace einjit::data {

enum class Split { Train, Validation };

// B x T token ids, row-major (row b = window b).
struct TokenBatch {
  int64_t batchSize = 0, context = 0;
  std::vector<int32_t> inputs, targets;
};

class TextDataset {
 public:
  // `tokens`: the whole stream; `name` names it in errors (a file path, say). Throws UserError
  // when either split has fewer than context + 1 tokens or context < 1.
  TextDataset(std::vector<int32_t> tokens, int64_t context, uint64_t seed, std::string name);

  // Reads `path` and encodes it with CharTokenizer. Throws UserError naming the file when it is
  // missing, unreadable, empty, has a character outside the vocabulary, or is too short.
  static TextDataset loadCharText(const std::string& path, int64_t context, uint64_t seed);

  int64_t context() const { return context_; }
  const std::vector<int32_t>& tokens(Split split) const;

  // The batch of `step` (any value); throws UserError for batchSize < 1 or a batch of more
  // than 2^30 tokens.
  TokenBatch batch(Split split, int64_t batchSize, uint64_t step) const;

 private:
  std::string name_;
  int64_t context_ = 0;
  uint64_t seed_ = 0;
  std::vector<int32_t> train_, validation_;
};

}  // namespace einjit::data
