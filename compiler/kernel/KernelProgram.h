// A kernel program: the unit every compiled target (CPU JIT, later CUDA) compiles as one
// function. It is a straight-line list of layer-IR ops over values with fixed shapes, except the
// leading row axis of activations (ir::kRows), which stays dynamic in compiled code so one
// kernel serves every batch size and can be split across threads by rows.
//
// Allowed ops: Contract, Reshape, Permute, Pad, Truncate, Add (no WeightNorm: weight
// normalisation touches only parameters, so it runs on the host before/after the kernel).
#pragma once

#include <string>
#include <vector>

#include "compiler/planner/ContractionPlan.h"
#include "einjit/tensor.h"
#include "frontend/einsum/BoundEinsum.h"
#include "frontend/structures/LayerIR.h"

namespace einjit {

struct KernelProgram {
  std::string name;  // for messages and emitted symbol comments, e.g. "btt_forward"
  DType dtype = DType::F32;
  std::vector<ir::Value> values;
  std::vector<ir::Op> ops;
  std::vector<ir::ValueId> inputs;   // buffers passed in, in this order
  std::vector<ir::ValueId> outputs;  // buffers written, in this order (after the inputs)

  // True if the value's shape starts with the row axis.
  bool isRowValue(ir::ValueId id) const;
  // Canonical text of the program (ops, equations, shapes, dtype, inputs, outputs): equal
  // fingerprints mean identical generated code. Cache keys hash it.
  std::string fingerprint() const;
};

// Throws UserError unless `program` is well formed: value ids in range; inputs and outputs
// distinct; every value defined once (as an input or by one op) before it is used; kRows only as
// the leading extent; only the allowed ops, each consistent with the declared shapes (Contract:
// letters only, one term per input, explicit output, label sizes equal or 1; the row axis never
// reshaped, permuted, padded or truncated away).
void checkKernelProgram(const KernelProgram& program);

// One parameter input of forwardKernel / backwardKernel: the layer parameter it comes from and,
// when the layer normalises that parameter, the WeightNorm op whose result the kernel takes.
// Parameters used only as WeightNorm gains (the scalar gammas) are not kernel inputs.
struct KernelParameterInput {
  int param = -1;         // index into layer.params
  int weightNormOp = -1;  // index into layer.ops; -1: the kernel takes the parameter as it is
};
std::vector<KernelParameterInput> kernelParameterInputs(const ir::LayerProgram& layer);

// Forward of a layer. Inputs: x, then every non-scalar parameter in program order (the
// normalised weights when the layer has `norm`). Output: y.
KernelProgram forwardKernel(const ir::LayerProgram& layer, DType dtype);

// Backward of a layer, derived from the forward ops (the gradient of a contraction with respect
// to one operand is the einsum of the output gradient with the other operands). Inputs: x, the
// non-scalar parameters as in forwardKernel, then dy. Outputs: dx, then the gradient of
// sum(y * dy) with respect to every input parameter, in the same order. Forward intermediates
// that the gradients need are recomputed inside the kernel.
KernelProgram backwardKernel(const ir::LayerProgram& layer, DType dtype);

// The kernels of a training step, which keep what the forward computes for the backward
// instead of recomputing it. `forward`: forwardKernel with more outputs after y, the saved
// values: the row values made by a contraction or an add that the gradients read (directly or
// through reshapes, permutes, pads and truncates, which the backward redoes on them). `backward`:
// backwardKernel taking the saved values as inputs after dy, in the same order, and not
// recomputing them. With nothing to save (dense, whose gradients read only x, the weights and
// dy) both equal forwardKernel and backwardKernel.
struct TrainingKernels {
  KernelProgram forward;
  KernelProgram backward;
  std::size_t savedCount() const { return forward.outputs.size() - 1; }
};
TrainingKernels trainingKernels(const ir::LayerProgram& layer, DType dtype);

// `program` computing only some of its outputs (`keep`: indices into program.outputs, in the
// order wanted), without the ops those do not need. The inputs stay as they are, so the
// program is called with the same buffers; the name gets a suffix naming the kept outputs.
// Throws UserError for an index out of range or repeated. Used to find what each output
// (each gradient of a backward kernel) costs.
KernelProgram keepOutputs(const KernelProgram& program, const std::vector<std::size_t>& keep);

// `program` with every row intermediate that one contraction makes and exactly one other
// contraction reads, once, laid out the way its reader wants: rows, then the axes the reader
// shares with its other operand and its result, then the rest (the order trainingKernels gives
// saved values), and made in that order. The reader then walks each batch index's reduction
// contiguously instead of with a stride; the CPU code generator applies it where a row tile's
// intermediates spill out of L2 (BTT rank 4 at d = 4096, Layout::rowTilesSpill).
KernelProgram orderIntermediatesForReaders(KernelProgram program);

// A classic einsum as pairwise contractions in the order of `plan`. Inputs: the operands;
// output: the result. No row axis: every shape is static.
KernelProgram einsumKernel(const BoundEinsum& einsum, const ContractionPlan& plan, DType dtype);

}  // namespace einjit
