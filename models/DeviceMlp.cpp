#include "models/DeviceMlp.h"

#include <string>

#include "einjit/error.h"

namespace einjit::models {

using cuda::DeviceTensor;

namespace {

// x (host) on the device in the compute precision, checked against the model's input width.
DeviceTensor uploadInput(const DeviceParameters& params, const Tensor& x, int64_t width, const char* what) {
  if (x.rank() != 2 || x.shape()[1] != width || x.shape()[0] < 1)
    throw UserError(std::string(what) + ": the input has shape " + shapeToString(x.shape()) + ", expected (rows >= 1, " +
                    std::to_string(width) + ")");
  return DeviceTensor::upload(params.device(), x, params.compute());
}

}  // namespace

// ---- residual MLP ----

DeviceResidualMlp::DeviceResidualMlp(const ResidualMlp& model, cuda::OpDevice& device, cuda::Precision compute)
    : config_(model.config()), params_(model.parameters(), device, compute, "device residual MLP") {
  auto linear = [&](const std::string& name) {
    return std::make_unique<DeviceStructuredLinear>(model.linear(name), params_);
  };
  input_ = linear("input");
  inputLnGamma_ = params_.index("input_ln.gamma");
  inputLnBeta_ = params_.index("input_ln.beta");
  for (int64_t i = 0; i < config_.nBlocks; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    Block b;
    b.lnGamma = params_.index(p + "ln.gamma");
    b.lnBeta = params_.index(p + "ln.beta");
    b.fc = linear(p + "fc");
    b.proj = linear(p + "proj");
    blocks_.push_back(std::move(b));
  }
  output_ = linear("output");
}

DeviceResidualMlp::~DeviceResidualMlp() = default;

double DeviceResidualMlp::loss(const Tensor& x, const Tensor& y, bool backward) {
  const DeviceTensor input = uploadInput(params_, x, config_.inputDim, "device residual MLP");
  if (y.shape() != Shape{x.shape()[0], 1})
    throw UserError("device residual MLP: the targets have shape " + shapeToString(y.shape()) + ", expected (" +
                    std::to_string(x.shape()[0]) + ", 1)");
  const DeviceTensor target = DeviceTensor::upload(params_.device(), y, params_.compute());
  params_.beginStep();
  auto P = [&](int i) -> const DeviceTensor& { return params_.value(i); };

  // Forward, keeping what the backward reads.
  struct Saved {
    DeviceTensor hIn;
    cuda::LayerNormForward ln;
    DeviceTensor fcOut, geluOut;
    std::vector<DeviceTensor> fcWeights, projWeights;
  };
  std::vector<DeviceTensor> inputWeights, outputWeights;
  const DeviceTensor h0 = input_->forward(params_, input, inputWeights);
  const DeviceTensor g0 = cuda::gelu(h0);
  const cuda::LayerNormForward inputLn = cuda::layerNorm(g0, &P(inputLnGamma_), &P(inputLnBeta_));
  DeviceTensor h = inputLn.y;
  std::vector<Saved> saved;
  for (const Block& b : blocks_) {
    Saved s;
    s.hIn = h;
    s.ln = cuda::layerNorm(h, &P(b.lnGamma), &P(b.lnBeta));
    s.fcOut = b.fc->forward(params_, s.ln.y, s.fcWeights);
    s.geluOut = cuda::gelu(s.fcOut);
    h = cuda::add(h, b.proj->forward(params_, s.geluOut, s.projWeights));
    saved.push_back(std::move(s));
  }
  const DeviceTensor out = output_->forward(params_, h, outputWeights);
  const double value = cuda::meanSquaredError(out, target).download(DType::F64).get(0);
  if (!backward) return value;

  auto layerNormBackward = [&](const DeviceTensor& xIn, int gamma, int beta, const cuda::LayerNormForward& ln,
                               const DeviceTensor& dy) {
    cuda::LayerNormGradients g = cuda::layerNormBackward(xIn, &P(gamma), ln, dy, true);
    params_.grad(gamma) = std::move(g.dgamma);
    params_.grad(beta) = std::move(g.dbeta);
    return std::move(g.dx);
  };
  DeviceTensor dh = output_->backward(params_, h, outputWeights, cuda::meanSquaredErrorBackward(out, target));
  for (std::size_t i = blocks_.size(); i-- > 0;) {
    const Block& b = blocks_[i];
    const Saved& s = saved[i];
    // h = hIn + proj(gelu(fc(ln(hIn))))
    const DeviceTensor dgelu = b.proj->backward(params_, s.geluOut, s.projWeights, dh);
    const DeviceTensor dln = b.fc->backward(params_, s.ln.y, s.fcWeights, cuda::geluBackward(s.fcOut, dgelu));
    dh = cuda::add(dh, layerNormBackward(s.hIn, b.lnGamma, b.lnBeta, s.ln, dln));
  }
  const DeviceTensor dg0 = layerNormBackward(g0, inputLnGamma_, inputLnBeta_, inputLn, dh);
  input_->backward(params_, input, inputWeights, cuda::geluBackward(h0, dg0));
  return value;
}

// ---- MLP classifier ----

DeviceMlpClassifier::DeviceMlpClassifier(const MlpClassifier& model, cuda::OpDevice& device, cuda::Precision compute)
    : config_(model.config()), params_(model.parameters(), device, compute, "device MLP classifier") {
  input_ = std::make_unique<DeviceStructuredLinear>(model.linear("input"), params_);
  for (int64_t i = 0; i < config_.nHidden; ++i)
    hidden_.push_back(std::make_unique<DeviceStructuredLinear>(model.linear("hidden." + std::to_string(i)), params_));
  output_ = std::make_unique<DeviceStructuredLinear>(model.linear("output"), params_);
}

DeviceMlpClassifier::~DeviceMlpClassifier() = default;

double DeviceMlpClassifier::loss(const Tensor& images, const std::vector<int32_t>& labels, bool backward) {
  const DeviceTensor input = uploadInput(params_, images, config_.inputDim, "device MLP classifier");
  if (static_cast<int64_t>(labels.size()) != images.shape()[0])
    throw UserError("device MLP classifier: " + std::to_string(labels.size()) + " labels for " +
                    std::to_string(images.shape()[0]) + " images");
  const cuda::DeviceIds targets(params_.device(), labels, config_.classes, "crossEntropy");
  params_.beginStep();

  // a[k]: the pre-activations, r[k] = relu(a[k]); layer k reads r[k - 1] (the input for k = 0).
  const std::size_t layers = hidden_.size() + 1;
  std::vector<DeviceTensor> a(layers), r(layers);
  std::vector<std::vector<DeviceTensor>> weights(layers + 1);
  auto layer = [&](std::size_t k) -> const DeviceStructuredLinear& { return k == 0 ? *input_ : *hidden_[k - 1]; };
  for (std::size_t k = 0; k < layers; ++k) {
    a[k] = layer(k).forward(params_, k == 0 ? input : r[k - 1], weights[k]);
    r[k] = cuda::relu(a[k]);
  }
  const DeviceTensor logits = output_->forward(params_, r.back(), weights[layers]);
  const cuda::CrossEntropyForward crossEntropy = cuda::crossEntropy(logits, targets);
  const double value = crossEntropy.loss.download(DType::F64).get(0);
  if (!backward) return value;

  DeviceTensor dr = output_->backward(params_, r.back(), weights[layers],
                                      cuda::crossEntropyBackward(logits, targets, crossEntropy, 1.0));
  for (std::size_t k = layers; k-- > 0;)
    dr = layer(k).backward(params_, k == 0 ? input : r[k - 1], weights[k], cuda::reluBackward(a[k], dr));
  return value;
}

}  // namespace einjit::models
