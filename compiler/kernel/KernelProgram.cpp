// Kernel programs: validation, canonical text, and construction from layers (forward, and
// backward derived by reverse mode on the IR itself) and from planned classic einsums.
#include "compiler/kernel/KernelProgram.h"

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "einjit/error.h"
#include "frontend/einsum/EinsumAST.h"

namespace einjit {
namespace {

using ir::OpKind;
using ir::ValueId;

// 0, 1, ..., rank - 1: the axis order that changes nothing.
std::vector<int> identityOrder(std::size_t rank) {
  std::vector<int> order(rank);
  std::iota(order.begin(), order.end(), 0);
  return order;
}

std::string describeOp(const ir::Op& op, std::size_t index) {
  std::string text = "op " + std::to_string(index) + " (" + ir::opKindName(op.kind);
  if (op.kind == OpKind::Contract) text += " \"" + op.equation + "\"";
  return text + ")";
}

std::string extentText(int64_t extent) {
  return extent == ir::kRows ? "N" : std::to_string(extent);
}

// "(N, 4, 3)": shapeToString with the row axis spelled N.
std::string shapeText(const Shape& shape) {
  std::string text = "(";
  for (std::size_t d = 0; d < shape.size(); ++d) text += (d ? ", " : "") + extentText(shape[d]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

bool startsWithRows(const Shape& shape) { return !shape.empty() && shape[0] == ir::kRows; }

// Elements per row of a row value, elements of any other value.
int64_t elementsPerRow(const Shape& shape) {
  return startsWithRows(shape) ? shapeNumel(Shape(shape.begin() + 1, shape.end()))
                               : shapeNumel(shape);
}

// ---- equations ----

struct EquationTerms {
  std::vector<std::string> inputs;
  std::string output;
};

// The terms of a plain equation ("zab,abcr->zacr"): letters only and an explicit output.
EquationTerms plainTerms(const std::string& equation) {
  const EinsumAST ast = parseEinsum(equation);
  if (!ast.output) throw UserError("the equation has no explicit output");
  auto letters = [](const OperandSubscripts& operand) {
    std::string term;
    for (const Subscript& subscript : operand.subscripts) {
      if (subscript.isEllipsis)
        throw UserError("the equation has an ellipsis (kernel programs spell out every axis)");
      term += subscript.label;
    }
    return term;
  };
  EquationTerms terms;
  for (const OperandSubscripts& input : ast.inputs) terms.inputs.push_back(letters(input));
  terms.output = letters(*ast.output);
  return terms;
}

std::string joinEquation(const std::vector<std::string>& inputs, const std::string& output) {
  std::string equation;
  for (std::size_t k = 0; k < inputs.size(); ++k) equation += (k ? "," : "") + inputs[k];
  return equation + "->" + output;
}

// The size of every label of a contraction of operands with `shapes`: all extents of a label are
// equal or 1 (1 broadcasts). The row count kRows is a size of its own.
std::map<char, int64_t> labelSizes(const EquationTerms& terms, const std::vector<Shape>& shapes) {
  std::map<char, int64_t> size;
  for (std::size_t k = 0; k < terms.inputs.size(); ++k) {
    const std::string& term = terms.inputs[k];
    if (term.size() != shapes[k].size())
      throw UserError("term " + std::to_string(k) + " \"" + term + "\" has " +
                      std::to_string(term.size()) + " labels but operand " + std::to_string(k) +
                      " has shape " + shapeText(shapes[k]));
    for (std::size_t d = 0; d < term.size(); ++d) {
      const int64_t extent = shapes[k][d];
      const auto [known, inserted] = size.try_emplace(term[d], extent);
      if (inserted || known->second == extent || extent == 1) continue;
      if (known->second != 1)
        throw UserError(std::string("label '") + term[d] + "' has extents " +
                        extentText(known->second) + " and " + extentText(extent));
      known->second = extent;
    }
  }
  return size;
}

// ---- validation ----

// The shapes `op` reads and writes agree with what the op does. Messages name no op: the caller
// adds which one.
void checkOpShapes(const KernelProgram& program, const ir::Op& op) {
  auto shapeOf = [&](ValueId id) -> const Shape& { return program.values[id].shape; };
  auto requireInputs = [&](std::size_t count) {
    if (op.inputs.size() != count)
      throw UserError("takes " + std::to_string(count) + " input" + (count == 1 ? "" : "s") +
                      ", got " + std::to_string(op.inputs.size()));
  };
  const Shape& result = shapeOf(op.result);
  auto requireResult = [&](const Shape& expected) {
    if (result != expected)
      throw UserError("its result is declared " + shapeText(result) + " but the op gives " +
                      shapeText(expected));
  };
  switch (op.kind) {
    case OpKind::Contract: {
      const EquationTerms terms = plainTerms(op.equation);
      if (terms.inputs.size() != op.inputs.size())
        throw UserError("the equation has " + std::to_string(terms.inputs.size()) + " terms for " +
                        std::to_string(op.inputs.size()) + " inputs");
      std::vector<Shape> shapes;
      for (ValueId id : op.inputs) shapes.push_back(shapeOf(id));
      const std::map<char, int64_t> size = labelSizes(terms, shapes);
      Shape expected;
      for (std::size_t d = 0; d < terms.output.size(); ++d) {
        const char label = terms.output[d];
        if (terms.output.find(label) != d)
          throw UserError(std::string("the output repeats label '") + label + "'");
        const auto known = size.find(label);
        if (known == size.end())
          throw UserError(std::string("output label '") + label + "' is in no input term");
        expected.push_back(known->second);
      }
      requireResult(expected);
      return;
    }
    case OpKind::Reshape: {
      requireInputs(1);
      const Shape& in = shapeOf(op.inputs[0]);
      if (op.shape != result)
        throw UserError("the op's shape " + shapeText(op.shape) + " differs from its result's " +
                        shapeText(result));
      if (startsWithRows(in) != startsWithRows(result) ||
          elementsPerRow(in) != elementsPerRow(result))
        throw UserError("cannot view " + shapeText(in) + " as " + shapeText(result) +
                        " (same elements per row, row axis kept leading)");
      return;
    }
    case OpKind::Permute: {
      requireInputs(1);
      const Shape& in = shapeOf(op.inputs[0]);
      std::vector<int> sorted = op.perm;
      std::sort(sorted.begin(), sorted.end());
      if (sorted != identityOrder(in.size()))
        throw UserError("not a permutation of the " + std::to_string(in.size()) + " axes of " +
                        shapeText(in));
      if (startsWithRows(in) && op.perm[0] != 0)
        throw UserError("the row axis must stay the leading axis");
      Shape expected;
      for (int axis : op.perm) expected.push_back(in[axis]);
      requireResult(expected);
      return;
    }
    case OpKind::Pad:
    case OpKind::Truncate: {
      requireInputs(1);
      const Shape& in = shapeOf(op.inputs[0]);
      const int rank = static_cast<int>(in.size());
      if (op.axis < 0 || op.axis >= rank || (op.axis == 0 && startsWithRows(in)))
        throw UserError("axis " + std::to_string(op.axis) + " of " + shapeText(in) +
                        " cannot be resized");
      const bool pad = op.kind == OpKind::Pad;
      if (pad ? op.size < in[op.axis] : (op.size < 0 || op.size > in[op.axis]))
        throw UserError(std::string("cannot ") + (pad ? "pad" : "truncate") + " axis " +
                        std::to_string(op.axis) + " of " + shapeText(in) + " to " +
                        std::to_string(op.size));
      Shape expected = in;
      expected[op.axis] = op.size;
      requireResult(expected);
      return;
    }
    case OpKind::Add:
      requireInputs(2);
      if (shapeOf(op.inputs[0]) != shapeOf(op.inputs[1]))
        throw UserError("adds " + shapeText(shapeOf(op.inputs[0])) + " and " +
                        shapeText(shapeOf(op.inputs[1])));
      requireResult(shapeOf(op.inputs[0]));
      return;
    case OpKind::WeightNorm:
      throw UserError("weight_norm is not a kernel op (weights are normalised on the host)");
  }
  throw UserError("unknown op kind " + std::to_string(static_cast<int>(op.kind)));
}

// ---- construction helpers ----

ValueId addValue(KernelProgram& program, std::string name, Shape shape) {
  program.values.push_back({std::move(name), std::move(shape)});
  return static_cast<ValueId>(program.values.size() - 1);
}

// An output that is also an input, or an earlier output, gets its own buffer: a Reshape to its
// own shape, i.e. a copy.
void copyAliasedOutputs(KernelProgram& program) {
  const int numValues = static_cast<int>(program.values.size());
  for (std::size_t o = 0; o < program.outputs.size(); ++o) {
    const ValueId id = program.outputs[o];
    if (id < 0 || id >= numValues) continue;  // reported by checkKernelProgram
    const bool aliased = std::count(program.inputs.begin(), program.inputs.end(), id) > 0 ||
                         std::count(program.outputs.begin(), program.outputs.begin() + o, id) > 0;
    if (!aliased) continue;
    ir::Op copy;
    copy.kind = OpKind::Reshape;
    copy.inputs = {id};
    copy.shape = program.values[id].shape;
    copy.result = addValue(program, program.values[id].name + "_copy", copy.shape);
    program.ops.push_back(copy);
    program.outputs[o] = copy.result;
  }
}

// Drops the ops whose results no output needs.
void removeDeadOps(KernelProgram& program) {
  std::vector<bool> needed(program.values.size(), false);
  for (ValueId id : program.outputs) needed[id] = true;
  std::vector<ir::Op> kept;
  for (std::size_t k = program.ops.size(); k-- > 0;) {
    if (!needed[program.ops[k].result]) continue;
    for (ValueId id : program.ops[k].inputs) needed[id] = true;
    kept.push_back(std::move(program.ops[k]));
  }
  std::reverse(kept.begin(), kept.end());
  program.ops = std::move(kept);
}

// Keeps only the values the program refers to, numbered in order of first appearance.
void compactValues(KernelProgram& program) {
  std::vector<ValueId> renumbered(program.values.size(), -1);
  std::vector<ir::Value> values;
  auto renumber = [&](ValueId& id) {
    if (renumbered[id] < 0) {
      renumbered[id] = static_cast<ValueId>(values.size());
      values.push_back(std::move(program.values[id]));
    }
    id = renumbered[id];
  };
  for (ValueId& id : program.inputs) renumber(id);
  for (ir::Op& op : program.ops) {
    for (ValueId& id : op.inputs) renumber(id);
    renumber(op.result);
  }
  for (ValueId& id : program.outputs) renumber(id);
  program.values = std::move(values);
}

KernelProgram finishKernel(KernelProgram program) {
  copyAliasedOutputs(program);
  checkKernelProgram(program);
  removeDeadOps(program);
  compactValues(program);
  return program;
}

std::string kernelName(const ir::LayerProgram& layer, const std::string& pass) {
  return (layer.structure.empty() ? std::string("layer") : layer.structure) + "_" + pass;
}

// The Contract that computes the gradient of sum(result * resultGradient) with respect to
// operand `operand` of `op`: the result gradient takes the operand's place, and the equation
// writes into the operand's labels.
ir::Op contractionGradient(const KernelProgram& program, const ir::Op& op, std::size_t operand,
                           ValueId resultGradient) {
  const EquationTerms terms = plainTerms(op.equation);
  std::vector<Shape> shapes;
  for (ValueId id : op.inputs) shapes.push_back(program.values[id].shape);
  const std::map<char, int64_t> size = labelSizes(terms, shapes);
  const std::string& term = terms.inputs[operand];
  const std::string operandName = "operand " + std::to_string(operand);
  for (std::size_t d = 0; d < term.size(); ++d) {
    const std::string label = std::string("'") + term[d] + "'";
    if (term.find(term[d]) != d)
      throw UserError(operandName + " repeats label " + label +
                      ": its gradient is a diagonal, which an einsum cannot write");
    bool elsewhere = terms.output.find(term[d]) != std::string::npos;
    for (std::size_t other = 0; other < terms.inputs.size(); ++other)
      elsewhere =
          elsewhere || (other != operand && terms.inputs[other].find(term[d]) != std::string::npos);
    if (!elsewhere)
      throw UserError("label " + label + " appears only in " + operandName +
                      ": its gradient is constant along that axis, which an einsum cannot write");
    if (shapes[operand][d] != size.at(term[d]))
      throw UserError(operandName + " broadcasts label " + label +
                      ": its gradient sums into a size-1 axis, which an einsum cannot write");
  }
  std::vector<std::string> gradientTerms = terms.inputs;
  gradientTerms[operand] = terms.output;
  ir::Op gradient;
  gradient.kind = OpKind::Contract;
  gradient.inputs = op.inputs;
  gradient.inputs[operand] = resultGradient;
  gradient.equation = joinEquation(gradientTerms, term);
  return gradient;
}

}  // namespace

bool KernelProgram::isRowValue(ir::ValueId id) const {
  return id >= 0 && id < static_cast<ir::ValueId>(values.size()) &&
         startsWithRows(values[id].shape);
}

void checkKernelProgram(const KernelProgram& program) {
  auto fail = [&](const std::string& message) {
    throw UserError("kernel program '" + program.name + "': " + message);
  };
  const int numValues = static_cast<int>(program.values.size());
  auto valueName = [&](ValueId id) { return "'" + program.values[id].name + "'"; };
  auto checkId = [&](ValueId id, const std::string& where) {
    if (id < 0 || id >= numValues)
      fail(where + " refers to value id " + std::to_string(id) + ", outside [0, " +
           std::to_string(numValues) + ")");
    const Shape& shape = program.values[id].shape;
    for (std::size_t d = 0; d < shape.size(); ++d)
      if (shape[d] < 0 && !(d == 0 && shape[d] == ir::kRows))
        fail("value " + valueName(id) + " has the invalid shape " + shapeText(shape));
    try {
      elementsPerRow(shape);
    } catch (const UserError& error) {
      fail("value " + valueName(id) + ": " + error.what());
    }
  };

  std::vector<bool> defined(program.values.size(), false);
  for (ValueId id : program.inputs) {
    checkId(id, "an input");
    if (defined[id]) fail("value " + valueName(id) + " is passed twice as an input");
    defined[id] = true;
  }
  for (std::size_t k = 0; k < program.ops.size(); ++k) {
    const ir::Op& op = program.ops[k];
    const std::string where = describeOp(op, k);
    for (ValueId id : op.inputs) {
      checkId(id, where);
      if (!defined[id]) fail(where + " uses value " + valueName(id) + " before it is defined");
    }
    checkId(op.result, where);
    if (defined[op.result]) fail(where + " redefines value " + valueName(op.result));
    try {
      checkOpShapes(program, op);
    } catch (const UserError& error) {
      fail(where + ": " + error.what());
    }
    defined[op.result] = true;
  }
  for (std::size_t o = 0; o < program.outputs.size(); ++o) {
    const ValueId id = program.outputs[o];
    checkId(id, "output " + std::to_string(o));
    if (!defined[id]) fail("output " + valueName(id) + " is never computed");
    if (std::count(program.inputs.begin(), program.inputs.end(), id) > 0)
      fail("value " + valueName(id) + " is both an input and an output");
    if (std::count(program.outputs.begin(), program.outputs.begin() + o, id) > 0)
      fail("value " + valueName(id) + " is written as two outputs");
  }
}

std::string KernelProgram::fingerprint() const {
  checkKernelProgram(*this);
  // Values are numbered by first appearance, so their names and ids do not matter.
  std::map<ir::ValueId, int> number;
  // Built by appending: GCC 12 warns (-Wrestrict, a false positive) on "literal" + std::string&&.
  auto ref = [&](ir::ValueId id) {
    const int next = static_cast<int>(number.size());
    std::string text = "%";
    text += std::to_string(number.try_emplace(id, next).first->second);
    return text;
  };
  std::string text = "einjit kernel v1\ndtype " + std::string(dtypeName(dtype)) + "\n";
  for (ir::ValueId id : inputs) {
    text += "in ";
    text += ref(id) + " " + shapeText(values[id].shape) + "\n";
  }
  for (const ir::Op& op : ops) {
    std::string line = " = " + std::string(ir::opKindName(op.kind));
    switch (op.kind) {
      case OpKind::Contract:
        line += " \"" + op.equation + "\"";
        break;
      case OpKind::Permute:
        for (std::size_t k = 0; k < op.perm.size(); ++k)
          line += (k ? "," : " [") + std::to_string(op.perm[k]);
        line += op.perm.empty() ? " []" : "]";
        break;
      case OpKind::Pad:
      case OpKind::Truncate:
        line += " axis " + std::to_string(op.axis) + " size " + std::to_string(op.size);
        break;
      case OpKind::Reshape:  // the result's shape says it all
      case OpKind::Add:
      case OpKind::WeightNorm:  // rejected by checkKernelProgram
        break;
    }
    for (ir::ValueId id : op.inputs) {
      line += ' ';
      line += ref(id);
    }
    text += ref(op.result) + " " + shapeText(values[op.result].shape) + line + "\n";
  }
  for (ir::ValueId id : outputs) {
    text += "out ";
    text += ref(id) + "\n";
  }
  return text;
}

std::vector<KernelParameterInput> kernelParameterInputs(const ir::LayerProgram& layer) {
  auto fail = [&](const std::string& message) {
    throw UserError("layer program '" + layer.spec + "': " + message);
  };
  const int numValues = static_cast<int>(layer.values.size());
  std::map<ValueId, int> paramOfValue;
  for (std::size_t p = 0; p < layer.params.size(); ++p) {
    const ir::Parameter& param = layer.params[p];
    if (param.value < 0 || param.value >= numValues)
      fail("parameter '" + param.name + "' refers to value id " + std::to_string(param.value) +
           ", outside [0, " + std::to_string(numValues) + ")");
    if (!paramOfValue.emplace(param.value, static_cast<int>(p)).second)
      fail("two parameters share the value '" + layer.values[param.value].name + "'");
  }
  std::vector<int> weightNormOp(layer.params.size(), -1);
  std::vector<bool> isGain(layer.params.size(), false);
  for (std::size_t k = 0; k < layer.ops.size(); ++k) {
    const ir::Op& op = layer.ops[k];
    if (op.kind != OpKind::WeightNorm) continue;
    if (op.inputs.empty() || op.inputs.size() > 2)
      fail(describeOp(op, k) + " takes W and an optional gamma");
    const auto weight = paramOfValue.find(op.inputs[0]);
    if (weight == paramOfValue.end())
      fail(describeOp(op, k) + " normalises a value that is not a parameter");
    if (weightNormOp[weight->second] >= 0)
      fail("parameter '" + layer.params[weight->second].name + "' is normalised twice");
    weightNormOp[weight->second] = static_cast<int>(k);
    if (op.inputs.size() == 2) {
      const auto gain = paramOfValue.find(op.inputs[1]);
      if (gain == paramOfValue.end())
        fail(describeOp(op, k) + " takes a gain that is not a parameter");
      isGain[gain->second] = true;
    }
  }
  std::vector<KernelParameterInput> inputs;
  for (std::size_t p = 0; p < layer.params.size(); ++p) {
    if (isGain[p] && weightNormOp[p] >= 0)
      fail("parameter '" + layer.params[p].name + "' is both a gain and normalised");
    if (!isGain[p]) inputs.push_back({static_cast<int>(p), weightNormOp[p]});
  }
  return inputs;
}

KernelProgram forwardKernel(const ir::LayerProgram& layer, DType dtype) {
  const std::vector<KernelParameterInput> parameters = kernelParameterInputs(layer);
  KernelProgram kernel;
  kernel.name = kernelName(layer, "forward");
  kernel.dtype = dtype;
  kernel.values = layer.values;
  kernel.inputs.push_back(layer.input);
  for (const KernelParameterInput& parameter : parameters)
    kernel.inputs.push_back(parameter.weightNormOp >= 0 ? layer.ops[parameter.weightNormOp].result
                                                        : layer.params[parameter.param].value);
  for (const ir::Op& op : layer.ops)
    if (op.kind != OpKind::WeightNorm) kernel.ops.push_back(op);
  kernel.outputs.push_back(layer.output);
  kernel = finishKernel(std::move(kernel));

  const Shape& x = kernel.values[kernel.inputs[0]].shape;
  const Shape& y = kernel.values[kernel.outputs[0]].shape;
  if (x != Shape{ir::kRows, layer.dIn} || y != Shape{ir::kRows, layer.dOut})
    throw UserError("layer program '" + layer.spec + "' maps " + shapeText(x) + " to " +
                    shapeText(y) + ", expected (N, " + std::to_string(layer.dIn) + ") to (N, " +
                    std::to_string(layer.dOut) + ")");
  return kernel;
}

KernelProgram keepOutputs(const KernelProgram& program, const std::vector<std::size_t>& keep) {
  KernelProgram kept = program;
  kept.outputs.clear();
  std::vector<bool> needed(program.values.size(), false);
  for (std::size_t k : keep) {
    if (k >= program.outputs.size())
      throw UserError("kernel program '" + program.name + "' has no output " + std::to_string(k));
    if (needed[program.outputs[k]])
      throw UserError("kernel program '" + program.name + "': output " + std::to_string(k) + " kept twice");
    needed[program.outputs[k]] = true;
    kept.outputs.push_back(program.outputs[k]);
    kept.name += "_" + std::to_string(k);
  }
  kept.name += keep.empty() ? "_none" : "";
  kept.ops.clear();
  for (auto op = program.ops.rbegin(); op != program.ops.rend(); ++op) {
    if (!needed[op->result]) continue;
    kept.ops.push_back(*op);
    for (ir::ValueId id : op->inputs) needed[id] = true;
  }
  std::reverse(kept.ops.begin(), kept.ops.end());
  return kept;
}

KernelProgram backwardKernel(const ir::LayerProgram& layer, DType dtype) {
  const KernelProgram forward = forwardKernel(layer, dtype);
  KernelProgram kernel = forward;
  kernel.name = kernelName(layer, "backward");

  std::set<std::string> names;
  for (const ir::Value& value : forward.values) names.insert(value.name);
  // Gradient values are named "d<value>", with a suffix where that name is taken.
  auto gradientValue = [&](ValueId of) {
    std::string name = "d" + forward.values[of].name;
    for (int k = 2; names.count(name); ++k)
      name = "d" + forward.values[of].name + "_" + std::to_string(k);
    names.insert(name);
    return addValue(kernel, name, forward.values[of].shape);
  };
  auto emit = [&](ir::Op op, ValueId of) {
    op.result = gradientValue(of);
    kernel.ops.push_back(std::move(op));
    return kernel.ops.back().result;
  };

  const ValueId y = forward.outputs[0];
  std::vector<ValueId> gradient(forward.values.size(), -1);
  gradient[y] = gradientValue(y);
  kernel.inputs.push_back(gradient[y]);
  auto accumulate = [&](ValueId of, ValueId contribution) {
    if (gradient[of] < 0) {
      gradient[of] = contribution;
      return;
    }
    ir::Op sum;
    sum.kind = OpKind::Add;
    sum.inputs = {gradient[of], contribution};
    gradient[of] = emit(std::move(sum), of);
  };

  for (std::size_t k = forward.ops.size(); k-- > 0;) {
    const ir::Op& op = forward.ops[k];
    const ValueId resultGradient = gradient[op.result];
    if (resultGradient < 0) continue;
    const ValueId in = op.inputs[0];
    ir::Op back;
    back.inputs = {resultGradient};
    switch (op.kind) {
      case OpKind::Contract:
        for (std::size_t j = 0; j < op.inputs.size(); ++j) {
          try {
            back = contractionGradient(forward, op, j, resultGradient);
          } catch (const UserError& error) {
            throw UserError("backward of '" + layer.spec + "': " + describeOp(op, k) + ": " +
                            error.what());
          }
          accumulate(op.inputs[j], emit(back, op.inputs[j]));
        }
        break;
      case OpKind::Reshape:
        back.kind = OpKind::Reshape;
        back.shape = forward.values[in].shape;
        accumulate(in, emit(back, in));
        break;
      case OpKind::Permute:
        back.kind = OpKind::Permute;
        back.perm.resize(op.perm.size());
        for (std::size_t a = 0; a < op.perm.size(); ++a)
          back.perm[op.perm[a]] = static_cast<int>(a);
        accumulate(in, emit(back, in));
        break;
      case OpKind::Pad:
      case OpKind::Truncate:
        back.kind = op.kind == OpKind::Pad ? OpKind::Truncate : OpKind::Pad;
        back.axis = op.axis;
        back.size = forward.values[in].shape[op.axis];
        accumulate(in, emit(back, in));
        break;
      case OpKind::Add:
        accumulate(op.inputs[0], resultGradient);
        accumulate(op.inputs[1], resultGradient);
        break;
      case OpKind::WeightNorm:  // never in a checked kernel program
        break;
    }
  }

  kernel.outputs.clear();
  for (ValueId input : forward.inputs) {
    if (gradient[input] < 0)
      throw UserError("backward of '" + layer.spec + "': input '" + forward.values[input].name +
                      "' does not reach the output");
    kernel.outputs.push_back(gradient[input]);
  }
  return finishKernel(std::move(kernel));
}

namespace {

// The order of the axes of `value` (rank `rank`, rows first) that contraction `op` reading it
// wants: rows, then the axes it shares with the other operand and the result (a batch of GEMMs
// summed over the rest), then its own. Each batch index then reads one contiguous run of the
// value instead of gathering it. Identity when `op` is not a two-operand contraction of it.
std::vector<int> readerAxisOrder(const ir::Op& op, ValueId value, int rank) {
  std::vector<int> order = identityOrder(static_cast<std::size_t>(rank));
  const auto at = std::find(op.inputs.begin(), op.inputs.end(), value);
  if (op.kind != OpKind::Contract || op.inputs.size() != 2 || at == op.inputs.end()) return order;
  const EquationTerms terms = plainTerms(op.equation);
  const std::size_t operand = static_cast<std::size_t>(at - op.inputs.begin());
  const std::string& term = terms.inputs[operand];
  const std::string& other = terms.inputs[1 - operand];
  auto isBatch = [&](char label) {
    return other.find(label) != std::string::npos && terms.output.find(label) != std::string::npos;
  };
  std::vector<int> batch, own;
  for (int axis = 1; axis < rank; ++axis) (isBatch(term[axis]) ? batch : own).push_back(axis);
  order = {0};
  order.insert(order.end(), batch.begin(), batch.end());
  order.insert(order.end(), own.begin(), own.end());
  return order;
}

// The order of a saved value's axes that the first gradient contraction reading it wants
// (readerAxisOrder): BTT's t (N, a, c, r), read by dW1 per c, is saved as (N, c, a, r).
std::vector<int> savedAxisOrder(const KernelProgram& program, ValueId saved,
                                const std::function<bool(const ir::Op&)>& isGradientOp) {
  const int rank = static_cast<int>(program.values[saved].shape.size());
  for (const ir::Op& op : program.ops)
    if (op.kind == OpKind::Contract && op.inputs.size() == 2 && isGradientOp(op) &&
        std::count(op.inputs.begin(), op.inputs.end(), saved) > 0)
      return readerAxisOrder(op, saved, rank);
  return identityOrder(static_cast<std::size_t>(rank));
}

// `op` reading `to`, the value `from` with its axes in `order`, instead of `from`: the term of
// that operand lists its labels in the new order.
void readPermuted(ir::Op& op, ValueId from, ValueId to, const std::vector<int>& order) {
  EquationTerms terms = plainTerms(op.equation);
  for (std::size_t k = 0; k < op.inputs.size(); ++k) {
    if (op.inputs[k] != from) continue;
    std::string term;
    for (int axis : order) term += terms.inputs[k][axis];
    terms.inputs[k] = term;
    op.inputs[k] = to;
  }
  op.equation = joinEquation(terms.inputs, terms.output);
}

}  // namespace

TrainingKernels trainingKernels(const ir::LayerProgram& layer, DType dtype) {
  TrainingKernels kernels{forwardKernel(layer, dtype), backwardKernel(layer, dtype)};
  KernelProgram& forward = kernels.forward;
  KernelProgram& backward = kernels.backward;
  // Value names are unique in both programs, and the backward's forward values keep theirs.
  std::set<std::string> names;
  std::map<std::string, ValueId> forwardId;
  for (std::size_t id = 0; id < forward.values.size(); ++id)
    forwardId.emplace(forward.values[id].name, static_cast<ValueId>(id));
  for (const ir::Value& value : backward.values) names.insert(value.name);
  std::vector<int> producer(backward.values.size(), -1);  // op index in backward
  for (std::size_t k = 0; k < backward.ops.size(); ++k)
    producer[backward.ops[k].result] = static_cast<int>(k);
  auto isForwardValue = [&](ValueId id) { return forwardId.count(backward.values[id].name) > 0; };
  auto isGradientOp = [&](const ir::Op& op) { return !isForwardValue(op.result); };

  // From what the gradient ops read, back through views to the values worth keeping.
  std::vector<ValueId> pending, saved;
  std::vector<bool> seen(backward.values.size(), false);
  for (const ir::Op& op : backward.ops)
    if (isGradientOp(op))
      for (ValueId id : op.inputs)
        if (isForwardValue(id)) pending.push_back(id);
  while (!pending.empty()) {
    const ValueId id = pending.back();
    pending.pop_back();
    if (seen[id] || producer[id] < 0) continue;  // done, or a kernel input
    seen[id] = true;
    const ir::Op& op = backward.ops[producer[id]];
    const bool computes = op.kind == OpKind::Contract || op.kind == OpKind::Add;
    if (computes && startsWithRows(backward.values[id].shape))
      saved.push_back(id);
    else if (!computes)
      pending.insert(pending.end(), op.inputs.begin(), op.inputs.end());
    // A computed value without rows depends on parameters only: cheap, recomputed.
  }
  if (saved.empty()) return kernels;
  std::sort(saved.begin(), saved.end());  // program order, for stable kernels

  // Each saved value leaves the forward in the axis order its gradient wants, and the forward's
  // later contractions and the backward read it in that order: the contraction that makes it
  // writes it so when nothing else reads it, else a Permute follows it. Against saving it as
  // it is, at N = 2048 on this project's Xeon: BTT rank 4 forward+backward at d = 4096
  // 200 -> 163 ms, at d = 1024 22.9 -> 18.7 ms; BTT rank 1 and Monarch 5-12% faster.
  std::vector<bool> isSaved(backward.values.size(), false);
  std::vector<ir::Op> backwardViews;  // the saved values in their own order, for other readers
  for (ValueId id : saved) {
    isSaved[id] = true;
    const std::vector<int> order = savedAxisOrder(backward, id, isGradientOp);
    const ir::Value value = backward.values[id];
    if (order == identityOrder(order.size())) {
      forward.outputs.push_back(forwardId.at(value.name));
      backward.inputs.push_back(id);
      continue;
    }
    std::string name = value.name + "_saved";
    for (int k = 2; names.count(name); ++k) name = value.name + "_saved_" + std::to_string(k);
    names.insert(name);
    Shape permuted;
    for (int axis : order) permuted.push_back(value.shape[axis]);

    const ValueId inForward = forwardId.at(value.name);
    const ValueId savedForward = addValue(forward, name, permuted);
    auto producerOp = std::find_if(forward.ops.begin(), forward.ops.end(),
                                   [&](const ir::Op& op) { return op.result == inForward; });
    bool otherReaders = std::count(forward.outputs.begin(), forward.outputs.end(), inForward) > 0;
    for (auto op = producerOp + 1; op != forward.ops.end(); ++op) {
      if (op->kind == OpKind::Contract) readPermuted(*op, inForward, savedForward, order);
      otherReaders = otherReaders || std::count(op->inputs.begin(), op->inputs.end(), inForward) > 0;
    }
    if (producerOp->kind == OpKind::Contract && !otherReaders) {
      // Only the permuted value is read: the contraction writes it in that order itself.
      EquationTerms terms = plainTerms(producerOp->equation);
      std::string output;
      for (int axis : order) output += terms.output[axis];
      producerOp->equation = joinEquation(terms.inputs, output);
      producerOp->result = savedForward;
    } else {
      ir::Op permute;
      permute.kind = OpKind::Permute;
      permute.inputs = {inForward};
      permute.perm = order;
      permute.result = savedForward;
      forward.ops.insert(producerOp + 1, permute);
    }
    forward.outputs.push_back(savedForward);

    const ValueId savedBackward = addValue(backward, name, permuted);
    backward.inputs.push_back(savedBackward);
    for (ir::Op& op : backward.ops)
      if (op.kind == OpKind::Contract && op.result != id) readPermuted(op, id, savedBackward, order);
    ir::Op restore;  // dropped by finishKernel when nothing else reads the value
    restore.kind = OpKind::Permute;
    restore.inputs = {savedBackward};
    restore.perm.resize(order.size());
    for (std::size_t a = 0; a < order.size(); ++a) restore.perm[order[a]] = static_cast<int>(a);
    restore.result = id;
    backwardViews.push_back(restore);
  }
  std::vector<ir::Op> ops = backwardViews;
  for (ir::Op& op : backward.ops)
    if (!isSaved[op.result]) ops.push_back(std::move(op));
  backward.ops = std::move(ops);
  forward.name = kernelName(layer, "training_forward");
  backward.name = kernelName(layer, "backward_from_saved");
  forward = finishKernel(std::move(forward));
  backward = finishKernel(std::move(backward));
  return kernels;
}

KernelProgram orderIntermediatesForReaders(KernelProgram program) {
  std::vector<bool> isOutput(program.values.size(), false);
  for (ValueId id : program.outputs) isOutput[id] = true;
  for (ir::Op& maker : program.ops) {
    const ValueId value = maker.result;
    if (maker.kind != OpKind::Contract || isOutput[value] || !startsWithRows(program.values[value].shape)) continue;
    ir::Op* reader = nullptr;
    int reads = 0;
    for (ir::Op& op : program.ops) {
      const auto count = std::count(op.inputs.begin(), op.inputs.end(), value);
      reads += static_cast<int>(count);
      if (count > 0) reader = &op;
    }
    if (reads != 1 || reader->kind != OpKind::Contract) continue;
    const Shape shape = program.values[value].shape;
    const std::vector<int> order = readerAxisOrder(*reader, value, static_cast<int>(shape.size()));
    if (std::is_sorted(order.begin(), order.end())) continue;
    EquationTerms terms = plainTerms(maker.equation);
    std::string output;
    Shape permuted;
    for (int axis : order) {
      output += terms.output[axis];
      permuted.push_back(shape[axis]);
    }
    maker.equation = joinEquation(terms.inputs, output);
    readPermuted(*reader, value, value, order);
    program.values[value].shape = permuted;
  }
  return program;
}

KernelProgram einsumKernel(const BoundEinsum& einsum, const ContractionPlan& plan, DType dtype) {
  const int numLabels = einsum.numLabels();
  const int numOperands = static_cast<int>(einsum.inputLabels.size());
  auto validLabel = [&](int label) { return label >= 0 && label < numLabels; };
  bool wellFormed = static_cast<int>(einsum.labelName.size()) == numLabels &&
                    static_cast<int>(einsum.inputShapes.size()) == numOperands &&
                    einsum.outputLabels.size() == einsum.outputShape.size() &&
                    std::all_of(einsum.outputLabels.begin(), einsum.outputLabels.end(), validLabel);
  for (int k = 0; wellFormed && k < numOperands; ++k)
    wellFormed =
        einsum.inputLabels[k].size() == einsum.inputShapes[k].size() &&
        std::all_of(einsum.inputLabels[k].begin(), einsum.inputLabels[k].end(), validLabel);
  if (!wellFormed) throw UserError("einsumKernel: the bound einsum is malformed");
  const std::string where = "einsum " + einsum.canonical();
  constexpr int kLetters = 52;
  if (numLabels > kLetters)
    throw UserError(where + ": " + std::to_string(numLabels) +
                    " labels, more than the 52 letters (a-z, A-Z) a kernel equation can name");
  auto letter = [](int label) {
    return static_cast<char>(label < 26 ? 'a' + label : 'A' + label - 26);
  };
  auto term = [&](const std::vector<int>& labels) {
    std::string text;
    for (int label : labels) text += letter(label);
    return text;
  };

  KernelProgram kernel;
  kernel.name = "einsum";
  kernel.dtype = dtype;
  struct Operand {
    ValueId value;
    std::vector<int> labels;
  };
  std::vector<Operand> list;
  for (int k = 0; k < numOperands; ++k) {
    list.push_back({addValue(kernel, "operand" + std::to_string(k), einsum.inputShapes[k]),
                    einsum.inputLabels[k]});
    kernel.inputs.push_back(list.back().value);
  }

  auto planMisfit = [&] { return UserError(where + ": the contraction plan does not fit it"); };
  int stepNumber = 0;
  for (const ContractionStep& step : plan.steps) {
    const int count = static_cast<int>(list.size());
    if (step.lhs < 0 || step.lhs >= count || step.rhs < -1 || step.rhs >= count ||
        step.lhs == step.rhs)
      throw planMisfit();
    std::vector<int> operands = {step.lhs};
    if (step.rhs >= 0) operands.push_back(step.rhs);

    // Labels the step sums away must not be needed by a later operand or the output.
    std::vector<int> needed = einsum.outputLabels;
    for (int k = 0; k < count; ++k)
      if (k != step.lhs && k != step.rhs)
        needed.insert(needed.end(), list[k].labels.begin(), list[k].labels.end());
    ir::Op op;
    op.kind = OpKind::Contract;
    std::vector<std::string> terms;
    std::map<int, int64_t> extent;  // label -> largest extent among the step's operands
    for (int position : operands) {
      const Operand& operand = list[position];
      const Shape& shape = kernel.values[operand.value].shape;
      for (std::size_t d = 0; d < operand.labels.size(); ++d) {
        const int label = operand.labels[d];
        extent[label] = std::max(extent[label], shape[d]);
        const bool kept = std::count(step.resultLabels.begin(), step.resultLabels.end(), label) > 0;
        if (!kept && std::count(needed.begin(), needed.end(), label) > 0) throw planMisfit();
      }
      op.inputs.push_back(operand.value);
      terms.push_back(term(operand.labels));
    }
    Shape resultShape;
    for (std::size_t d = 0; d < step.resultLabels.size(); ++d) {
      const int label = step.resultLabels[d];
      if (!extent.count(label) ||
          std::count(step.resultLabels.begin(), step.resultLabels.begin() + d, label) > 0)
        throw planMisfit();
      resultShape.push_back(extent[label]);
    }
    op.equation = joinEquation(terms, term(step.resultLabels));
    op.result = addValue(kernel, "step" + std::to_string(++stepNumber), resultShape);
    kernel.ops.push_back(op);

    list.erase(list.begin() + std::max(step.lhs, step.rhs));
    if (step.rhs >= 0) list.erase(list.begin() + std::min(step.lhs, step.rhs));
    list.push_back({op.result, step.resultLabels});
  }
  if (plan.steps.empty() || list.size() != 1 || list[0].labels != einsum.outputLabels ||
      kernel.values[list[0].value].shape != einsum.outputShape)
    throw planMisfit();
  kernel.outputs.push_back(list[0].value);
  return finishKernel(std::move(kernel));
}

}  // namespace einjit
