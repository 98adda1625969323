// An MLP image classifier: input Linear(pixels -> width) -> ReLU, nHidden x
// (Linear(width -> width, structure) -> ReLU), output Linear(width -> classes, dense);
// softmax cross-entropy. Names: input.W, hidden.{i}.P, output.W.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/ModelParts.h"
#include "runtime/ops/StructuredLinear.h"

namespace einjit::models {

struct MlpClassifierConfig {
  int64_t inputDim = 256;
  int64_t width = 256;
  int64_t nHidden = 2;
  int64_t classes = 10;
  std::string structure = "dense";
  int64_t muPBaseWidth = 0;
  uint64_t seed = 0;
  DType dtype = DType::F32;
};

class MlpClassifier {
 public:
  explicit MlpClassifier(MlpClassifierConfig config);

  const MlpClassifierConfig& config() const { return config_; }
  // x (n, inputDim) -> logits (n, classes).
  rt::Var logits(rt::Tape& tape, const rt::Var& x) const;
  // Mean cross-entropy against labels in [0, classes).
  rt::Var loss(rt::Tape& tape, const rt::Var& x, const std::vector<int32_t>& labels) const;

  const std::vector<rt::ParameterInfo>& parameters() const { return params_; }
  int64_t parameterCount() const;
  // The linear layer named "input", "hidden.<i>" or "output"; UserError for other names.
  const rt::StructuredLinear& linear(const std::string& name) const;
  int64_t macsPerExample() const;  // every linear layer

 private:
  MlpClassifierConfig config_;
  rt::StructuredLinear input_;
  std::vector<rt::StructuredLinear> hidden_;
  rt::StructuredLinear output_;
  std::vector<rt::ParameterInfo> params_;  // in the order above
};

}  // namespace einjit::models
