#include "frontend/structures/LayerIR.h"

#include <algorithm>

#include "einjit/error.h"
#include "frontend/einsum/BoundEinsum.h"

namespace einjit::ir {

namespace {

int64_t addOrThrow(int64_t a, int64_t b, const char* what) {
  int64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) throw UserError(std::string(what) + " overflows int64");
  return sum;
}

}  // namespace

const char* opKindName(OpKind kind) {
  switch (kind) {
    case OpKind::Contract:
      return "contract";
    case OpKind::Reshape:
      return "reshape";
    case OpKind::Permute:
      return "permute";
    case OpKind::Pad:
      return "pad";
    case OpKind::Truncate:
      return "truncate";
    case OpKind::WeightNorm:
      return "weight_norm";
    case OpKind::Add:
      return "add";
  }
  return "unknown";
}

int64_t LayerProgram::paramCount() const {
  int64_t total = 0;
  for (const Parameter& p : params) total = addOrThrow(total, shapeNumel(p.shape), "parameter count");
  return total;
}

int64_t LayerProgram::macsPerRow() const {
  int64_t total = 0;
  for (const Op& op : ops)
    if (op.kind == OpKind::Contract)
      total = addOrThrow(total, contractionMacsPerRow(*this, op), "MACs per row");
  return total;
}

const Parameter* LayerProgram::findParam(const std::string& name) const {
  for (const Parameter& p : params)
    if (p.name == name) return &p;
  return nullptr;
}

int64_t contractionMacsPerRow(const LayerProgram& program, const Op& op) {
  if (op.kind != OpKind::Contract)
    throw UserError(std::string("MACs are defined for contract ops, not ") + opKindName(op.kind));
  std::vector<Shape> shapes;
  for (ValueId input : op.inputs) {
    Shape shape = program.values.at(input).shape;
    std::replace(shape.begin(), shape.end(), kRows, int64_t{1});
    shapes.push_back(shape);
  }
  const BoundEinsum bound = bindEinsum(parseEinsum(op.equation), shapes);
  int64_t macs = 1;
  for (int64_t size : bound.labelSize)
    if (__builtin_mul_overflow(macs, size, &macs))
      throw UserError("MACs per row of '" + op.equation + "' overflow int64");
  return macs;
}

}  // namespace einjit::ir
