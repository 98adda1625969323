// The public API (include/einjit/einjit.h) over the models, the trainer's optimiser and the
// char tokenizer.
#include "einjit/einjit.h"

#include "models/Checkpoint.h"
#include "models/DeviceGpt.h"
#include "models/Gpt.h"
#include "models/Sampler.h"
#include "models/TrainConfig.h"
#include "models/Trainer.h"
#include "models/data/CharTokenizer.h"
#include "runtime/optim/AdamW.h"

namespace einjit {

struct GptModel::Impl {
  Impl(const models::GptConfig& config, const rt::AdamWConfig& optimizer)
      : model(config), adam(model.parameters(), optimizer) {
    for (const rt::ParameterInfo& p : model.parameters()) vars.push_back(p.var);
  }

  // Puts the training steps on the GPU.
  void useGpu(const rt::AdamWConfig& optimizer, cuda::Precision precision) {
    device = std::make_unique<models::DeviceGpt>(
        model, models::usableGpu("GptOptions.device = \"cuda\"", "use device = \"cpu\""), precision);
    deviceAdam = std::make_unique<cuda::DeviceAdamW>(device->optimizerParameters(), optimizer);
  }
  // The host model as of the last device step (logits and generate read it).
  void syncHost() {
    if (device && hostStale) device->copyParametersTo(model);
    hostStale = false;
  }

  models::Gpt model;
  rt::AdamW adam;
  std::vector<rt::Var> vars;
  rt::Tape tape;
  std::unique_ptr<models::DeviceGpt> device;  // null: the steps run on the CPU
  std::unique_ptr<cuda::DeviceAdamW> deviceAdam;
  bool hostStale = false;
};

GptModel::GptModel(const GptOptions& o) {
  models::GptConfig config;
  config.vocab = o.vocab;
  config.context = o.context;
  config.nLayer = o.layers;
  config.nHead = o.heads;
  config.dModel = o.width;
  config.structure = o.structure;
  config.layers = models::parseLayerSelection(o.structuredLayers);
  config.qkLayerNorm = o.qkLayerNorm;
  config.seed = o.seed;
  if (o.device != "cpu" && o.device != "cuda")
    throw UserError("GptOptions.device: expected \"cpu\" or \"cuda\", got \"" + o.device + "\"");
  if (o.precision != "f32" && o.precision != "bf16")
    throw UserError("GptOptions.precision: expected \"f32\" or \"bf16\", got \"" + o.precision + "\"");
  if (o.precision == "bf16" && o.device != "cuda")
    throw UserError("GptOptions.precision = \"bf16\" needs device = \"cuda\"");
  rt::AdamWConfig adam;
  adam.lr = o.learningRate;
  adam.weightDecay = o.weightDecay;
  adam.clipNorm = o.clipNorm;
  impl_ = std::make_unique<Impl>(config, adam);
  if (o.device == "cuda")
    impl_->useGpu(adam, o.precision == "bf16" ? cuda::Precision::BF16 : cuda::Precision::F32);
}

GptModel::GptModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GptModel GptModel::fromCheckpoint(const std::string& path) {
  const models::Checkpoint checkpoint = models::readCheckpoint(path);
  models::TrainConfig config;
  models::applyTrainConfigJson(config, checkpoint.configJson, "the config stored in checkpoint '" + path + "'");
  if (config.model != "gpt2")
    throw UserError("checkpoint '" + path + "' holds a '" + config.model + "' model, not a gpt2 one");
  rt::AdamWConfig adam{config.lr, config.beta1, config.beta2, 1e-8, config.weightDecay, config.clip};
  auto impl = std::make_unique<Impl>(models::charGptConfig(config), adam);
  models::loadTensorsInto(checkpoint.params, impl->model.parameters(), "checkpoint '" + path + "'");
  return GptModel(std::move(impl));
}

GptModel::~GptModel() = default;
GptModel::GptModel(GptModel&&) noexcept = default;
GptModel& GptModel::operator=(GptModel&&) noexcept = default;

double GptModel::trainStep(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets,
                           int64_t batch, int64_t seq) {
  if (impl_->device) {
    const double value = impl_->device->loss(tokens, targets, batch, seq, /*backward=*/true);
    impl_->deviceAdam->step(impl_->device->gradients());
    impl_->hostStale = true;
    return value;
  }
  rt::zeroGrad(impl_->vars);
  impl_->tape.clear();
  const rt::Var loss = impl_->model.loss(impl_->tape, tokens, targets, batch, seq);
  const double value = loss->value.get(0);
  impl_->tape.backward(loss);
  impl_->adam.step();
  return value;
}

std::vector<float> GptModel::logits(const std::vector<int32_t>& tokens, int64_t batch, int64_t seq) const {
  impl_->syncHost();
  rt::Tape tape;
  tape.setRecording(false);
  const Tensor out = impl_->model.logits(tape, tokens, batch, seq)->value;
  const float* data = out.data<float>();
  return std::vector<float>(data, data + out.numel());
}

std::vector<int32_t> GptModel::generate(const std::vector<int32_t>& prompt, int64_t count, double temperature,
                                        int64_t topK, uint64_t seed) const {
  impl_->syncHost();
  return models::sampleTokens(impl_->model, prompt, models::SampleOptions{count, temperature, topK, seed});
}

int64_t GptModel::parameterCount() const { return impl_->model.parameterCount(); }
int64_t GptModel::macsPerExample() const { return impl_->model.macsPerExample(); }

std::vector<int32_t> encodeChars(const std::string& text) { return data::CharTokenizer().encode(text); }
std::string decodeChars(const std::vector<int32_t>& ids) { return data::CharTokenizer().decode(ids); }

}  // namespace einjit
