// GPT-2 (models/Gpt.h) on an OpDevice (the GPU, or the host simulation in tests): the parameters,
// their gradients and AdamW's state live on the device. Forward and backward are written out
// (as in llm.c: the forward keeps what the backward needs, the backward walks the model in
// reverse), on the op kernels of runtime/cuda and every linear layer's compiled kernels
// (cuda::DeviceLinear). The function and its gradients are Gpt's.
//
// Storage is f32 (bf16 autocast is not there yet); structures with weight normalisation
// (`norm`) are refused with a UserError for now.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/Gpt.h"
#include "runtime/cuda/CudaOps.h"
#include "runtime/cuda/DeviceLinear.h"

namespace einjit::models {

class DeviceGpt {
 public:
  // Copies `model`'s parameters to `device` and loads every linear layer's kernels there.
  DeviceGpt(const Gpt& model, cuda::OpDevice& device);
  ~DeviceGpt();

  // Mean next-token cross-entropy of a batch (tokens and targets batch-major, as Gpt::loss);
  // with `backward`, gradients() then hold d(loss)/d(parameter).
  double loss(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets, int64_t batch,
              int64_t seq, bool backward);

  // In Gpt::parameters() order.
  std::vector<cuda::DeviceTensor>& parameters() { return params_; }
  const std::vector<cuda::DeviceTensor>& gradients() const { return grads_; }
  // AdamW's groups (lr multiplier, decay) over parameters(), as Gpt::parameters() says.
  std::vector<cuda::DeviceAdamW::Parameter> optimizerParameters() const;
  // Writes the device's parameter values into `model` (the model this was made from).
  void copyParametersTo(const Gpt& model) const;

 private:
  struct Linear;
  struct Block;
  struct Activations;

  cuda::DeviceTensor& grad(int index);
  void backward(const Activations& saved);

  GptConfig config_;
  cuda::OpDevice* device_;
  std::vector<cuda::DeviceTensor> params_, grads_;
  std::vector<rt::ParameterInfo> info_;
  int wte_ = -1, wpe_ = -1;
  std::vector<Block> blocks_;
  int lnFGamma_ = -1, lnFBeta_ = -1;
  std::unique_ptr<Linear> head_;
};

}  // namespace einjit::models
