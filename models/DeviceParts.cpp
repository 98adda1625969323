#include "models/DeviceParts.h"

#include <utility>

#include "compiler/cuda/CudaDriver.h"
#include "compiler/kernel/KernelProgram.h"
#include "einjit/error.h"

namespace einjit::models {

using cuda::DeviceTensor;

cuda::OpDevice& usableGpu(const std::string& what, const std::string& instead) {
  if (!cuda::cudaAvailable()) {
    // The driver's reason ends with advice for the einsum commands; `instead` replaces it.
    std::string reason = cuda::cudaUnavailableReason();
    const std::string hint = "; use --target cpu";
    if (reason.size() >= hint.size() && reason.compare(reason.size() - hint.size(), hint.size(), hint) == 0)
      reason.resize(reason.size() - hint.size());
    throw UserError(what + ": " + reason + "; " + instead);
  }
  return cuda::gpuOpDevice();
}

DeviceParameters::DeviceParameters(const std::vector<rt::ParameterInfo>& params, cuda::OpDevice& device,
                                   cuda::Precision compute, std::string what)
    : device_(&device), compute_(compute), what_(std::move(what)), info_(params) {
  if (compute != cuda::Precision::F32 && compute != cuda::Precision::BF16)
    throw UserError(what_ + ": computes in f32 or bf16, not " + cuda::precisionName(compute));
  for (std::size_t i = 0; i < info_.size(); ++i) {
    byName_[info_[i].var->name] = static_cast<int>(i);
    masters_.push_back(DeviceTensor::upload(device, info_[i].var->value, cuda::Precision::F32));
  }
  grads_.resize(masters_.size());
}

int DeviceParameters::index(const std::string& name) const {
  auto found = byName_.find(name);
  if (found == byName_.end()) throw UserError(what_ + ": the model has no parameter '" + name + "'");
  return found->second;
}

void DeviceParameters::beginStep() {
  compute_copies_.clear();
  for (const DeviceTensor& master : masters_) compute_copies_.push_back(cuda::convert(master, compute_));
  for (DeviceTensor& g : grads_) g = DeviceTensor();
}

std::vector<cuda::DeviceAdamW::Parameter> DeviceParameters::optimizerParameters() const {
  std::vector<cuda::DeviceAdamW::Parameter> out;
  for (std::size_t i = 0; i < masters_.size(); ++i)
    out.push_back({masters_[i], info_[i].lrMultiplier, info_[i].weightDecay});
  return out;
}

void DeviceParameters::copyTo(const std::vector<rt::ParameterInfo>& target) const {
  if (target.size() != masters_.size()) throw UserError(what_ + ": the model to copy into is another model");
  for (std::size_t i = 0; i < masters_.size(); ++i) {
    if (target[i].var->name != info_[i].var->name || target[i].var->value.shape() != masters_[i].shape())
      throw UserError(what_ + ": the model to copy into is another model (parameter '" + target[i].var->name + "')");
    target[i].var->value = masters_[i].download(target[i].var->value.dtype());
  }
}

DeviceStructuredLinear::DeviceStructuredLinear(const rt::StructuredLinear& layer, const DeviceParameters& params)
    : kernels_(params.device(), layer.program(), params.compute()) {
  const ir::LayerProgram& program = layer.program();
  if (layer.parameters().size() != program.params.size())
    throw UserError("layer " + program.spec + " has a bias, which the device models do not take");
  for (const KernelParameterInput& input : kernelParameterInputs(program)) {
    Weight weight;
    weight.param = params.index(layer.parameters()[input.param].var->name);
    if (input.weightNormOp >= 0) {
      const ir::Op& op = program.ops[input.weightNormOp];
      weight.normalised = true;
      weight.sigma = op.normSigma;
      weight.eps = op.normEps;
      if (op.inputs.size() > 1)
        for (std::size_t k = 0; k < program.params.size(); ++k)
          if (program.params[k].value == op.inputs[1]) weight.gain = params.index(layer.parameters()[k].var->name);
    }
    weights_.push_back(weight);
  }
}

DeviceTensor DeviceStructuredLinear::forward(const DeviceParameters& params, const DeviceTensor& x,
                                             std::vector<DeviceTensor>& kernelWeights) const {
  kernelWeights.clear();
  for (const Weight& w : weights_)
    kernelWeights.push_back(w.normalised ? cuda::weightNorm(params.master(w.param),
                                                            w.gain >= 0 ? &params.master(w.gain) : nullptr, w.sigma,
                                                            w.eps, params.compute())
                                         : params.value(w.param));
  return kernels_.forward(kernelWeights, x);
}

DeviceTensor DeviceStructuredLinear::backward(DeviceParameters& params, const DeviceTensor& x,
                                              const std::vector<DeviceTensor>& kernelWeights,
                                              const DeviceTensor& dy) const {
  cuda::DeviceLinear::Gradients g = kernels_.backward(kernelWeights, x, dy);
  for (std::size_t k = 0; k < weights_.size(); ++k) {
    const Weight& w = weights_[k];
    if (!w.normalised) {
      params.grad(w.param) = std::move(g.dweights[k]);
      continue;
    }
    cuda::WeightNormGradients chained = cuda::weightNormBackward(
        params.master(w.param), w.gain >= 0 ? &params.master(w.gain) : nullptr, w.sigma, w.eps, g.dweights[k]);
    params.grad(w.param) = std::move(chained.dw);
    if (w.gain >= 0) params.grad(w.gain) = chained.dgamma.reshaped(params.master(w.gain).shape());
  }
  return std::move(g.dx);
}

}  // namespace einjit::models
