// The einjit C++ API: build a GPT whose linear layers are any structure, train it step by step,
// run it, and load what `einjit train` saved. Everything behind it (JIT-compiled kernels,
// autodiff, AdamW with muP learning rates) stays inside the library.
//
//   einjit::GptOptions options;
//   options.structure = "btt(rank=4)";
//   einjit::GptModel model(options);
//   double loss = model.trainStep(tokens, targets, batch, seq);
//   std::vector<int32_t> next = model.generate(prompt, 100);
//
// Mistakes (a bad structure spec, tokens outside the vocabulary, wrong sizes, a bad checkpoint)
// throw einjit::UserError (einjit/error.h) with a message saying what was expected.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "einjit/error.h"

namespace einjit {

struct GptOptions {
  int64_t vocab = 96;  // the char-level vocabulary of encodeChars
  int64_t context = 128;
  int64_t layers = 4;
  int64_t heads = 4;
  int64_t width = 256;  // d_model
  std::string structure = "dense";               // "btt(rank=4)", "monarch(blocks=4)", "lowrank(rank=16)", ...
  std::string structuredLayers = "all_but_last";  // all | all_but_last | ffn
  bool qkLayerNorm = false;
  double learningRate = 3e-3;  // AdamW base rate, times each tensor's muP multiplier
  double weightDecay = 0.0;
  double clipNorm = 1.0;
  uint64_t seed = 0;
  // "cuda": trainStep runs on the GPU (parameters, gradients and AdamW's state there); logits
  // and generate use the parameters as of the last step. "cpu" otherwise.
  std::string device = "cpu";
  std::string precision = "f32";  // cuda: "bf16" computes in bf16 over f32 master weights
};

class GptModel {
 public:
  explicit GptModel(const GptOptions& options);
  // The model of a checkpoint written by `einjit train --model gpt2` (its weights; a fresh
  // optimiser).
  static GptModel fromCheckpoint(const std::string& path);
  ~GptModel();
  GptModel(GptModel&&) noexcept;
  GptModel& operator=(GptModel&&) noexcept;

  // One AdamW step of next-token prediction. tokens and targets hold batch x seq ids, row-major
  // (targets[i] is the token after tokens[i]); seq <= context. Returns the loss before the step.
  double trainStep(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets, int64_t batch,
                   int64_t seq);
  // Logits (batch * seq rows of vocab values, row-major); records nothing for training.
  std::vector<float> logits(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq) const;
  // `count` tokens sampled after `prompt` (temperature 0: greedy; topK 0: no limit).
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, int64_t count, double temperature = 1.0,
                                int64_t topK = 0, uint64_t seed = 0) const;

  int64_t parameterCount() const;
  int64_t macsPerExample() const;  // forward MACs of one sequence of `context` tokens

 private:
  struct Impl;
  explicit GptModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The char-level vocabulary: '\n' = 0, printable ASCII 32..126 = 1..95.
std::vector<int32_t> encodeChars(const std::string& text);
std::string decodeChars(const std::vector<int32_t>& ids);

}  // namespace einjit
