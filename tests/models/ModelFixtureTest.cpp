// The C++ models against an independent PyTorch implementation of the same contract
// (tests/models/torch_models.py via make_gpt_fixture.py, float64, random non-zero weights): the
// loss, the outputs and the gradient of every parameter, for a GPT per structure/option mix, the
// residual MLP and the MLP classifier. The models are built in float64 with the fixture's
// weights loaded by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/Checkpoint.h"
#include "models/Gpt.h"
#include "models/MlpClassifier.h"
#include "models/ResidualMlp.h"
#include "runtime/io/Npy.h"
#include "runtime/ops/Ops.h"

namespace einjit::models {
namespace {

// Relative to the largest entry of the expected tensor; gradients that are zero in exact
// arithmetic (k_ln.beta: a shift of every key leaves the softmax unchanged) hold round-off
// around 1e-18, so the scale has a floor.
constexpr double kTolerance = 1e-9;
constexpr double kScaleFloor = 1e-6;

nlohmann::json readJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("missing fixture " + path + " (ctest makes it with make_gpt_fixture.py)");
  return nlohmann::json::parse(in);
}

struct Fixture {
  nlohmann::json meta;
  std::map<std::string, Tensor> arrays;

  explicit Fixture(const std::string& name)
      : meta(readJson(std::string(EINJIT_MODEL_FIXTURE_DIR) + "/" + name + ".json")),
        arrays(readNpz(std::string(EINJIT_MODEL_FIXTURE_DIR) + "/" + name + ".npz")) {}

  const Tensor& at(const std::string& key) const {
    auto it = arrays.find(key);
    if (it == arrays.end()) throw std::runtime_error("fixture has no array " + key);
    return it->second;
  }
  std::map<std::string, Tensor> weights() const {
    std::map<std::string, Tensor> w;
    for (const auto& [name, shape] : meta["params"].items()) w[name] = at(name);
    return w;
  }
  std::vector<int32_t> ints(const std::string& key) const {
    const Tensor& t = at(key);
    std::vector<int32_t> values(static_cast<size_t>(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) values[static_cast<size_t>(i)] = static_cast<int32_t>(t.get(i));
    return values;
  }
};

void expectClose(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.numel(), expected.numel()) << what;
  double scale = 0, worst = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) scale = std::max(scale, std::abs(expected.get(i)));
  for (int64_t i = 0; i < expected.numel(); ++i) worst = std::max(worst, std::abs(actual.get(i) - expected.get(i)));
  EXPECT_LE(worst, kTolerance * std::max(scale, kScaleFloor)) << what << ": largest error " << worst << ", largest entry " << scale;
}

// Runs backward from `loss` and compares it and every parameter's gradient with the fixture.
void checkLossAndGradients(rt::Tape& tape, const rt::Var& loss, const std::vector<rt::ParameterInfo>& params,
                           const Fixture& f) {
  EXPECT_NEAR(loss->value.get(0), f.at("loss").get(0), kTolerance * std::abs(f.at("loss").get(0)));
  tape.backward(loss);
  ASSERT_EQ(params.size(), f.meta["params"].size());
  for (const rt::ParameterInfo& p : params) {
    ASSERT_GT(p.var->grad.numel(), 0) << p.var->name << " got no gradient";
    expectClose(p.var->grad, f.at("grad." + p.var->name), "grad." + p.var->name);
  }
}

class GptFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(GptFixture, LossLogitsAndEveryGradientMatchPyTorch) {
  const Fixture f(GetParam());
  const nlohmann::json& c = f.meta["config"];
  GptConfig config;
  config.vocab = c["vocab"];
  config.context = c["context"];
  config.nLayer = c["nLayer"];
  config.nHead = c["nHead"];
  config.dModel = c["dModel"];
  config.structure = c.value("struct", "dense");
  config.layers = parseLayerSelection(c.value("layers", "all"));
  config.qkLayerNorm = c.value("qkLayerNorm", false);
  config.residualScale = c.value("residualScale", 1.0);
  config.dtype = DType::F64;
  const Gpt model(config);
  loadTensorsInto(f.weights(), model.parameters(), "fixture " + GetParam());

  const int64_t batch = f.meta["inputs"]["batch"], seq = f.meta["inputs"]["length"];
  rt::Tape tape;
  const rt::Var logits = model.logits(tape, f.ints("tokens"), batch, seq);
  expectClose(logits->value, f.at("logits"), "logits");
  checkLossAndGradients(tape, rt::crossEntropy(tape, logits, f.ints("targets")), model.parameters(), f);
}

INSTANTIATE_TEST_SUITE_P(Cases, GptFixture,
                         ::testing::Values("gpt_dense", "gpt_btt_norm_qkln", "gpt_monarch_ffn",
                                           "gpt_lowrank_all_but_last"),
                         [](const auto& info) { return info.param; });

class ResidualMlpFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ResidualMlpFixture, LossOutputAndEveryGradientMatchPyTorch) {
  const Fixture f(GetParam());
  const nlohmann::json& c = f.meta["config"];
  ResidualMlpConfig config;
  config.inputDim = c["inputs"];
  config.width = c["width"];
  config.nBlocks = c["blocks"];
  config.structure = c["struct"];
  config.dtype = DType::F64;
  const ResidualMlp model(config);
  loadTensorsInto(f.weights(), model.parameters(), "fixture " + GetParam());

  rt::Tape tape;
  const rt::Var output = model.forward(tape, rt::constant(f.at("x")));
  expectClose(output->value, f.at("output"), "output");
  checkLossAndGradients(tape, rt::meanSquaredError(tape, output, f.at("y")), model.parameters(), f);
}

INSTANTIATE_TEST_SUITE_P(Cases, ResidualMlpFixture, ::testing::Values("resmlp_dense", "resmlp_btt"),
                         [](const auto& info) { return info.param; });

TEST(MlpClassifierFixture, LossLogitsAndEveryGradientMatchPyTorch) {
  const Fixture f("mlp_kron");
  const nlohmann::json& c = f.meta["config"];
  MlpClassifierConfig config;
  config.inputDim = c["pixels"];
  config.width = c["width"];
  config.nHidden = c["hidden"];
  config.classes = c["classes"];
  config.structure = c["struct"];
  config.dtype = DType::F64;
  const MlpClassifier model(config);
  loadTensorsInto(f.weights(), model.parameters(), "fixture mlp_kron");

  rt::Tape tape;
  const rt::Var logits = model.logits(tape, rt::constant(f.at("x")));
  expectClose(logits->value, f.at("logits"), "logits");
  checkLossAndGradients(tape, rt::crossEntropy(tape, logits, f.ints("targets")), model.parameters(), f);
}

}  // namespace
}  // namespace einjit::models
