// The muP rule of structures.md section 3, read off the IR (docs/layouts.md, "muP").
#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "frontend/einsum/BoundEinsum.h"
#include "frontend/structures/Structures.h"

namespace einjit {

namespace {

// Where a parameter is used: the Contract op that consumes it after any Reshape and WeightNorm
// ops, the value that op reads, and the WeightNorm ops met on the way.
struct Consumer {
  std::size_t contraction = 0;  // index into program.ops
  ir::ValueId operand = -1;
  std::vector<std::size_t> norms;
};

Consumer findConsumer(const ir::LayerProgram& program, const ir::Parameter& param) {
  Consumer consumer;
  ir::ValueId value = param.value;
  for (std::size_t k = 0; k < program.ops.size(); ++k) {
    const ir::Op& op = program.ops[k];
    if (std::find(op.inputs.begin(), op.inputs.end(), value) == op.inputs.end()) continue;
    if (op.kind == ir::OpKind::Contract) {
      consumer.contraction = k;
      consumer.operand = value;
      return consumer;
    }
    if (op.kind == ir::OpKind::WeightNorm && op.inputs[0] == value)
      consumer.norms.push_back(k);
    else if (op.kind != ir::OpKind::Reshape)
      throw UserError("parameter '" + param.name + "' reaches a " + ir::opKindName(op.kind) +
                      " op; muP allows only reshape and weight_norm before its contraction");
    value = op.result;
  }
  throw UserError("parameter '" + param.name + "' is not consumed by any contraction");
}

// Per-block (d_in_f, d_out_f) of operand `value` of contraction `op`: its labels that another
// operand also has and that are summed are inputs, its labels that only it and the result have
// are outputs; the rest (shared and kept) are block axes.
std::pair<int64_t, int64_t> factorDims(const ir::LayerProgram& program, const ir::Op& op,
                                       ir::ValueId value) {
  std::vector<Shape> shapes;
  for (ir::ValueId input : op.inputs) {
    Shape shape = program.values.at(input).shape;
    std::replace(shape.begin(), shape.end(), ir::kRows, int64_t{1});
    shapes.push_back(shape);
  }
  const BoundEinsum bound = bindEinsum(parseEinsum(op.equation), shapes);
  const auto self =
      static_cast<std::size_t>(std::find(op.inputs.begin(), op.inputs.end(), value) - op.inputs.begin());
  std::set<int> others;
  for (std::size_t k = 0; k < op.inputs.size(); ++k)
    if (k != self) others.insert(bound.inputLabels[k].begin(), bound.inputLabels[k].end());
  const std::set<int> result(bound.outputLabels.begin(), bound.outputLabels.end());
  const std::set<int> own(bound.inputLabels[self].begin(), bound.inputLabels[self].end());
  int64_t in = 1, out = 1;
  for (int label : own) {
    const bool shared = others.count(label) > 0, kept = result.count(label) > 0;
    if (shared && !kept) in *= bound.labelSize[label];
    if (!shared && kept) out *= bound.labelSize[label];
  }
  return {in, out};
}

}  // namespace

void applyMup(ir::LayerProgram& program, int64_t baseWidth) {
  const auto factors = static_cast<double>(
      std::count_if(program.params.begin(), program.params.end(),
                    [](const ir::Parameter& p) { return !p.shape.empty(); }));
  const double base = static_cast<double>(baseWidth > 0 ? baseWidth : program.dIn);
  std::size_t lastContraction = 0;
  for (std::size_t k = 0; k < program.ops.size(); ++k)
    if (program.ops[k].kind == ir::OpKind::Contract) lastContraction = k;

  for (ir::Parameter& param : program.params) {
    if (param.shape.empty()) {  // a weight-norm gain: init 1, LR multiplier 1, no decay
      param.isScalarGain = true;
      param.factorIn = param.factorOut = 0;
      param.initStd = 0;
      param.lrMult = 1;
      param.weightDecay = false;
      param.zeroInitIfResidual = false;
      continue;
    }
    const Consumer consumer = findConsumer(program, param);
    const auto [in, out] = factorDims(program, program.ops[consumer.contraction], consumer.operand);
    const double dIn = static_cast<double>(in), dOut = static_cast<double>(out);
    param.factorIn = in;
    param.factorOut = out;
    // sigma_f = d_in_f^-1/2 min(1, sqrt(d_out_f/d_in_f));
    // kappa_f = (D_in/d_in_f) / n_factors * (base/D_in) = base / (d_in_f n_factors).
    param.initStd = std::min(1.0, std::sqrt(dOut / dIn)) / std::sqrt(dIn);
    param.lrMult = base / (dIn * factors);
    param.weightDecay = param.shape.size() >= 2;
    param.isScalarGain = false;
    param.zeroInitIfResidual = consumer.contraction == lastContraction;
    for (std::size_t k : consumer.norms) {
      ir::Op& norm = program.ops[k];
      norm.normSigma = std::sqrt(std::min(dIn, dOut)) / dIn;  // eps: set by the builder
    }
  }
}

}  // namespace einjit
