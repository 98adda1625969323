#include "models/MlpClassifier.h"

#include "einjit/error.h"
#include "runtime/ops/Ops.h"

namespace einjit::models {
namespace {

MlpClassifierConfig checked(MlpClassifierConfig config) {
  if (config.inputDim < 1) throw UserError("MLP classifier config: input dimension must be at least 1");
  if (config.width < 1) throw UserError("MLP classifier config: width must be at least 1, got " + std::to_string(config.width));
  if (config.nHidden < 0) throw UserError("MLP classifier config: the number of hidden layers must be >= 0");
  if (config.classes < 1) throw UserError("MLP classifier config: classes must be at least 1");
  if (config.muPBaseWidth < 0) throw UserError("MLP classifier config: mup_base_width must be >= 0");
  return config;
}

}  // namespace

MlpClassifier::MlpClassifier(MlpClassifierConfig config)
    : config_(checked(std::move(config))),
      input_(makeLinear("input", "dense", config_.inputDim, config_.width, false, config_.seed,
                        config_.dtype, config_.muPBaseWidth)),
      output_(makeLinear("output", "dense", config_.width, config_.classes, false, config_.seed,
                         config_.dtype, config_.muPBaseWidth)) {
  const MlpClassifierConfig& c = config_;
  for (int64_t i = 0; i < c.nHidden; ++i)
    hidden_.push_back(makeLinear("hidden." + std::to_string(i), c.structure, c.width, c.width, false,
                                 c.seed, c.dtype, c.muPBaseWidth));
  appendParameters(params_, input_);
  for (const rt::StructuredLinear& layer : hidden_) appendParameters(params_, layer);
  appendParameters(params_, output_);
}

rt::Var MlpClassifier::logits(rt::Tape& tape, const rt::Var& x) const {
  rt::Var h = rt::relu(tape, input_.forward(tape, x));
  for (const rt::StructuredLinear& layer : hidden_) h = rt::relu(tape, layer.forward(tape, h));
  return output_.forward(tape, h);
}

rt::Var MlpClassifier::loss(rt::Tape& tape, const rt::Var& x, const std::vector<int32_t>& labels) const {
  return rt::crossEntropy(tape, logits(tape, x), labels);
}

int64_t MlpClassifier::parameterCount() const { return models::parameterCount(params_); }

const rt::StructuredLinear& MlpClassifier::linear(const std::string& name) const {
  if (name == "input") return input_;
  if (name == "output") return output_;
  for (std::size_t i = 0; i < hidden_.size(); ++i)
    if (name == "hidden." + std::to_string(i)) return hidden_[i];
  throw UserError("MLP classifier: no linear layer named '" + name + "'");
}

int64_t MlpClassifier::macsPerExample() const {
  int64_t macs = input_.macsPerRow() + output_.macsPerRow();
  for (const rt::StructuredLinear& layer : hidden_) macs += layer.macsPerRow();
  return macs;
}

}  // namespace einjit::models
