// TrainConfig: config files, command-line values, validation, and what errors say.
#include <gtest/gtest.h>

#include <string>

#include "einjit/error.h"
#include "models/TrainConfig.h"
#include "tests/models/TestUtil.h"

namespace einjit::models {
namespace {

// The message of the UserError `f` throws ("" if none).
template <class F>
std::string errorOf(F f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(TrainConfig, FileSetsEveryKindOfValue) {
  testing::ScratchDir dir;
  testing::writeText(dir / "c.json",
            R"json({"model": "teacher", "struct": "btt(rank=4)", "d_model": 128, "qk_layernorm": true,
                "lr": 0.001, "seed": 7, "residual_scale": 1})json");
  TrainConfig c;
  const std::vector<std::string> keys = applyTrainConfigFile(c, dir / "c.json");
  EXPECT_EQ(keys.size(), 7u);
  EXPECT_EQ(c.model, "teacher");
  EXPECT_EQ(c.structure, "btt(rank=4)");
  EXPECT_EQ(c.dModel, 128);
  EXPECT_TRUE(c.qkLayerNorm);
  EXPECT_DOUBLE_EQ(c.lr, 0.001);
  EXPECT_EQ(c.seed, 7u);
  EXPECT_DOUBLE_EQ(c.residualScale, 1.0);  // an integer is a number
  EXPECT_EQ(c.nLayer, 4);                  // untouched keys keep their defaults
}

TEST(TrainConfig, UnknownKeysAndWrongTypesNameTheKey) {
  TrainConfig c;
  std::string e = errorOf([&] { applyTrainConfigJson(c, R"({"d_modle": 128})", "f.json"); });
  EXPECT_NE(e.find("unknown key 'd_modle'"), std::string::npos) << e;
  EXPECT_NE(e.find("d_model"), std::string::npos) << e;  // the known keys are listed
  e = errorOf([&] { applyTrainConfigJson(c, R"({"steps": "100"})", "f.json"); });
  EXPECT_NE(e.find("key 'steps' must be an integer, got \"100\""), std::string::npos) << e;
  e = errorOf([&] { applyTrainConfigJson(c, R"({"steps": 2.5})", "f.json"); });
  EXPECT_NE(e.find("key 'steps' must be an integer"), std::string::npos) << e;
  e = errorOf([&] { applyTrainConfigJson(c, R"({"qk_layernorm": 1})", "f.json"); });
  EXPECT_NE(e.find("key 'qk_layernorm' must be a boolean"), std::string::npos) << e;
  e = errorOf([&] { applyTrainConfigJson(c, R"({"seed": -1})", "f.json"); });
  EXPECT_NE(e.find("key 'seed' must be a non-negative integer"), std::string::npos) << e;
  e = errorOf([&] { applyTrainConfigJson(c, R"({"struct": 4})", "f.json"); });
  EXPECT_NE(e.find("key 'struct' must be a string"), std::string::npos) << e;
  e = errorOf([&] { applyTrainConfigJson(c, R"({"lr": 0.1,})", "f.json"); });
  EXPECT_NE(e.find("f.json: not valid JSON"), std::string::npos) << e;
  e = errorOf([&] { applyTrainConfigJson(c, R"([1, 2])", "f.json"); });
  EXPECT_NE(e.find("expected a JSON object"), std::string::npos) << e;
  e = errorOf([&] { applyTrainConfigFile(c, "/nonexistent/c.json"); });
  EXPECT_NE(e.find("cannot read config file '/nonexistent/c.json'"), std::string::npos) << e;
}

TEST(TrainConfig, CommandLineValuesAreTypeChecked) {
  TrainConfig c;
  applyTrainOption(c, "steps", "250");
  applyTrainOption(c, "lr", "2e-3");
  applyTrainOption(c, "qk_layernorm", "true");
  applyTrainOption(c, "struct", "monarch(blocks=4)");
  EXPECT_EQ(c.steps, 250);
  EXPECT_DOUBLE_EQ(c.lr, 2e-3);
  EXPECT_TRUE(c.qkLayerNorm);
  EXPECT_EQ(c.structure, "monarch(blocks=4)");
  EXPECT_EQ(errorOf([&] { applyTrainOption(c, "steps", "12x"); }), "--steps: expected an integer, got '12x'");
  EXPECT_EQ(errorOf([&] { applyTrainOption(c, "lr", "nan"); }), "--lr: expected a number, got 'nan'");
  EXPECT_EQ(errorOf([&] { applyTrainOption(c, "seed", "-3"); }), "--seed: expected a non-negative integer, got '-3'");
  EXPECT_NE(errorOf([&] { applyTrainOption(c, "qk_layernorm", "yes"); }), "");
}

TEST(TrainConfig, ValidationNamesTheKeyAndTheExpectation) {
  auto invalid = [](auto change) {
    TrainConfig c;
    change(c);
    return errorOf([&] { validateTrainConfig(c); });
  };
  EXPECT_EQ(invalid([](TrainConfig&) {}), "");
  EXPECT_NE(invalid([](TrainConfig& c) { c.schedule = "linear"; }).find("'schedule'"), std::string::npos);
  EXPECT_NE(invalid([](TrainConfig& c) { c.model = "gpt3"; }).find("expected gpt2, mlp or teacher"), std::string::npos);
  EXPECT_NE(invalid([](TrainConfig& c) { c.steps = 0; }).find("'steps'"), std::string::npos);
  EXPECT_NE(invalid([](TrainConfig& c) { c.dModel = 30; }).find("'d_model'"), std::string::npos);
  EXPECT_NE(invalid([](TrainConfig& c) { c.layers = "head"; }).find("'layers'"), std::string::npos);
  EXPECT_NE(invalid([](TrainConfig& c) { c.beta2 = 1; }).find("'beta2'"), std::string::npos);
  EXPECT_NE(invalid([](TrainConfig& c) { c.lr = -1; }).find("'lr'"), std::string::npos);
}

TEST(TrainConfig, JsonRoundTripKeepsEveryValue) {
  TrainConfig c;
  c.model = "mlp";
  c.structure = "kron";
  c.seed = 18446744073709551615ull;
  c.lr = 0.1 + 0.2;
  c.residualScale = 0.7071067811865476;
  c.qkLayerNorm = true;
  TrainConfig back;
  applyTrainConfigJson(back, trainConfigToJson(c), "round trip");
  EXPECT_EQ(trainConfigToJson(back), trainConfigToJson(c));
  EXPECT_EQ(back.seed, c.seed);
  EXPECT_EQ(back.lr, c.lr);  // bit-exact
  EXPECT_TRUE(isModelKey("d_model"));
  EXPECT_FALSE(isModelKey("steps"));
  EXPECT_EQ(trainOptions().front().flag, "--model");
}

}  // namespace
}  // namespace einjit::models
