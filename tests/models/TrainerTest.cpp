// The training loop: learning, bit-identical resume, checkpoints and the errors around them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "models/Checkpoint.h"
#include "models/Trainer.h"
#include "runtime/io/Npy.h"
#include "tests/models/TestUtil.h"

namespace einjit::models {
namespace {

using testing::ScratchDir;

using testing::tinyGptConfig;

std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(Trainer, CharGptLossFallsFromUniform) {
  ScratchDir dir;
  TrainConfig c = tinyGptConfig(dir);
  c.steps = 80;
  Trainer trainer(c);
  std::ostringstream console;
  const TrainOutcome outcome = trainer.run(console);
  ASSERT_EQ(trainer.losses().size(), 80u);
  // The zero-initialised head predicts the uniform distribution at step 1.
  EXPECT_NEAR(trainer.losses().front(), std::log(96.0), 1e-5);
  // The corpus repeats one 24-character sentence: the model learns much of it.
  EXPECT_LT(outcome.lastLoss, 1.5);
  EXPECT_LT(outcome.lastEvalLoss, 1.5);
  EXPECT_EQ(outcome.step, 80);
  EXPECT_FALSE(outcome.interrupted);
  EXPECT_NE(console.str().find("step 80/80"), std::string::npos);
  EXPECT_NE(console.str().find("eval loss"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(trainer.checkpointPath()));
}

TEST(Trainer, ResumedRunIsBitIdenticalToAnUninterruptedOne) {
  ScratchDir dir;
  TrainConfig c = tinyGptConfig(dir);
  c.steps = 12;
  std::ostringstream console;

  TrainConfig whole = c;
  whole.out = dir / "whole";
  Trainer uninterrupted(whole);
  uninterrupted.run(console);

  TrainConfig parts = c;
  parts.out = dir / "parts";
  {
    Trainer first(parts);
    const TrainOutcome outcome = first.run(console, /*stopAtStep=*/5);
    EXPECT_EQ(outcome.step, 5);
  }
  const std::string path = dir / "parts/checkpoint.npz";
  const Checkpoint checkpoint = readCheckpoint(path);
  EXPECT_EQ(checkpoint.step, 5);
  Trainer second(resumedConfig(checkpoint, path, parts, {}), &checkpoint);
  second.run(console);

  const std::vector<double> tail(uninterrupted.losses().begin() + 5, uninterrupted.losses().end());
  ASSERT_EQ(second.losses().size(), 7u);
  EXPECT_EQ(second.losses(), tail);  // exactly
  const auto& a = uninterrupted.task().parameters();
  const auto& b = second.task().parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].var->value.nbytes(), b[i].var->value.nbytes());
    EXPECT_EQ(std::memcmp(a[i].var->value.raw(), b[i].var->value.raw(), a[i].var->value.nbytes()), 0)
        << a[i].var->name;
  }
  // The metrics logs name the same steps with the same losses.
  auto lossLines = [](const std::string& path) {
    std::istringstream in(testing::readText(path));
    std::string line, losses;
    while (std::getline(in, line)) losses += line.substr(0, line.find(",\"lr\"")) + "\n";
    return losses;
  };
  EXPECT_EQ(lossLines(dir / "parts/metrics.jsonl"), lossLines(dir / "whole/metrics.jsonl"));
}

TEST(Trainer, StopRequestCheckpointsAndReturns) {
  ScratchDir dir;
  TrainConfig c = tinyGptConfig(dir);
  c.steps = 50;
  Trainer trainer(c);
  requestStop();
  std::ostringstream console;
  const TrainOutcome outcome = trainer.run(console);
  clearStopRequest();
  EXPECT_TRUE(outcome.interrupted);
  EXPECT_EQ(outcome.step, 0);
  EXPECT_EQ(readCheckpoint(trainer.checkpointPath()).step, 0);
  EXPECT_NE(console.str().find("--resume"), std::string::npos);
}

TEST(Trainer, MetricsLogCarriesComputeAndTokens) {
  ScratchDir dir;
  TrainConfig c = tinyGptConfig(dir);
  c.steps = 5;
  Trainer trainer(c);
  std::ostringstream console;
  trainer.run(console);
  std::istringstream log(testing::readText(trainer.metricsPath()));
  std::string line, last;
  int lines = 0;
  while (std::getline(log, line)) {
    last = line;
    ++lines;
  }
  EXPECT_EQ(lines, 5);
  const int64_t compute = trainer.task().macsPerExample() * 5 * 4;
  EXPECT_NE(last.find("\"step\":5,"), std::string::npos) << last;
  EXPECT_NE(last.find("\"eval_loss\":"), std::string::npos) << last;
  EXPECT_NE(last.find("\"tokens\":160,"), std::string::npos) << last;  // 5 steps x 4 x 8
  EXPECT_NE(last.find("\"compute\":" + std::to_string(compute) + ".0"), std::string::npos) << last;
}

TEST(Trainer, RefusesToOverwriteARunAndChecksResumedModelKeys) {
  ScratchDir dir;
  TrainConfig c = tinyGptConfig(dir);
  c.steps = 2;
  std::ostringstream console;
  Trainer(c).run(console);
  const std::string path = dir / "run/checkpoint.npz";
  const std::string before = testing::readText(path);

  EXPECT_NE(errorOf([&] { Trainer again(c); }).find("already exists"), std::string::npos);

  const Checkpoint checkpoint = readCheckpoint(path);
  TrainConfig other = c;
  other.dModel = 32;
  const std::string e = errorOf([&] { resumedConfig(checkpoint, path, other, {"d_model"}); });
  EXPECT_NE(e.find("d_model = 16"), std::string::npos) << e;
  // A training key may change: more steps.
  other = c;
  other.steps = 4;
  EXPECT_EQ(resumedConfig(checkpoint, path, other, {"steps"}).steps, 4);
  // Parameters of another shape do not load.
  TrainConfig wider = c;
  wider.dModel = 32;
  wider.out = dir / "wider";
  EXPECT_NE(errorOf([&] { Trainer t(wider, &checkpoint); }).find("has shape"), std::string::npos);
  EXPECT_EQ(testing::readText(path), before);
}

TEST(Checkpoint, MissingTruncatedOrCorruptedFilesAreUserErrors) {
  ScratchDir dir;
  TrainConfig c = tinyGptConfig(dir);
  c.steps = 1;
  std::ostringstream console;
  Trainer(c).run(console);
  const std::string good = testing::readText(dir / "run/checkpoint.npz");

  EXPECT_NE(errorOf([&] { readCheckpoint(dir / "none.npz"); }).find("does not exist"), std::string::npos);
  testing::writeText(dir / "truncated.npz", good.substr(0, good.size() / 2));
  EXPECT_NE(errorOf([&] { readCheckpoint(dir / "truncated.npz"); }), "");
  std::string flipped = good;
  flipped[good.size() / 3] = static_cast<char>(flipped[good.size() / 3] ^ 0x5A);
  testing::writeText(dir / "flipped.npz", flipped);
  EXPECT_NE(errorOf([&] { readCheckpoint(dir / "flipped.npz"); }), "");
  testing::writeText(dir / "text.npz", "not a zip file at all");
  EXPECT_NE(errorOf([&] { readCheckpoint(dir / "text.npz"); }), "");
  // A valid .npz that is not a checkpoint.
  writeNpz(dir / "other.npz", {{"x", Tensor(DType::F32, {2})}});
  EXPECT_NE(errorOf([&] { readCheckpoint(dir / "other.npz"); }).find("not an einjit training checkpoint"),
            std::string::npos);
}

TEST(Trainer, MissingOrEmptyCorpusIsAUserError) {
  ScratchDir dir;
  TrainConfig c = tinyGptConfig(dir);
  c.data = dir / "missing.txt";
  EXPECT_NE(errorOf([&] { Trainer t(c); }).find("missing.txt"), std::string::npos);
  testing::writeText(dir / "empty.txt", "");
  c.data = dir / "empty.txt";
  EXPECT_NE(errorOf([&] { Trainer t(c); }).find("empty.txt"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "run"));
}

TEST(Trainer, TeacherRegressionLearns) {
  ScratchDir dir;
  TrainConfig c;
  c.model = "teacher";
  c.teacherWidth = 32;
  c.width = 16;
  c.batch = 64;
  c.steps = 60;
  c.lr = 1e-2;
  c.evalEvery = 60;
  c.logEvery = 60;
  c.structure = "btt(rank=2)";
  c.out = dir / "run";
  Trainer trainer(c);
  std::ostringstream console;
  const TrainOutcome outcome = trainer.run(console);
  // The zero-initialised output predicts 0, so the first loss is the mean square of the
  // standardised targets, about 1.
  EXPECT_NEAR(trainer.losses().front(), 1.0, 0.3);
  EXPECT_LT(outcome.lastEvalLoss, 0.5);
}

TEST(Trainer, ImageClassifierLearns) {
  ScratchDir dir;
  // Two classes of 4-pixel images: class 0 bright on the left, class 1 on the right.
  const int64_t n = 64;
  Tensor images(DType::F32, {n, 4}), labels(DType::F32, {n});
  for (int64_t i = 0; i < n; ++i) {
    const bool right = i % 2 == 1;
    for (int64_t p = 0; p < 4; ++p) images.set(i * 4 + p, ((p >= 2) == right ? 1.0 : 0.0) + 0.01 * static_cast<double>(i % 5));
    labels.set(i, right ? 1 : 0);
  }
  writeNpz(dir / "images.npz", {{"train_images", images}, {"train_labels", labels},
                                {"test_images", images}, {"test_labels", labels}});
  TrainConfig c;
  c.model = "mlp";
  c.data = dir / "images.npz";
  c.width = 16;
  c.hiddenLayers = 1;
  c.structure = "lowrank(rank=2)";
  c.batch = 16;
  c.steps = 40;
  c.lr = 1e-2;
  c.evalEvery = 40;
  c.out = dir / "run";
  Trainer trainer(c);
  std::ostringstream console;
  const TrainOutcome outcome = trainer.run(console);
  EXPECT_LT(outcome.lastEvalLoss, 0.1);
}

}  // namespace
}  // namespace einjit::models
