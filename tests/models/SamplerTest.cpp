// Sampling from a GPT: reproducible for a seed, greedy at temperature 0, limited by top-k.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "einjit/error.h"
#include "models/Sampler.h"

namespace einjit::models {
namespace {

GptConfig tinyGpt() {
  GptConfig c;
  c.context = 8;
  c.nLayer = 1;
  c.nHead = 2;
  c.dModel = 16;
  return c;
}

TEST(Sampler, SameSeedSameTextOtherSeedOtherText) {
  const Gpt model(tinyGpt());
  SampleOptions o;
  o.tokens = 40;  // longer than the context: the window slides
  o.seed = 3;
  const std::vector<int32_t> a = sampleTokens(model, {1, 2, 3}, o);
  EXPECT_EQ(a.size(), 40u);
  EXPECT_EQ(sampleTokens(model, {1, 2, 3}, o), a);
  o.seed = 4;
  EXPECT_NE(sampleTokens(model, {1, 2, 3}, o), a);
}

TEST(Sampler, TemperatureZeroAndTopKLimitTheChoice) {
  // The zero-initialised head gives equal logits: greedy picks the first token, top-k the first k.
  const Gpt model(tinyGpt());
  SampleOptions o;
  o.tokens = 30;
  o.temperature = 0;
  EXPECT_EQ(sampleTokens(model, {5}, o), std::vector<int32_t>(30, 0));
  o.temperature = 1;
  o.topK = 3;
  const std::vector<int32_t> limited = sampleTokens(model, {5}, o);
  const std::set<int32_t> seen(limited.begin(), limited.end());
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1, 2}));
  o.topK = 0;
  const std::vector<int32_t> free = sampleTokens(model, {5}, o);
  EXPECT_GT(std::set<int32_t>(free.begin(), free.end()).size(), 10u);
}

TEST(Sampler, RejectsBadOptions) {
  const Gpt model(tinyGpt());
  SampleOptions o;
  EXPECT_THROW(sampleTokens(model, {}, o), UserError);
  o.temperature = -1;
  EXPECT_THROW(sampleTokens(model, {1}, o), UserError);
  o.temperature = 1;
  o.topK = -2;
  EXPECT_THROW(sampleTokens(model, {1}, o), UserError);
  o.topK = 0;
  EXPECT_THROW(sampleTokens(model, {96}, o), UserError);
}

}  // namespace
}  // namespace einjit::models
