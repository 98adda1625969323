// The student of the synthetic teacher-regression task (structures.md section 6):
//   x (n, inputDim) -> input Linear (dense) -> GELU -> LayerNorm
//   nBlocks pre-LN residual blocks: x += proj(gelu(fc(ln(x)))), fc width -> 4 width,
//   proj 4 width -> width with its last core zeroed
//   -> output Linear(width -> 1, dense, zero-init); MSE loss.
// Only fc and proj take the structure. Names: input.W, input_ln.gamma/.beta,
// blocks.{i}.ln.gamma/.beta, blocks.{i}.fc.P, blocks.{i}.proj.P, output.W.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/ModelParts.h"
#include "runtime/ops/StructuredLinear.h"

namespace einjit::models {

struct ResidualMlpConfig {
  int64_t inputDim = 8;
  int64_t width = 64;
  int64_t nBlocks = 3;
  std::string structure = "dense";
  int64_t muPBaseWidth = 0;
  uint64_t seed = 0;
  DType dtype = DType::F32;
};

class ResidualMlp {
 public:
  explicit ResidualMlp(ResidualMlpConfig config);

  const ResidualMlpConfig& config() const { return config_; }
  // x (n, inputDim) -> predictions (n, 1).
  rt::Var forward(rt::Tape& tape, const rt::Var& x) const;
  // Mean squared error against y (n, 1).
  rt::Var loss(rt::Tape& tape, const rt::Var& x, const Tensor& y) const;

  const std::vector<rt::ParameterInfo>& parameters() const { return params_; }
  int64_t parameterCount() const;
  // The linear layer named "input", "blocks.<i>.fc", "blocks.<i>.proj" or "output"; UserError
  // for other names.
  const rt::StructuredLinear& linear(const std::string& name) const;
  // Forward MACs of one example (every linear layer).
  int64_t macsPerExample() const;

 private:
  struct Block {
    LayerNormParams ln;
    rt::StructuredLinear fc, proj;
  };

  ResidualMlpConfig config_;
  rt::StructuredLinear input_;
  LayerNormParams inputLn_;
  std::vector<Block> blocks_;
  rt::StructuredLinear output_;
  std::vector<rt::ParameterInfo> params_;  // in the order above
};

}  // namespace einjit::models
