// The models' structure: parameter names, shapes, muP groups, zero-initialised cores, MAC counts
// (counted by hand here) and input checks.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "frontend/structures/Structures.h"
#include "models/Gpt.h"
#include "models/MlpClassifier.h"
#include "models/ResidualMlp.h"

namespace einjit::models {
namespace {

GptConfig tinyGpt() {
  GptConfig c;
  c.vocab = 96;
  c.context = 16;
  c.nLayer = 2;
  c.nHead = 2;
  c.dModel = 32;
  return c;
}

std::vector<std::string> names(const std::vector<rt::ParameterInfo>& params) {
  std::vector<std::string> out;
  for (const rt::ParameterInfo& p : params) out.push_back(p.var->name);
  return out;
}

bool allZero(const Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i)
    if (t.get(i) != 0) return false;
  return true;
}

const rt::ParameterInfo& find(const std::vector<rt::ParameterInfo>& params, const std::string& name) {
  for (const rt::ParameterInfo& p : params)
    if (p.var->name == name) return p;
  throw std::runtime_error("no parameter " + name);
}

TEST(Gpt, DenseParameterNamesShapesAndOrderFollowTheContract) {
  GptConfig c = tinyGpt();
  c.nLayer = 1;
  c.qkLayerNorm = true;
  const Gpt model(c);
  const std::vector<std::string> expected = {
      "wte", "wpe", "blocks.0.ln1.gamma", "blocks.0.ln1.beta", "blocks.0.attn.q.W", "blocks.0.attn.k.W",
      "blocks.0.attn.v.W", "blocks.0.attn.q_ln.gamma", "blocks.0.attn.q_ln.beta", "blocks.0.attn.k_ln.gamma",
      "blocks.0.attn.k_ln.beta", "blocks.0.attn.proj.W", "blocks.0.ln2.gamma", "blocks.0.ln2.beta",
      "blocks.0.mlp.fc.W", "blocks.0.mlp.proj.W", "ln_f.gamma", "ln_f.beta", "head.W"};
  EXPECT_EQ(names(model.parameters()), expected);
  const auto& p = model.parameters();
  EXPECT_EQ(find(p, "wte").var->value.shape(), (Shape{96, 32}));
  EXPECT_EQ(find(p, "wpe").var->value.shape(), (Shape{16, 32}));
  EXPECT_EQ(find(p, "blocks.0.attn.q_ln.gamma").var->value.shape(), (Shape{16}));
  EXPECT_EQ(find(p, "blocks.0.mlp.fc.W").var->value.shape(), (Shape{32, 128}));
  EXPECT_EQ(find(p, "blocks.0.mlp.proj.W").var->value.shape(), (Shape{128, 32}));
  EXPECT_EQ(find(p, "head.W").var->value.shape(), (Shape{32, 96}));
  // wte, wpe, 6 linears, 3 LayerNorms of 32, 2 of 16.
  EXPECT_EQ(model.parameterCount(), 96 * 32 + 16 * 32 + 4 * 32 * 32 + 2 * 32 * 128 + 3 * 64 + 2 * 32 + 32 * 96);
}

TEST(Gpt, LayerSelectionDecidesWhichLinearsAreStructured) {
  GptConfig c = tinyGpt();
  c.nLayer = 1;
  c.structure = "btt(rank=2)";
  auto structured = [&](LayerSelection layers) {
    c.layers = layers;
    std::set<std::string> out;
    for (const std::string& n : names(Gpt(c).parameters()))
      if (n.size() > 3 && n.substr(n.size() - 3) == ".W0") out.insert(n.substr(0, n.size() - 3));
    return out;
  };
  const std::set<std::string> attention = {"blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v", "blocks.0.attn.proj"};
  std::set<std::string> all = attention;
  all.insert({"blocks.0.mlp.fc", "blocks.0.mlp.proj"});
  std::set<std::string> allButLast = all;
  all.insert("head");
  EXPECT_EQ(structured(LayerSelection::All), all);
  EXPECT_EQ(structured(LayerSelection::AllButLast), allButLast);
  EXPECT_EQ(structured(LayerSelection::Ffn), (std::set<std::string>{"blocks.0.mlp.fc", "blocks.0.mlp.proj"}));
}

TEST(Gpt, MupGroupsAndZeroInitFollowTheIR) {
  GptConfig c = tinyGpt();
  c.structure = "btt(rank=2)";
  const Gpt model(c);
  const auto& p = model.parameters();
  const ir::LayerProgram fc = buildLayer(parseStructureSpec("btt(rank=2)"), 32, 128);
  EXPECT_DOUBLE_EQ(find(p, "blocks.1.mlp.fc.W0").lrMultiplier, fc.findParam("W0")->lrMult);
  EXPECT_DOUBLE_EQ(find(p, "blocks.1.mlp.fc.W1").lrMultiplier, fc.findParam("W1")->lrMult);
  EXPECT_NE(fc.findParam("W0")->lrMult, 1.0);
  EXPECT_TRUE(find(p, "blocks.1.mlp.fc.W0").weightDecay);
  EXPECT_FALSE(find(p, "blocks.0.ln1.gamma").weightDecay);
  EXPECT_FALSE(find(p, "ln_f.beta").weightDecay);
  EXPECT_DOUBLE_EQ(find(p, "ln_f.beta").lrMultiplier, 1.0);
  EXPECT_DOUBLE_EQ(find(p, "wte").lrMultiplier, 1.0);

  // The last core of residual projections and the head is zero, the first is not.
  for (const std::string layer : {"blocks.0.attn.proj", "blocks.1.mlp.proj", "head"}) {
    EXPECT_TRUE(allZero(find(p, layer + ".W1").var->value)) << layer;
    EXPECT_FALSE(allZero(find(p, layer + ".W0").var->value)) << layer;
  }
  EXPECT_FALSE(allZero(find(p, "blocks.0.attn.q.W1").var->value));
  // Different layers draw different weights.
  EXPECT_NE(find(p, "blocks.0.attn.q.W0").var->value.get(0), find(p, "blocks.0.attn.k.W0").var->value.get(0));

  // wte ~ N(0, 0.02^2).
  const Tensor& wte = find(p, "wte").var->value;
  double sum = 0, squares = 0;
  for (int64_t i = 0; i < wte.numel(); ++i) {
    sum += wte.get(i);
    squares += wte.get(i) * wte.get(i);
  }
  const double n = static_cast<double>(wte.numel());
  EXPECT_NEAR(sum / n, 0.0, 0.002);
  EXPECT_NEAR(std::sqrt(squares / n), 0.02, 0.001);
}

TEST(Gpt, MacsPerExampleCountLinearsAndTheCausalAttention) {
  const Gpt model(tinyGpt());
  // Per token: per layer q, k, v, proj (32x32 each) + fc, proj (32x128 each) = 12 * 32^2; head 32 * 96.
  const int64_t perToken = 2 * 12 * 32 * 32 + 32 * 96;
  // Attention per layer: q.k and p.v over the causal triangle, d * T(T+1)/2 each.
  const int64_t attention = 2 * 2 * 32 * (16 * 17 / 2);
  EXPECT_EQ(model.macsPerExample(), 16 * perToken + attention);
}

TEST(Gpt, ZeroHeadGivesUniformLogits) {
  const Gpt model(tinyGpt());
  rt::Tape tape;
  std::vector<int32_t> tokens(2 * 5);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i * 7 % 96);
  const rt::Var loss = model.loss(tape, tokens, tokens, 2, 5);
  EXPECT_NEAR(loss->value.get(0), std::log(96.0), 1e-5);
}

TEST(Gpt, RejectsBadConfigsAndInputs) {
  GptConfig c = tinyGpt();
  c.nHead = 3;
  EXPECT_THROW(Gpt{c}, UserError);
  c = tinyGpt();
  c.structure = "btt(rnak=2)";
  EXPECT_THROW(Gpt{c}, UserError);
  const Gpt model(tinyGpt());
  rt::Tape tape;
  std::vector<int32_t> tokens(17, 1);
  EXPECT_THROW(model.logits(tape, tokens, 1, 17), UserError);  // longer than the context
  EXPECT_THROW(model.logits(tape, tokens, 2, 8), UserError);   // 17 tokens for 2 x 8
  std::vector<int32_t> bad(4, 96);
  EXPECT_THROW(model.logits(tape, bad, 1, 4), UserError);  // token outside the vocabulary
  EXPECT_THROW(parseLayerSelection("attention"), UserError);
}

TEST(ResidualMlp, NamesAndMacs) {
  ResidualMlpConfig c;
  c.width = 16;
  const ResidualMlp model(c);
  std::vector<std::string> expected = {"input.W", "input_ln.gamma", "input_ln.beta"};
  for (int i = 0; i < 3; ++i)
    for (const char* n : {"ln.gamma", "ln.beta", "fc.W", "proj.W"})
      expected.push_back("blocks." + std::to_string(i) + "." + n);
  expected.push_back("output.W");
  EXPECT_EQ(names(model.parameters()), expected);
  EXPECT_EQ(model.macsPerExample(), 8 * 16 + 3 * 2 * 16 * 64 + 16);
  EXPECT_TRUE(allZero(find(model.parameters(), "output.W").var->value));
  EXPECT_TRUE(allZero(find(model.parameters(), "blocks.2.proj.W").var->value));
}

TEST(MlpClassifier, NamesAndMacs) {
  MlpClassifierConfig c;
  c.inputDim = 64;
  c.width = 32;
  c.nHidden = 2;
  c.classes = 10;
  c.structure = "lowrank(rank=4)";
  const MlpClassifier model(c);
  EXPECT_EQ(names(model.parameters()),
            (std::vector<std::string>{"input.W", "hidden.0.U", "hidden.0.V", "hidden.1.U", "hidden.1.V", "output.W"}));
  EXPECT_EQ(model.macsPerExample(), 64 * 32 + 2 * (32 * 4 + 4 * 32) + 32 * 10);
}

}  // namespace
}  // namespace einjit::models
