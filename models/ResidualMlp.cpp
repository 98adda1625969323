#include "models/ResidualMlp.h"

#include "einjit/error.h"
#include "runtime/ops/Ops.h"

namespace einjit::models {
namespace {

ResidualMlpConfig checked(ResidualMlpConfig config) {
  if (config.inputDim < 1) throw UserError("residual MLP config: input dimension must be at least 1");
  if (config.width < 1) throw UserError("residual MLP config: width must be at least 1, got " + std::to_string(config.width));
  if (config.nBlocks < 0) throw UserError("residual MLP config: the number of blocks must be >= 0");
  if (config.muPBaseWidth < 0) throw UserError("residual MLP config: mup_base_width must be >= 0");
  return config;
}

}  // namespace

ResidualMlp::ResidualMlp(ResidualMlpConfig config)
    : config_(checked(std::move(config))),
      input_(makeLinear("input", "dense", config_.inputDim, config_.width, false, config_.seed,
                        config_.dtype, config_.muPBaseWidth)),
      inputLn_(makeLayerNorm("input_ln", config_.width, config_.dtype)),
      output_(makeLinear("output", "dense", config_.width, 1, /*zeroLast=*/true, config_.seed,
                         config_.dtype, config_.muPBaseWidth)) {
  const ResidualMlpConfig& c = config_;
  for (int64_t i = 0; i < c.nBlocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    blocks_.push_back(Block{
        makeLayerNorm(p + "ln", c.width, c.dtype),
        makeLinear(p + "fc", c.structure, c.width, 4 * c.width, false, c.seed, c.dtype, c.muPBaseWidth),
        makeLinear(p + "proj", c.structure, 4 * c.width, c.width, true, c.seed, c.dtype, c.muPBaseWidth),
    });
  }
  appendParameters(params_, input_);
  appendParameters(params_, inputLn_);
  for (const Block& b : blocks_) {
    appendParameters(params_, b.ln);
    appendParameters(params_, b.fc);
    appendParameters(params_, b.proj);
  }
  appendParameters(params_, output_);
}

rt::Var ResidualMlp::forward(rt::Tape& tape, const rt::Var& x) const {
  rt::Var h = rt::layerNorm(tape, rt::gelu(tape, input_.forward(tape, x)), inputLn_.gamma, inputLn_.beta);
  for (const Block& b : blocks_) {
    rt::Var branch = b.proj.forward(tape, rt::gelu(tape, b.fc.forward(tape, rt::layerNorm(tape, h, b.ln.gamma, b.ln.beta))));
    h = rt::add(tape, h, branch);
  }
  return output_.forward(tape, h);
}

rt::Var ResidualMlp::loss(rt::Tape& tape, const rt::Var& x, const Tensor& y) const {
  return rt::meanSquaredError(tape, forward(tape, x), y);
}

int64_t ResidualMlp::parameterCount() const { return models::parameterCount(params_); }

const rt::StructuredLinear& ResidualMlp::linear(const std::string& name) const {
  if (name == "input") return input_;
  if (name == "output") return output_;
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    if (name == p + "fc") return blocks_[i].fc;
    if (name == p + "proj") return blocks_[i].proj;
  }
  throw UserError("residual MLP: no linear layer named '" + name + "'");
}

int64_t ResidualMlp::macsPerExample() const {
  int64_t macs = input_.macsPerRow() + output_.macsPerRow();
  for (const Block& b : blocks_) macs += b.fc.macsPerRow() + b.proj.macsPerRow();
  return macs;
}

}  // namespace einjit::models
