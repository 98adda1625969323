#include "models/Trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <ostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "einjit/error.h"
#include "models/DeviceGpt.h"
#include "models/DeviceMlp.h"
#include "models/Gpt.h"
#include "models/MlpClassifier.h"
#include "models/ResidualMlp.h"
#include "models/data/CharTokenizer.h"
#include "models/data/ImageDataset.h"
#include "models/data/TeacherTask.h"
#include "models/data/TextDataset.h"
#include "runtime/cuda/OpDevice.h"
#include "runtime/io/Npy.h"
#include "runtime/ops/Ops.h"

namespace einjit::models {
namespace {

namespace fs = std::filesystem;

std::atomic<bool> stopFlag{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the Ctrl-C flag must be safe to set from a signal handler");

// The default data file of a task, relative to the working directory (setup.sh fetches or
// generates it).
std::string dataPath(const TrainConfig& c, const std::string& fallback, const std::string& how) {
  if (!c.data.empty()) return c.data;
  if (!fs::exists(fallback))
    throw UserError("no --data given and the default data file '" + fallback + "' does not exist: " + how +
                    ", or pass --data FILE");
  return fallback;
}

// A task's model on a device (DeviceGpt, DeviceResidualMlp, DeviceMlpClassifier) with the
// task's losses: `train(model, step)` runs a step's forward and backward, `eval(model)` the
// evaluation.
template <class DeviceModel, class CpuModel>
class DeviceModelTask : public DeviceTask {
 public:
  DeviceModelTask(const CpuModel& cpuModel, cuda::OpDevice& device, cuda::Precision compute,
                  std::function<double(DeviceModel&, int64_t)> train, std::function<double(DeviceModel&)> eval)
      : cpuModel_(cpuModel), model_(cpuModel, device, compute), train_(std::move(train)), eval_(std::move(eval)) {}

  double trainLoss(int64_t step) override { return train_(model_, step); }
  double evalLoss() override { return eval_(model_); }
  const std::vector<cuda::DeviceTensor>& gradients() const override { return model_.gradients(); }
  std::vector<cuda::DeviceAdamW::Parameter> optimizerParameters() const override {
    return model_.optimizerParameters();
  }
  void copyParametersToHost() const override { model_.copyParametersTo(cpuModel_); }

 private:
  const CpuModel& cpuModel_;
  DeviceModel model_;
  std::function<double(DeviceModel&, int64_t)> train_;
  std::function<double(DeviceModel&)> eval_;
};

class GptTask : public TrainTask {
 public:
  explicit GptTask(const TrainConfig& c)
      : config_(c),
        data_(data::TextDataset::loadCharText(
            dataPath(c, "data/sotu.txt", "run scripts/fetch_data.sh (./setup.sh does) to download the corpus"),
            c.context, c.seed)),
        model_(charGptConfig(c)) {}

  const std::vector<rt::ParameterInfo>& parameters() const override { return model_.parameters(); }
  int64_t macsPerExample() const override { return model_.macsPerExample(); }
  int64_t tokensPerExample() const override { return config_.context; }

  rt::Var trainLoss(rt::Tape& tape, int64_t step) override {
    const data::TokenBatch b = data_.batch(data::Split::Train, config_.batch, static_cast<uint64_t>(step));
    return model_.loss(tape, b.inputs, b.targets, config_.batch, config_.context);
  }

  double evalLoss() override {
    rt::Tape tape;
    tape.setRecording(false);
    return meanEvalLoss([&](const data::TokenBatch& b) {
      return model_.loss(tape, b.inputs, b.targets, config_.batch, config_.context)->value.get(0);
    });
  }

  std::unique_ptr<DeviceTask> onDevice(cuda::OpDevice& device, cuda::Precision compute) override;

 private:
  // The mean of `lossOf` over the fixed evaluation batches.
  double meanEvalLoss(const std::function<double(const data::TokenBatch&)>& lossOf) const {
    double sum = 0;
    for (int64_t i = 0; i < config_.evalBatches; ++i)
      sum += lossOf(data_.batch(data::Split::Validation, config_.batch, static_cast<uint64_t>(i)));
    return sum / static_cast<double>(config_.evalBatches);
  }

  TrainConfig config_;
  data::TextDataset data_;
  Gpt model_;
};

std::unique_ptr<DeviceTask> GptTask::onDevice(cuda::OpDevice& device, cuda::Precision compute) {
  return std::make_unique<DeviceModelTask<DeviceGpt, Gpt>>(
      model_, device, compute,
      [this](DeviceGpt& model, int64_t step) {
        const data::TokenBatch b = data_.batch(data::Split::Train, config_.batch, static_cast<uint64_t>(step));
        return model.loss(b.inputs, b.targets, config_.batch, config_.context, /*backward=*/true);
      },
      [this](DeviceGpt& model) {
        return meanEvalLoss([&](const data::TokenBatch& b) {
          return model.loss(b.inputs, b.targets, config_.batch, config_.context, /*backward=*/false);
        });
      });
}

class TeacherRegressionTask : public TrainTask {
 public:
  explicit TeacherRegressionTask(const TrainConfig& c)
      : config_(c),
        teacher_(data::TeacherConfig{.hidden = c.teacherWidth}),
        model_(ResidualMlpConfig{teacher_.config().inputDim, c.width, c.blocks, c.structure, c.muPBaseWidth,
                                 c.seed, DType::F32}) {}

  const std::vector<rt::ParameterInfo>& parameters() const override { return model_.parameters(); }
  int64_t macsPerExample() const override { return model_.macsPerExample(); }
  int64_t tokensPerExample() const override { return 1; }

  rt::Var trainLoss(rt::Tape& tape, int64_t step) override {
    data::RegressionBatch b = teacher_.trainBatch(config_.batch, static_cast<uint64_t>(step));
    return model_.loss(tape, rt::constant(std::move(b.x)), b.y);
  }

  // The fixed test batch of the task (eval_batches does not apply).
  double evalLoss() override {
    rt::Tape tape;
    tape.setRecording(false);
    const data::RegressionBatch& test = teacher_.testBatch();
    return model_.loss(tape, rt::constant(test.x), test.y)->value.get(0);
  }

  std::unique_ptr<DeviceTask> onDevice(cuda::OpDevice& device, cuda::Precision compute) override {
    return std::make_unique<DeviceModelTask<DeviceResidualMlp, ResidualMlp>>(
        model_, device, compute,
        [this](DeviceResidualMlp& model, int64_t step) {
          const data::RegressionBatch b = teacher_.trainBatch(config_.batch, static_cast<uint64_t>(step));
          return model.loss(b.x, b.y, /*backward=*/true);
        },
        [this](DeviceResidualMlp& model) {
          const data::RegressionBatch& test = teacher_.testBatch();
          return model.loss(test.x, test.y, /*backward=*/false);
        });
  }

 private:
  TrainConfig config_;
  data::TeacherTask teacher_;
  ResidualMlp model_;
};

class ImageClassificationTask : public TrainTask {
 public:
  explicit ImageClassificationTask(const TrainConfig& c)
      : config_(c),
        data_(dataPath(c, "data/digits.npz", "run scripts/make_digits.py (./setup.sh does) to make the image set"),
              c.seed),
        model_(MlpClassifierConfig{data_.pixels(), c.width, c.hiddenLayers, data_.classes(), c.structure,
                                   c.muPBaseWidth, c.seed, DType::F32}) {}

  const std::vector<rt::ParameterInfo>& parameters() const override { return model_.parameters(); }
  int64_t macsPerExample() const override { return model_.macsPerExample(); }
  int64_t tokensPerExample() const override { return 1; }

  rt::Var trainLoss(rt::Tape& tape, int64_t step) override {
    data::ImageBatch b = data_.batch(data::Split::Train, config_.batch, static_cast<uint64_t>(step));
    return model_.loss(tape, rt::constant(std::move(b.images)), b.labels);
  }

  // The whole test split.
  double evalLoss() override {
    rt::Tape tape;
    tape.setRecording(false);
    data::ImageBatch test = data_.whole(data::Split::Validation);
    return model_.loss(tape, rt::constant(std::move(test.images)), test.labels)->value.get(0);
  }

  std::unique_ptr<DeviceTask> onDevice(cuda::OpDevice& device, cuda::Precision compute) override {
    return std::make_unique<DeviceModelTask<DeviceMlpClassifier, MlpClassifier>>(
        model_, device, compute,
        [this](DeviceMlpClassifier& model, int64_t step) {
          const data::ImageBatch b = data_.batch(data::Split::Train, config_.batch, static_cast<uint64_t>(step));
          return model.loss(b.images, b.labels, /*backward=*/true);
        },
        [this](DeviceMlpClassifier& model) {
          const data::ImageBatch test = data_.whole(data::Split::Validation);
          return model.loss(test.images, test.labels, /*backward=*/false);
        });
  }

 private:
  TrainConfig config_;
  data::ImageDataset data_;
  MlpClassifier model_;
};

std::string formatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  char text[32];
  if (s >= 3600)
    std::snprintf(text, sizeof text, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  else
    std::snprintf(text, sizeof text, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return text;
}

// Keeps the lines of the metrics log up to `step` (a resumed run repeats the later ones).
void truncateMetrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const nlohmann::json entry = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (entry.is_object() && entry.contains("step") && entry["step"].is_number_integer() &&
        entry["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  in.close();
  writeFileAtomically(path, kept);
}

}  // namespace

GptConfig charGptConfig(const TrainConfig& c) {
  return GptConfig{data::CharTokenizer::kVocabSize, c.context, c.nLayer, c.nHead, c.dModel, c.structure,
                   parseLayerSelection(c.layers), c.qkLayerNorm, c.residualScale, c.muPBaseWidth, c.seed,
                   DType::F32};
}

std::unique_ptr<TrainTask> makeTrainTask(const TrainConfig& config) {
  if (config.model == "gpt2") return std::make_unique<GptTask>(config);
  if (config.model == "teacher") return std::make_unique<TeacherRegressionTask>(config);
  if (config.model == "mlp") return std::make_unique<ImageClassificationTask>(config);
  throw UserError("unknown model '" + config.model + "': expected gpt2, mlp or teacher");
}

struct Trainer::DeviceTraining {
  cuda::OpDevice& device;
  std::unique_ptr<DeviceTask> task;
  std::unique_ptr<cuda::DeviceAdamW> optimizer;
};

void requestStop() { stopFlag.store(true); }
bool stopRequested() { return stopFlag.load(); }
void clearStopRequest() { stopFlag.store(false); }

TrainConfig resumedConfig(const Checkpoint& checkpoint, const std::string& checkpointPath,
                          const TrainConfig& requested, const std::vector<std::string>& givenKeys) {
  TrainConfig config;
  applyTrainConfigJson(config, checkpoint.configJson, "the config stored in checkpoint '" + checkpointPath + "'");
  for (const std::string& key : givenKeys) {
    const std::string stored = trainOptionJson(config, key), wanted = trainOptionJson(requested, key);
    if (stored == wanted) continue;
    if (isModelKey(key))
      throw UserError("checkpoint '" + checkpointPath + "' was trained with " + key + " = " + stored + ", but " +
                      wanted + " was asked for; a run can only be resumed with the same model");
    applyTrainConfigJson(config, "{\"" + key + "\": " + wanted + "}", "option " + key);
  }
  return config;
}

Trainer::Trainer(TrainConfig config, const Checkpoint* resumeFrom, cuda::OpDevice* device)
    : config_(std::move(config)) {
  validateTrainConfig(config_);
  if (!resumeFrom && fs::exists(checkpointPath()))
    throw UserError("'" + checkpointPath() + "' already exists: pass --resume to continue that run, or choose another --out");
  task_ = makeTrainTask(config_);
  const rt::AdamWConfig adam{config_.lr, config_.beta1, config_.beta2, 1e-8, config_.weightDecay, config_.clip};
  optimizer_ = std::make_unique<rt::AdamW>(task_->parameters(), adam);
  schedule_.kind = config_.schedule == "cosine" ? rt::LrSchedule::Kind::Cosine : rt::LrSchedule::Kind::Constant;
  schedule_.warmupSteps = config_.warmup;
  schedule_.totalSteps = config_.steps;
  schedule_.finalFraction = config_.finalLrFraction;

  if (resumeFrom) {
    const std::string what = "checkpoint '" + checkpointPath() + "'";
    const std::vector<rt::ParameterInfo>& params = task_->parameters();
    loadTensorsInto(resumeFrom->params, params, what);
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string& name = params[i].var->name;
      auto m = resumeFrom->firstMoments.find(name), v = resumeFrom->secondMoments.find(name);
      if (m == resumeFrom->firstMoments.end() || v == resumeFrom->secondMoments.end())
        throw UserError(what + " has no AdamW moments for '" + name + "'");
      if (m->second.shape() != params[i].var->value.shape() || v->second.shape() != params[i].var->value.shape())
        throw UserError(what + ": the AdamW moments of '" + name + "' do not have its shape " +
                        shapeToString(params[i].var->value.shape()));
      optimizer_->firstMoments()[i] = m->second.to(params[i].var->value.dtype());
      optimizer_->secondMoments()[i] = v->second.to(params[i].var->value.dtype());
    }
    step_ = resumeFrom->step;
    optimizer_->setStepCount(step_);
    secondsBefore_ = resumeFrom->seconds;
  }

  if (config_.device == "cuda") {
    cuda::OpDevice& target = device ? *device : usableGpu("--device cuda", "train with --device cpu");
    const cuda::Precision precision = config_.precision == "bf16" ? cuda::Precision::BF16 : cuda::Precision::F32;
    auto model = task_->onDevice(target, precision);
    auto optimizer = std::make_unique<cuda::DeviceAdamW>(model->optimizerParameters(), adam);
    // A resumed run's moments and step, as loaded into the host optimiser above.
    if (resumeFrom) optimizer->restore(optimizer_->firstMoments(), optimizer_->secondMoments(), step_);
    device_ = std::make_unique<DeviceTraining>(DeviceTraining{target, std::move(model), std::move(optimizer)});
  }
}

std::string Trainer::deviceDescription() const {
  if (!device_) return "cpu";
  return device_->device.name() + (config_.precision == "bf16" ? ", bf16 autocast" : ", f32");
}

Trainer::~Trainer() = default;

std::string Trainer::checkpointPath() const { return (fs::path(config_.out) / "checkpoint.npz").string(); }
std::string Trainer::metricsPath() const { return (fs::path(config_.out) / "metrics.jsonl").string(); }

void Trainer::saveCheckpoint() const {
  // On a device, the host model and optimiser are the checkpoint's staging copies: refreshed
  // from the device here, used for nothing else.
  if (device_) {
    device_->task->copyParametersToHost();
    for (std::size_t i = 0; i < device_->optimizer->firstMoments().size(); ++i) {
      optimizer_->firstMoments()[i] = device_->optimizer->firstMoments()[i].download(DType::F32);
      optimizer_->secondMoments()[i] = device_->optimizer->secondMoments()[i].download(DType::F32);
    }
  }
  Checkpoint checkpoint;
  checkpoint.configJson = trainConfigToJson(config_);
  checkpoint.step = step_;
  checkpoint.seconds = secondsBefore_ + secondsThisRun_;
  const std::vector<rt::ParameterInfo>& params = task_->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params[i].var->name;
    checkpoint.params[name] = params[i].var->value;
    checkpoint.firstMoments[name] = optimizer_->firstMoments()[i];
    checkpoint.secondMoments[name] = optimizer_->secondMoments()[i];
  }
  writeCheckpoint(checkpointPath(), checkpoint);
}

TrainOutcome Trainer::run(std::ostream& console, int64_t stopAtStep) {
  using Clock = std::chrono::steady_clock;
  std::error_code ec;
  fs::create_directories(config_.out, ec);
  if (ec || !fs::is_directory(config_.out))
    throw UserError("cannot create the output directory '" + config_.out + "'" + (ec ? ": " + ec.message() : ""));
  if (step_ > 0) truncateMetrics(metricsPath(), step_);
  std::ofstream metrics(metricsPath(), std::ios::app);
  if (!metrics) throw UserError("cannot write the metrics log '" + metricsPath() + "'");

  std::vector<rt::Var> vars;
  for (const rt::ParameterInfo& p : task_->parameters()) vars.push_back(p.var);
  const int64_t examplesPerStep = config_.batch, tokensPerStep = config_.batch * task_->tokensPerExample();
  const int64_t lastStep = stopAtStep >= 0 ? std::min(stopAtStep, config_.steps) : config_.steps;

  TrainOutcome outcome;
  rt::Tape tape;
  secondsBefore_ += secondsThisRun_;  // an earlier run() of this Trainer
  secondsThisRun_ = 0;
  const Clock::time_point start = Clock::now();
  double trainSeconds = 0, intervalTrainSeconds = 0;
  int64_t intervalTokens = 0, stepsThisRun = 0;
  while (step_ < lastStep) {
    if (stopRequested()) {
      outcome.interrupted = true;
      break;
    }
    const Clock::time_point stepStart = Clock::now();
    const double lrFactor = schedule_.factor(step_);
    auto checkFinite = [&](double lossValue) {
      if (!std::isfinite(lossValue))
        throw UserError("training diverged: the loss at step " + std::to_string(step_ + 1) + " is " +
                        std::to_string(lossValue) + "; try a lower --lr (the last checkpoint is kept)");
    };
    double lossValue = 0;
    if (device_) {
      lossValue = device_->task->trainLoss(step_);
      checkFinite(lossValue);
      device_->optimizer->step(device_->task->gradients(), lrFactor);
    } else {
      rt::zeroGrad(vars);
      rt::Var loss = task_->trainLoss(tape, step_);
      lossValue = loss->value.get(0);
      checkFinite(lossValue);
      tape.backward(loss);
      optimizer_->step(lrFactor);
    }
    ++step_;
    ++stepsThisRun;
    losses_.push_back(lossValue);
    outcome.lastLoss = lossValue;
    const double stepSeconds = std::chrono::duration<double>(Clock::now() - stepStart).count();
    trainSeconds += stepSeconds;
    intervalTrainSeconds += stepSeconds;
    intervalTokens += tokensPerStep;

    const bool last = step_ == config_.steps;
    const bool evaluate = config_.evalEvery > 0 && (step_ % config_.evalEvery == 0 || last);
    double evalLoss = -1;
    if (evaluate) evalLoss = outcome.lastEvalLoss = device_ ? device_->task->evalLoss() : task_->evalLoss();
    secondsThisRun_ = std::chrono::duration<double>(Clock::now() - start).count();

    if (step_ % config_.logEvery == 0 || evaluate || last) {
      const double tokensPerSecond = intervalTrainSeconds > 0 ? intervalTokens / intervalTrainSeconds : 0;
      const double eta = trainSeconds / static_cast<double>(stepsThisRun) * static_cast<double>(config_.steps - step_);
      char line[256];
      std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  lr %.3g  %.0f tok/s  ETA %s",
                    static_cast<long long>(step_), static_cast<long long>(config_.steps), lossValue,
                    config_.lr * lrFactor, tokensPerSecond, formatDuration(eta).c_str());
      console << line;
      if (evaluate) {
        std::snprintf(line, sizeof line, "  eval loss %.4f", evalLoss);
        console << line;
      }
      console << std::endl;
      nlohmann::ordered_json entry;
      entry["step"] = step_;
      entry["loss"] = lossValue;
      if (evaluate) entry["eval_loss"] = evalLoss;
      entry["lr"] = config_.lr * lrFactor;
      entry["examples"] = step_ * examplesPerStep;
      entry["tokens"] = step_ * tokensPerStep;
      entry["compute"] = static_cast<double>(task_->macsPerExample()) * static_cast<double>(step_ * examplesPerStep);
      entry["seconds"] = secondsBefore_ + secondsThisRun_;
      metrics << entry.dump() << '\n' << std::flush;
      if (!metrics) throw UserError("cannot write the metrics log '" + metricsPath() + "'");
      intervalTrainSeconds = 0;
      intervalTokens = 0;
    }
    if (config_.checkpointEvery > 0 && step_ % config_.checkpointEvery == 0 && !last) saveCheckpoint();
  }
  secondsThisRun_ = std::chrono::duration<double>(Clock::now() - start).count();
  saveCheckpoint();
  if (outcome.interrupted)
    console << "stopped at step " << step_ << "; checkpoint written to " << checkpointPath()
            << " (continue with --resume)" << std::endl;
  outcome.step = step_;
  return outcome;
}

}  // namespace einjit::models
