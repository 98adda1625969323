#include "frontend/structures/LayerBuilder.h"

#include <map>
#include <stdexcept>

namespace einjit::structures {

namespace {

// The terms of an equation, split at ',' and "->".
struct EquationTerms {
  std::vector<std::string> inputs;
  std::string output;
};

// The builders write only plain equations ("zab,abcr->zacr"); anything else is a builder bug.
EquationTerms splitEquation(const std::string& equation) {
  const std::size_t arrow = equation.find("->");
  if (arrow == std::string::npos) throw std::logic_error("equation without '->': " + equation);
  EquationTerms terms;
  terms.output = equation.substr(arrow + 2);
  std::string lhs = equation.substr(0, arrow);
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = lhs.find(',', start);
    terms.inputs.push_back(lhs.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return terms;
}

}  // namespace

int64_t checkedMul(int64_t a, int64_t b) {
  int64_t result = 0;
  if (__builtin_mul_overflow(a, b, &result)) throw SizeOverflow{};
  return result;
}

int64_t checkedAdd(int64_t a, int64_t b) {
  int64_t result = 0;
  if (__builtin_add_overflow(a, b, &result)) throw SizeOverflow{};
  return result;
}

int64_t checkedProduct(const std::vector<int64_t>& sizes) {
  int64_t product = 1;
  for (int64_t size : sizes) product = checkedMul(product, size);
  return product;
}

// Built by appending: GCC 12 warns (-Wrestrict, a false positive) on "literal" + std::string&&.
std::string numbered(const std::string& prefix, int64_t k) {
  std::string text = prefix;
  text += std::to_string(k);
  return text;
}

std::string joinSizes(const std::vector<int64_t>& sizes) {
  std::string text;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (i) text += 'x';
    text += std::to_string(sizes[i]);
  }
  return text;
}

ProgramBuilder::ProgramBuilder(ir::LayerProgram& program, NormKind norm)
    : program_(program), norm_(norm) {}

ir::ValueId ProgramBuilder::addValue(const std::string& name, const Shape& shape) {
  program_.values.push_back({name, shape});
  return static_cast<ir::ValueId>(program_.values.size() - 1);
}

ir::ValueId ProgramBuilder::addOp(ir::Op op, const std::string& name, const Shape& shape) {
  op.result = addValue(name, shape);
  program_.ops.push_back(std::move(op));
  return program_.ops.back().result;
}

std::string ProgramBuilder::nextActivationName() { return numbered("t", ++activations_); }

ir::ValueId ProgramBuilder::input() {
  program_.input = addValue("x", {ir::kRows, program_.dIn});
  return program_.input;
}

ir::ValueId ProgramBuilder::core(const std::string& name, const Shape& shape) {
  checkedProduct(shape);  // the parameter count must fit int64
  const ir::ValueId weight = addValue(name, shape);
  ir::Parameter param;
  param.name = name;
  param.value = weight;
  param.shape = shape;
  program_.params.push_back(param);
  if (norm_ == NormKind::None) return weight;

  ir::Op op;
  op.kind = ir::OpKind::WeightNorm;
  op.inputs = {weight};
  op.normEps = norm_ == NormKind::EinsumNorm ? 1e-6 : 1e-8;  // sigma comes with the muP rule
  if (norm_ == NormKind::BttNorm) {
    ir::Parameter gain;
    gain.name = name + "_gamma";
    gain.value = addValue(gain.name, {});
    gain.isScalarGain = true;
    gain.weightDecay = false;
    program_.params.push_back(gain);
    op.inputs.push_back(gain.value);
  }
  return addOp(op, name + "_norm", shape);
}

ir::ValueId ProgramBuilder::reshape(ir::ValueId value, const Shape& shape) {
  const Shape& from = shapeOf(value);
  if (from == shape) return value;
  ir::Op op;
  op.kind = ir::OpKind::Reshape;
  op.inputs = {value};
  op.shape = shape;
  const bool isActivation = !from.empty() && from[0] == ir::kRows;
  const std::string name =
      isActivation ? nextActivationName() : program_.values.at(value).name + "_view";
  return addOp(op, name, shape);
}

ir::ValueId ProgramBuilder::resizeFeatures(ir::ValueId value, int64_t size) {
  const int64_t current = shapeOf(value).at(1);
  if (current == size) return value;
  ir::Op op;
  op.kind = current < size ? ir::OpKind::Pad : ir::OpKind::Truncate;
  op.inputs = {value};
  op.axis = 1;
  op.size = size;
  return addOp(op, nextActivationName(), {ir::kRows, size});
}

ir::ValueId ProgramBuilder::contract(const std::string& equation,
                                     const std::vector<ir::ValueId>& inputs) {
  const EquationTerms terms = splitEquation(equation);
  if (terms.inputs.size() != inputs.size())
    throw std::logic_error("operand count does not match " + equation);
  std::map<char, int64_t> labelSize;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const Shape& shape = shapeOf(inputs[k]);
    const std::string& term = terms.inputs[k];
    if (term.size() != shape.size())
      throw std::logic_error("term '" + term + "' does not match a rank-" +
                             std::to_string(shape.size()) + " operand in " + equation);
    for (std::size_t axis = 0; axis < term.size(); ++axis) {
      const auto [it, inserted] = labelSize.emplace(term[axis], shape[axis]);
      if (!inserted && it->second != shape[axis])
        throw std::logic_error(std::string("label '") + term[axis] + "' has two sizes in " +
                               equation);
    }
  }
  Shape result;
  for (char label : terms.output) result.push_back(labelSize.at(label));
  // The MACs of every step and their sum must fit int64 (N = 1): macsPerRow() never overflows.
  int64_t macs = 1;
  for (const auto& [label, size] : labelSize) macs = checkedMul(macs, size == ir::kRows ? 1 : size);
  macs_ = checkedAdd(macs_, macs);

  ir::Op op;
  op.kind = ir::OpKind::Contract;
  op.inputs = inputs;
  op.equation = equation;
  return addOp(op, nextActivationName(), result);
}

void ProgramBuilder::finish(ir::ValueId output) {
  program_.output = output;
  program_.values.at(output).name = std::string("y");  // not = "y": GCC 12 -Wrestrict misfires
  int64_t params = 0;
  for (const ir::Parameter& p : program_.params) params = checkedAdd(params, checkedProduct(p.shape));
}

}  // namespace einjit::structures
