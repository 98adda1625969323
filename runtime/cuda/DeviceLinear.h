// A structured linear layer's compiled kernels (forwardKernel and backwardKernel of
// compiler/kernel, rendered by CudaEmitter) on an OpDevice, on device tensors: the device
// counterpart of the kernel calls in rt::StructuredLinear. The weights are the kernels'
// parameter inputs in kernelParameterInputs order: the parameters themselves, or their
// normalised weights when the layer has `norm`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "frontend/structures/LayerIR.h"
#include "runtime/cuda/CudaOps.h"

namespace einjit::cuda {

// Runs every launch of `program` for `rows` rows on device buffers (the program's inputs, then
// its outputs); scratch buffers come from the device's allocator.
void runDeviceProgram(OpDevice& device, DeviceProgram& program, int64_t rows, const std::vector<uint64_t>& buffers);

class DeviceLinear {
 public:
  // Loads both kernels at `precision` (f32 or bf16 storage, fp32 accumulation).
  DeviceLinear(OpDevice& device, const ir::LayerProgram& layer, Precision precision);

  const ir::LayerProgram& layer() const { return layer_; }
  Precision precision() const { return precision_; }
  // The shapes `weights` must have, in order.
  const std::vector<Shape>& weightShapes() const { return weightShapes_; }

  // x (rows, dIn) -> y (rows, dOut).
  DeviceTensor forward(const std::vector<DeviceTensor>& weights, const DeviceTensor& x) const;

  struct Gradients {
    DeviceTensor dx;                     // (rows, dIn)
    std::vector<DeviceTensor> dweights;  // one per weight, in the same order
  };
  // The gradients of sum(y * dy) for y = forward(weights, x).
  Gradients backward(const std::vector<DeviceTensor>& weights, const DeviceTensor& x, const DeviceTensor& dy) const;

 private:
  void checkOperands(const char* pass, const std::vector<DeviceTensor>& weights, const DeviceTensor& x) const;

  OpDevice* device_;
  ir::LayerProgram layer_;
  Precision precision_;
  std::vector<Shape> weightShapes_;
  std::vector<std::string> weightNames_;  // the IR parameters they come from, for messages
  std::shared_ptr<DeviceProgram> forward_, backward_;
};

}  // namespace einjit::cuda
