// The public API (include/einjit/einjit.h): training steps, inference, generation, checkpoints.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "compiler/cuda/CudaDriver.h"
#include "einjit/einjit.h"
#include "models/Trainer.h"
#include "tests/models/TestUtil.h"

namespace einjit {
namespace {

GptOptions tiny() {
  return GptOptions{.context = 8, .layers = 1, .heads = 2, .width = 16, .structure = "btt(rank=2)", .learningRate = 1e-2};
}

TEST(Api, TrainStepsLowerTheLossOnAFixedBatch) {
  GptModel model(tiny());
  const std::vector<int32_t> ids = encodeChars("abcabcabcabcabcabc");
  const std::vector<int32_t> tokens(ids.begin(), ids.begin() + 16), targets(ids.begin() + 1, ids.begin() + 17);
  const std::vector<float> before = model.logits(tokens, 2, 8);
  ASSERT_EQ(before.size(), 2u * 8u * 96u);
  for (float v : before) EXPECT_EQ(v, 0.0f);  // the zero-initialised head
  const double first = model.trainStep(tokens, targets, 2, 8);
  EXPECT_NEAR(first, std::log(96.0), 1e-5);
  double last = first;
  for (int i = 0; i < 30; ++i) last = model.trainStep(tokens, targets, 2, 8);
  EXPECT_LT(last, 0.5 * first);
  // Greedy generation continues the pattern it learnt.
  EXPECT_EQ(decodeChars(model.generate(encodeChars("abcab"), 4, 0.0)), "cabc");
  EXPECT_THROW(model.trainStep(tokens, targets, 2, 9), UserError);
  EXPECT_THROW(encodeChars("caf\xc3\xa9"), UserError);
}

TEST(Api, DeviceOptionsAreChecked) {
  GptOptions o = tiny();
  o.device = "tpu";
  EXPECT_THROW(GptModel{o}, UserError);
  o.device = "cpu";
  o.precision = "bf16";  // autocast is a GPU mode
  EXPECT_THROW(GptModel{o}, UserError);
  o.precision = "f16";
  EXPECT_THROW(GptModel{o}, UserError);
  if (cuda::cudaAvailable()) GTEST_SKIP() << "a GPU is present";
  o.device = "cuda";
  o.precision = "f32";
  try {
    GptModel model(o);
    FAIL() << "device = cuda needs a GPU";
  } catch (const UserError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("GptOptions.device = \"cuda\": "), std::string::npos) << message;
    EXPECT_NE(message.find("use device = \"cpu\""), std::string::npos) << message;
  }
}

TEST(Api, LoadsTheModelOfATrainCheckpoint) {
  models::testing::ScratchDir dir;
  models::testing::writeText(dir / "corpus.txt", models::testing::repetitiveCorpus());
  models::TrainConfig c;
  c.data = dir / "corpus.txt";
  c.nLayer = 1;
  c.nHead = 2;
  c.dModel = 16;
  c.context = 8;
  c.batch = 4;
  c.steps = 3;
  c.out = dir / "run";
  models::Trainer trainer(c);
  std::ostringstream console;
  trainer.run(console);
  const GptModel model = GptModel::fromCheckpoint(dir / "run/checkpoint.npz");
  EXPECT_EQ(model.parameterCount(), models::parameterCount(trainer.task().parameters()));
  EXPECT_EQ(model.macsPerExample(), trainer.task().macsPerExample());
  EXPECT_THROW(GptModel::fromCheckpoint(dir / "none.npz"), UserError);
}

}  // namespace
}  // namespace einjit
