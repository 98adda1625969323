// The training loop of `einjit train`: builds the model and data of a TrainConfig, runs AdamW
// steps, prints progress, logs metrics, evaluates and checkpoints.
//
// Output directory (config.out): checkpoint.npz (models/Checkpoint.h) and metrics.jsonl, one JSON
// object per line: {"step", "loss", "lr", "examples", "tokens", "compute", "seconds"} plus
// "eval_loss" at evaluation steps. compute = forward MACs per example x examples seen
// (structures.md section 7). A resumed run first drops the log lines past its checkpoint.
//
// Reproducibility: batch `step` is a function of (seed, step), evaluation uses fixed batches and
// changes no state, and every op is deterministic, so a run resumed from a checkpoint takes
// exactly the steps (losses, parameters) of an uninterrupted one, on the device it ran on.
//
// device = cuda: the steps run on the GPU (TrainTask::onDevice: models/DeviceGpt.h,
// models/DeviceMlp.h; parameters, gradients and AdamW's moments live there, f32 or bf16
// autocast); checkpoints copy them back to the host, so the checkpoint format is the same.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "models/Checkpoint.h"
#include "models/Gpt.h"
#include "models/TrainConfig.h"
#include "runtime/cuda/CudaOps.h"
#include "runtime/optim/AdamW.h"

namespace einjit::models {

// A task's model on a device (models/DeviceGpt.h, models/DeviceMlp.h) with the task's batches:
// what the training loop runs when device = cuda.
class DeviceTask {
 public:
  virtual ~DeviceTask() = default;
  // The training loss on the batch of `step`; gradients() then hold its gradients.
  virtual double trainLoss(int64_t step) = 0;
  // As TrainTask::evalLoss.
  virtual double evalLoss() = 0;
  virtual const std::vector<cuda::DeviceTensor>& gradients() const = 0;
  virtual std::vector<cuda::DeviceAdamW::Parameter> optimizerParameters() const = 0;
  // Writes the device's parameters into the task's CPU model (TrainTask::parameters()).
  virtual void copyParametersToHost() const = 0;
};

// A model with its data: what the loop trains.
class TrainTask {
 public:
  virtual ~TrainTask() = default;
  virtual const std::vector<rt::ParameterInfo>& parameters() const = 0;
  virtual int64_t macsPerExample() const = 0;
  virtual int64_t tokensPerExample() const = 0;  // gpt2: the context; 1 for the MLPs
  // The training loss on the batch of `step`, recorded on `tape`.
  virtual rt::Var trainLoss(rt::Tape& tape, int64_t step) = 0;
  // Mean loss over the fixed evaluation batches (nothing recorded, no state changed).
  virtual double evalLoss() = 0;

  // The task's model and batches on `device`, computing in `compute` (f32 or bf16 autocast),
  // from the current CPU parameters.
  virtual std::unique_ptr<DeviceTask> onDevice(cuda::OpDevice& device, cuda::Precision compute) = 0;
};

// The char-level GPT (vocab 96) of a gpt2 TrainConfig.
GptConfig charGptConfig(const TrainConfig& config);

// Builds the model and loads the data that `config` names (UserError for a missing or empty
// data file, a bad structure spec, ...).
std::unique_ptr<TrainTask> makeTrainTask(const TrainConfig& config);

// Ctrl-C: the handler calls requestStop(); the loop writes a checkpoint and returns. Safe to call
// from a signal handler.
void requestStop();
bool stopRequested();
void clearStopRequest();

struct TrainOutcome {
  int64_t step = 0;          // steps done in total
  bool interrupted = false;  // stopped by requestStop() before config.steps
  double lastLoss = 0;       // the last training step's loss
  double lastEvalLoss = -1;  // -1: no evaluation ran
};

class Trainer {
 public:
  // A fresh run (`resumeFrom` null) or one that continues a checkpoint, whose parameters, AdamW
  // moments and step it restores; `config` must then agree with the checkpoint's model keys
  // (UserError naming the first that differs). With device = cuda the steps run on `device`, by
  // default the GPU (UserError saying why when there is none).
  explicit Trainer(TrainConfig config, const Checkpoint* resumeFrom = nullptr, cuda::OpDevice* device = nullptr);
  ~Trainer();

  // Trains until config.steps, requestStop() or `stopAtStep` (>= 0) steps in total, writing a
  // checkpoint every config.checkpointEvery steps and when it stops. Progress goes to `console`.
  TrainOutcome run(std::ostream& console, int64_t stopAtStep = -1);

  // Writes the current state to config.out/checkpoint.npz.
  void saveCheckpoint() const;

  const TrainConfig& config() const { return config_; }
  const TrainTask& task() const { return *task_; }
  // "cpu", or the device's name and precision ("NVIDIA H100 80GB HBM3, bf16 autocast").
  std::string deviceDescription() const;
  int64_t step() const { return step_; }
  // The training loss of every step this Trainer ran, in order.
  const std::vector<double>& losses() const { return losses_; }

  std::string checkpointPath() const;
  std::string metricsPath() const;

 private:
  struct DeviceTraining;  // the device task and optimiser (Trainer.cpp)

  TrainConfig config_;
  std::unique_ptr<TrainTask> task_;
  std::unique_ptr<rt::AdamW> optimizer_;
  rt::LrSchedule schedule_;
  int64_t step_ = 0;
  double secondsBefore_ = 0;  // training time of the earlier runs a checkpoint recorded
  double secondsThisRun_ = 0;
  std::vector<double> losses_;
  std::unique_ptr<DeviceTraining> device_;
};

// The configuration of a resumed run: the checkpoint's, with the keys the user gave explicitly
// (`givenKeys`, values from `requested`) on top. A model key whose value differs from the
// checkpoint's is refused (UserError naming the key and both values).
TrainConfig resumedConfig(const Checkpoint& checkpoint, const std::string& checkpointPath,
                          const TrainConfig& requested, const std::vector<std::string>& givenKeys);

}  // namespace einjit::models
