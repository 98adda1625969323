#include "runtime/reference/ReferenceKernelProgram.h"

#include <optional>
#include <string>
#include <utility>

#include "einjit/error.h"
#include "runtime/reference/ReferenceKernel.h"
#include "runtime/reference/ReferenceOps.h"

namespace einjit {

std::vector<Tensor> referenceRunKernel(const KernelProgram& program, int64_t rows,
                                       const std::vector<const Tensor*>& inputs) {
  checkKernelProgram(program);
  const std::string where = "kernel program '" + program.name + "'";
  if (rows < 0) throw UserError(where + ": negative row count " + std::to_string(rows));
  if (inputs.size() != program.inputs.size())
    throw UserError(where + " takes " + std::to_string(program.inputs.size()) + " inputs, got " +
                    std::to_string(inputs.size()));
  auto concreteShape = [&](ir::ValueId id) {
    Shape shape = program.values[id].shape;
    if (program.isRowValue(id)) shape[0] = rows;
    return shape;
  };

  std::vector<std::optional<reference::Array>> values(program.values.size());
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const ir::ValueId id = program.inputs[k];
    const Shape expected = concreteShape(id);
    if (inputs[k] == nullptr || inputs[k]->shape() != expected)
      throw UserError(
          where + ": input " + std::to_string(k) + " ('" + program.values[id].name + "') " +
          (inputs[k] == nullptr ? "is missing" : "has shape " + shapeToString(inputs[k]->shape())) +
          ", expected " + shapeToString(expected));
    values[id] = reference::toArray(*inputs[k]);
  }
  for (std::size_t k = 0; k < program.ops.size(); ++k) {
    const ir::Op& op = program.ops[k];
    std::vector<const reference::Array*> operands;
    for (ir::ValueId id : op.inputs) operands.push_back(&*values[id]);
    const std::string opWhere =
        where + ": op " + std::to_string(k) + " (" + ir::opKindName(op.kind) + ")";
    try {
      values[op.result] = reference::evaluateOp(op, operands, rows);
    } catch (const UserError& error) {
      throw UserError(opWhere + ": " + error.what());
    }
    if (values[op.result]->shape != concreteShape(op.result))
      throw UserError(opWhere + " gives " + shapeToString(values[op.result]->shape) +
                      ", declared " + shapeToString(concreteShape(op.result)));
  }
  std::vector<Tensor> outputs;
  for (ir::ValueId id : program.outputs)
    outputs.push_back(reference::toTensor(*values[id], program.dtype));
  return outputs;
}

}  // namespace einjit
