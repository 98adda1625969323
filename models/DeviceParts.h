// What the device models share (models/DeviceGpt.h, models/DeviceMlp.h): a CPU model's
// parameters on an OpDevice, and its structured linear layers' kernels with their weight
// normalisation.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/cuda/CudaOps.h"
#include "runtime/cuda/DeviceLinear.h"
#include "runtime/ops/StructuredLinear.h"

namespace einjit::models {

// The GPU, or UserError with the driver's reason: "<what>: <reason>; <instead>" (e.g. "--device
// cuda: no CUDA driver: ...; train with --device cpu").
cuda::OpDevice& usableGpu(const std::string& what, const std::string& instead);

// A model's parameters (in its parameters() order) on a device: the f32 master weights, the
// copies one step computes on (in the compute precision: the masters themselves at f32) and
// that step's gradients (in the compute precision).
class DeviceParameters {
 public:
  // `what` names the model in messages ("device GPT").
  DeviceParameters(const std::vector<rt::ParameterInfo>& params, cuda::OpDevice& device, cuda::Precision compute,
                   std::string what);

  cuda::OpDevice& device() const { return *device_; }
  cuda::Precision compute() const { return compute_; }
  // The index of the parameter named `name` (UserError when the model has none).
  int index(const std::string& name) const;

  // Starts a step: fresh compute copies of the masters, no gradients.
  void beginStep();
  const cuda::DeviceTensor& value(int i) const { return compute_copies_[static_cast<std::size_t>(i)]; }
  const cuda::DeviceTensor& master(int i) const { return masters_[static_cast<std::size_t>(i)]; }
  cuda::DeviceTensor& grad(int i) { return grads_[static_cast<std::size_t>(i)]; }

  std::vector<cuda::DeviceTensor>& masters() { return masters_; }
  const std::vector<cuda::DeviceTensor>& gradients() const { return grads_; }
  // AdamW's groups over the masters: each parameter's lr multiplier and decay flag.
  std::vector<cuda::DeviceAdamW::Parameter> optimizerParameters() const;
  // Writes the masters into `target` (the parameters these came from: same names and shapes).
  void copyTo(const std::vector<rt::ParameterInfo>& target) const;

 private:
  cuda::OpDevice* device_;
  cuda::Precision compute_;
  std::string what_;
  std::vector<rt::ParameterInfo> info_;
  std::map<std::string, int> byName_;
  std::vector<cuda::DeviceTensor> masters_, compute_copies_, grads_;
};

// A bias-free rt::StructuredLinear on the device: its kernels (cuda::DeviceLinear) and the
// parameters they take. A weight the layer normalises (`norm`) is normalised from its f32
// master every step (cuda::weightNorm), and its gradient is carried back through the norm.
class DeviceStructuredLinear {
 public:
  DeviceStructuredLinear(const rt::StructuredLinear& layer, const DeviceParameters& params);

  // x (rows, dIn) -> (rows, dOut); `kernelWeights` receives what the kernels took, for backward().
  cuda::DeviceTensor forward(const DeviceParameters& params, const cuda::DeviceTensor& x,
                             std::vector<cuda::DeviceTensor>& kernelWeights) const;
  // Stores the gradients of the layer's parameters in `params` and returns dx.
  cuda::DeviceTensor backward(DeviceParameters& params, const cuda::DeviceTensor& x,
                              const std::vector<cuda::DeviceTensor>& kernelWeights,
                              const cuda::DeviceTensor& dy) const;

 private:
  struct Weight {
    int param = -1;
    bool normalised = false;
    int gain = -1;  // the WeightNorm gain (-1: none)
    double sigma = 0, eps = 0;
  };
  cuda::DeviceLinear kernels_;
  std::vector<Weight> weights_;
};

}  // namespace einjit::models
