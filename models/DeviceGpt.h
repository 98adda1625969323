// GPT-2 (models/Gpt.h) on an OpDevice (the GPU, or the host simulation in tests): the parameters,
// their gradients and AdamW's state live on the device. Forward and backward are written out
// (as in llm.c: the forward keeps what the backward needs, the backward walks the model in
// reverse), on the op kernels of runtime/cuda and every linear layer's compiled kernels
// (cuda::DeviceLinear). The function and its gradients are Gpt's.
//
// Parameters and AdamW's moments are f32. With bf16 autocast (compute = BF16) each step
// computes on bf16 copies of the parameters: activations and gradients are bf16, every kernel
// accumulates in fp32, the loss and the softmax / LayerNorm statistics stay f32, and AdamW
// updates the f32 master weights from the bf16 gradients. Weight-normalised structures (`norm`)
// normalise their cores from the f32 masters on the device every step (cuda::weightNorm).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/DeviceParts.h"
#include "models/Gpt.h"
#include "runtime/cuda/CudaOps.h"

namespace einjit::models {

class DeviceGpt {
 public:
  // Copies `model`'s parameters to `device` and loads every linear layer's kernels there, for
  // `compute` storage (f32, or bf16 autocast).
  DeviceGpt(const Gpt& model, cuda::OpDevice& device, cuda::Precision compute = cuda::Precision::F32);
  ~DeviceGpt();

  // Mean next-token cross-entropy of a batch (tokens and targets batch-major, as Gpt::loss);
  // with `backward`, gradients() then hold d(loss)/d(parameter).
  double loss(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets, int64_t batch,
              int64_t seq, bool backward);

  cuda::Precision computePrecision() const { return params_.compute(); }
  // In Gpt::parameters() order: the f32 master weights, and the gradients of the last backward
  // pass in the compute precision.
  std::vector<cuda::DeviceTensor>& parameters() { return params_.masters(); }
  const std::vector<cuda::DeviceTensor>& gradients() const { return params_.gradients(); }
  // AdamW's groups (lr multiplier, decay) over parameters(), as Gpt::parameters() says.
  std::vector<cuda::DeviceAdamW::Parameter> optimizerParameters() const { return params_.optimizerParameters(); }
  // Writes the device's parameter values into `model` (the model this was made from).
  void copyParametersTo(const Gpt& model) const { params_.copyTo(model.parameters()); }

 private:
  struct Block;
  struct Activations;

  void backward(const Activations& saved);

  GptConfig config_;
  DeviceParameters params_;
  int wte_ = -1, wpe_ = -1;
  std::vector<Block> blocks_;
  int lnFGamma_ = -1, lnFBeta_ = -1;
  std::unique_ptr<DeviceStructuredLinear> head_;
};

}  // namespace einjit::models
