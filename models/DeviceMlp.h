// The MLP models (models/ResidualMlp.h, models/MlpClassifier.h) on an OpDevice, written out like
// models/DeviceGpt.h: an explicit forward that keeps what the backward needs, an explicit
// backward, parameters and gradients on the device (DeviceParameters), f32 or bf16 autocast.
// The functions and gradients are those of the CPU models.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/DeviceParts.h"
#include "models/MlpClassifier.h"
#include "models/ResidualMlp.h"

namespace einjit::models {

class DeviceResidualMlp {
 public:
  DeviceResidualMlp(const ResidualMlp& model, cuda::OpDevice& device, cuda::Precision compute = cuda::Precision::F32);
  ~DeviceResidualMlp();

  // Mean squared error of the model on x (n, inputDim) against y (n, 1), host tensors; with
  // `backward`, gradients() then hold d(loss)/d(parameter).
  double loss(const Tensor& x, const Tensor& y, bool backward);

  std::vector<cuda::DeviceTensor>& parameters() { return params_.masters(); }
  const std::vector<cuda::DeviceTensor>& gradients() const { return params_.gradients(); }
  std::vector<cuda::DeviceAdamW::Parameter> optimizerParameters() const { return params_.optimizerParameters(); }
  void copyParametersTo(const ResidualMlp& model) const { params_.copyTo(model.parameters()); }

 private:
  struct Block {
    int lnGamma = -1, lnBeta = -1;
    std::unique_ptr<DeviceStructuredLinear> fc, proj;
  };
  ResidualMlpConfig config_;
  DeviceParameters params_;
  std::unique_ptr<DeviceStructuredLinear> input_, output_;
  int inputLnGamma_ = -1, inputLnBeta_ = -1;
  std::vector<Block> blocks_;
};

class DeviceMlpClassifier {
 public:
  DeviceMlpClassifier(const MlpClassifier& model, cuda::OpDevice& device,
                      cuda::Precision compute = cuda::Precision::F32);
  ~DeviceMlpClassifier();

  // Mean softmax cross-entropy of images (n, inputDim) against their labels; with `backward`,
  // gradients() then hold d(loss)/d(parameter).
  double loss(const Tensor& images, const std::vector<int32_t>& labels, bool backward);

  std::vector<cuda::DeviceTensor>& parameters() { return params_.masters(); }
  const std::vector<cuda::DeviceTensor>& gradients() const { return params_.gradients(); }
  std::vector<cuda::DeviceAdamW::Parameter> optimizerParameters() const { return params_.optimizerParameters(); }
  void copyParametersTo(const MlpClassifier& model) const { params_.copyTo(model.parameters()); }

 private:
  MlpClassifierConfig config_;
  DeviceParameters params_;
  std::unique_ptr<DeviceStructuredLinear> input_, output_;
  std::vector<std::unique_ptr<DeviceStructuredLinear>> hidden_;
};

}  // namespace einjit::models
