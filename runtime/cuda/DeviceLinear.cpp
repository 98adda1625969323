#include "runtime/cuda/DeviceLinear.h"

#include <string>

#include "compiler/kernel/KernelProgram.h"
#include "einjit/error.h"

namespace einjit::cuda {

void runDeviceProgram(OpDevice& device, DeviceProgram& program, int64_t rows, const std::vector<uint64_t>& buffers) {
  const CudaProgram& rendering = program.rendering();
  std::vector<std::shared_ptr<DeviceMemory>> scratch;
  std::vector<uint64_t> arguments = buffers;
  for (const ScratchBuffer& buffer : rendering.scratch) {
    scratch.push_back(device.allocate(static_cast<std::size_t>(buffer.bytes(rows))));
    arguments.push_back(scratch.back()->address());
  }
  forEachLaunch(rendering, rows, [&](std::size_t k, unsigned grid, long long chunks) {
    program.launch(k, grid, rows, chunks, arguments);
  });
  // The scratch goes back to the allocator now; kernels run in launch order on one stream, so
  // the next user of a block only runs after these kernels.
}

DeviceLinear::DeviceLinear(OpDevice& device, const ir::LayerProgram& layer, Precision precision)
    : device_(&device), layer_(layer), precision_(precision) {
  if (precision != Precision::F32 && precision != Precision::BF16)
    throw UserError(std::string("device layers store f32 or bf16, not ") + precisionName(precision));
  for (const KernelParameterInput& input : kernelParameterInputs(layer_)) {
    weightShapes_.push_back(layer_.params[input.param].shape);
    weightNames_.push_back(layer_.params[input.param].name);
  }
  forward_ = device.loadProgram(forwardKernel(layer_, DType::F32), precision);
  backward_ = device.loadProgram(backwardKernel(layer_, DType::F32), precision);
}

void DeviceLinear::checkOperands(const char* pass, const std::vector<DeviceTensor>& weights,
                                 const DeviceTensor& x) const {
  const std::string where = "layer " + layer_.spec + " (" + pass + ")";
  auto check = [&](const DeviceTensor& t, const std::string& what, const Shape& expected) {
    if (!t.defined()) throw UserError(where + ": " + what + " is an undefined device tensor");
    if (&t.device() != device_) throw UserError(where + ": " + what + " lives on another device");
    if (t.precision() != precision_)
      throw UserError(where + ": " + what + " is " + precisionName(t.precision()) + ", the layer's kernels take " +
                      precisionName(precision_));
    if (t.shape() != expected)
      throw UserError(where + ": " + what + " has shape " + shapeToString(t.shape()) + ", expected " +
                      shapeToString(expected));
  };
  if (weights.size() != weightShapes_.size())
    throw UserError(where + ": " + std::to_string(weights.size()) + " weights given, the kernels take " +
                    std::to_string(weightShapes_.size()));
  if (!x.defined() || x.shape().size() != 2)
    throw UserError(where + ": x must be a 2-D device tensor (rows, " + std::to_string(layer_.dIn) + ")");
  check(x, "x", {x.shape()[0], layer_.dIn});
  for (std::size_t k = 0; k < weights.size(); ++k)
    check(weights[k], "weight " + std::to_string(k) + " (" + weightNames_[k] + ")", weightShapes_[k]);
}

DeviceTensor DeviceLinear::forward(const std::vector<DeviceTensor>& weights, const DeviceTensor& x) const {
  checkOperands("forward", weights, x);
  const int64_t rows = x.shape()[0];
  DeviceTensor y = DeviceTensor::empty(*device_, {rows, layer_.dOut}, precision_);
  if (rows == 0) return y;
  std::vector<uint64_t> buffers = {x.address()};
  for (const DeviceTensor& weight : weights) buffers.push_back(weight.address());
  buffers.push_back(y.address());
  runDeviceProgram(*device_, *forward_, rows, buffers);
  return y;
}

DeviceLinear::Gradients DeviceLinear::backward(const std::vector<DeviceTensor>& weights, const DeviceTensor& x,
                                               const DeviceTensor& dy) const {
  checkOperands("backward", weights, x);
  const int64_t rows = x.shape()[0];
  const Shape outputShape = {rows, layer_.dOut};
  if (!dy.defined() || dy.shape() != outputShape || &dy.device() != device_ || dy.precision() != precision_)
    throw UserError("layer " + layer_.spec + " (backward): dy must be a " + precisionName(precision_) +
                    " device tensor of shape " + shapeToString(outputShape) + " on the layer's device");
  Gradients gradients;
  gradients.dx = DeviceTensor::empty(*device_, {rows, layer_.dIn}, precision_);
  for (const Shape& shape : weightShapes_)
    gradients.dweights.push_back(rows == 0 ? DeviceTensor::zeros(*device_, shape, precision_)
                                           : DeviceTensor::empty(*device_, shape, precision_));
  if (rows == 0) return gradients;
  std::vector<uint64_t> buffers = {x.address()};
  for (const DeviceTensor& weight : weights) buffers.push_back(weight.address());
  buffers.push_back(dy.address());
  buffers.push_back(gradients.dx.address());
  for (const DeviceTensor& dweight : gradients.dweights) buffers.push_back(dweight.address());
  runDeviceProgram(*device_, *backward_, rows, buffers);
  return gradients;
}

}  // namespace einjit::cuda
