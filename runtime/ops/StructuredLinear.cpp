#include "runtime/ops/StructuredLinear.h"

#include <utility>

#include "compiler/cpu/CpuBackend.h"
#include "compiler/kernel/KernelProgram.h"
#include "frontend/structures/Structures.h"
#include "runtime/ops/OpsDetail.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/reference/WeightNorm.h"

namespace einjit::rt {

struct StructuredLinear::State {
  ir::LayerProgram program;
  DType dtype = DType::F32;
  // forward: inference (y only); training: y and what the backward needs, and the backward on
  // those (trainingKernels), used when the tape records gradients.
  KernelProgram forward;
  TrainingKernels training;
  std::shared_ptr<const cpu::LoadedKernel> forwardCode, trainingForwardCode, backwardCode;
  std::vector<KernelParameterInput> kernelInputs;
  bool normalised = false;   // some kernel input is a weight-normalised parameter
  std::vector<Var> weights;  // one per IR parameter, in IR order
  Var bias;                  // null without bias

  // The parameter values by IR name, as the host weight-normalisation helpers take them.
  TensorMap parameterMap() const {
    TensorMap params;
    for (size_t i = 0; i < weights.size(); ++i)
      params.emplace(program.params[i].name, weights[i]->value);
    return params;
  }
};

namespace {

// Adds bias[j] to every row of y (n, d).
template <class T>
void addBiasRows(Tensor& y, const Tensor& bias) {
  const int64_t rows = y.shape()[0], width = y.shape()[1];
  T* dst = y.data<T>();
  const T* b = bias.data<T>();
  detail::parallelChunks(rows, detail::rowsPerChunk(width),
                         [&](int64_t, int64_t begin, int64_t end) {
                           for (int64_t r = begin; r < end; ++r)
                             for (int64_t j = 0; j < width; ++j) dst[r * width + j] += b[j];
                         });
}

}  // namespace

StructuredLinear::StructuredLinear(std::string name, const std::string& spec, int64_t dIn,
                                   int64_t dOut, bool bias, uint64_t seed, DType dtype,
                                   bool zeroLast, int64_t muPBaseWidth)
    : name_(std::move(name)) {
  if (muPBaseWidth < 0)
    throw UserError("layer '" + name_ + "': muPBaseWidth must be >= 0 (0: the input width), got " +
                    std::to_string(muPBaseWidth));
  // A bare structure name ("dense") means the structure with its defaults ("dense()").
  const bool bareName = spec.find('(') == std::string::npos;
  program_ = buildLayer(parseStructureSpec(bareName ? spec + "()" : spec), dIn, dOut);
  if (muPBaseWidth > 0) applyMup(program_, muPBaseWidth);
  TensorMap initial = initLayerParams(program_, seed, dtype, zeroLast);

  auto state = std::make_shared<State>();
  state->program = program_;
  state->dtype = dtype;
  for (const ir::Parameter& param : program_.params) {
    Var var = parameter(std::move(initial.at(param.name)), name_ + "." + param.name);
    state->weights.push_back(var);
    params_.push_back({var, param.lrMult, param.weightDecay});
  }
  if (bias) {
    state->bias = parameter(Tensor(dtype, {dOut}), name_ + ".bias");
    params_.push_back({state->bias, 1.0, false});
  }
  state->kernelInputs = kernelParameterInputs(program_);
  for (const KernelParameterInput& input : state->kernelInputs)
    state->normalised = state->normalised || input.weightNormOp >= 0;
  state->forward = forwardKernel(program_, dtype);
  state->training = trainingKernels(program_, dtype);
  state->forwardCode = cpu::compileKernel(state->forward);
  state->trainingForwardCode = cpu::compileKernel(state->training.forward);
  state->backwardCode = cpu::compileKernel(state->training.backward);
  state_ = std::move(state);
}

int64_t StructuredLinear::macsPerRow() const { return program_.macsPerRow(); }

Var StructuredLinear::forward(Tape& tape, const Var& x) const {
  const std::string where = "layer '" + name_ + "' (" + program_.spec + ")";
  if (!x) throw UserError(where + ": x is null");
  const Tensor& input = x->value;
  if (input.rank() != 2 || input.shape()[1] != program_.dIn)
    throw UserError(where + ": x has shape " + shapeToString(input.shape()) + ", expected (rows, " +
                    std::to_string(program_.dIn) + ")");
  if (input.dtype() != state_->dtype)
    throw UserError(where + ": x is " + dtypeName(input.dtype()) + " but the parameters are " +
                    dtypeName(state_->dtype) + "; both must have the same dtype");
  const State& state = *state_;
  const int64_t rows = input.shape()[0];

  // The kernel's parameter inputs: the parameters in place, or their normalised weights (kept
  // for the backward pass, which takes the same inputs).
  auto normalisedWeights = std::make_shared<std::vector<Tensor>>();
  std::vector<const Tensor*> inputs = {&input};
  if (state.normalised) {
    *normalisedWeights = kernelParameterTensors(state.program, state.parameterMap(), state.dtype);
    for (const Tensor& weight : *normalisedWeights) inputs.push_back(&weight);
  } else {
    for (const KernelParameterInput& kernelInput : state.kernelInputs)
      inputs.push_back(&state.weights[kernelInput.param]->value);
  }
  bool anyGrad = x->requiresGrad || (state.bias && state.bias->requiresGrad);
  for (const Var& weight : state.weights) anyGrad = anyGrad || weight->requiresGrad;
  const bool recordGrad = tape.recording() && anyGrad;

  // The compiled kernels overwrite every element of their outputs. With gradients to come, the
  // forward also writes the values the backward reads (kept by the closure below).
  Tensor y = Tensor::uninitialised(state.dtype, {rows, program_.dOut});
  auto saved = std::make_shared<std::vector<Tensor>>();
  if (recordGrad) {
    *saved = cpu::runTrainingForward(state.training.forward, *state.trainingForwardCode, rows, inputs, y);
  } else {
    cpu::runKernel(state.forward, *state.forwardCode, rows, inputs, {&y});
  }
  if (state.bias)
    detail::dispatch(state.dtype,
                     [&](auto tag) { addBiasRows<decltype(tag)>(y, state.bias->value); });

  Var out = detail::makeResult(std::move(y), recordGrad);
  if (!out->requiresGrad) return out;

  tape.record([out, x, statePtr = state_, normalisedWeights, saved] {
    if (out->grad.numel() == 0) return;
    const State& s = *statePtr;
    const int64_t n = x->value.shape()[0];
    std::vector<const Tensor*> kernelInputs = {&x->value};
    if (s.normalised) {
      for (const Tensor& weight : *normalisedWeights) kernelInputs.push_back(&weight);
    } else {
      for (const KernelParameterInput& kernelInput : s.kernelInputs)
        kernelInputs.push_back(&s.weights[kernelInput.param]->value);
    }
    kernelInputs.push_back(&out->grad);
    for (const Tensor& value : *saved) kernelInputs.push_back(&value);

    // dx, then the gradient of every kernel parameter input.
    std::vector<Tensor> gradients;
    gradients.push_back(Tensor::uninitialised(s.dtype, Shape{n, s.program.dIn}));
    for (const KernelParameterInput& kernelInput : s.kernelInputs) {
      const Shape& shape = s.program.params[kernelInput.param].shape;
      gradients.push_back(Tensor::uninitialised(s.dtype, shape));
    }
    std::vector<Tensor*> outputs;
    for (Tensor& gradient : gradients) outputs.push_back(&gradient);
    cpu::runKernel(s.training.backward, *s.backwardCode, n, kernelInputs, outputs);

    if (x->requiresGrad) detail::accumulate(*x, std::move(gradients[0]));
    if (s.normalised) {
      std::vector<const Tensor*> kernelGradients;
      for (size_t k = 1; k < gradients.size(); ++k) kernelGradients.push_back(&gradients[k]);
      TensorMap byName =
          layerParameterGradients(s.program, s.parameterMap(), kernelGradients, s.dtype);
      for (size_t i = 0; i < s.weights.size(); ++i)
        if (s.weights[i]->requiresGrad)
          detail::accumulate(*s.weights[i], std::move(byName.at(s.program.params[i].name)));
    } else {
      for (size_t k = 0; k < s.kernelInputs.size(); ++k) {
        VarData& weight = *s.weights[s.kernelInputs[k].param];
        if (weight.requiresGrad) detail::accumulate(weight, std::move(gradients[k + 1]));
      }
    }
    if (s.bias && s.bias->requiresGrad)
      detail::dispatch(s.dtype, [&](auto tag) {
        detail::accumulate(*s.bias, detail::columnSums<decltype(tag)>(out->grad));
      });
  });
  return out;
}

}  // namespace einjit::rt
