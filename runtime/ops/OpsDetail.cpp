#include "runtime/ops/OpsDetail.h"

#include <utility>

namespace einjit::rt::detail {

void checkNotNull(const char* op, const Var& var, const char* what) {
  if (!var) throw UserError(std::string(op) + ": " + what + " is null");
}

void checkRank2(const char* op, const Var& var, const char* what) {
  checkNotNull(op, var, what);
  if (var->value.rank() != 2)
    throw UserError(std::string(op) + ": " + what + " must be 2-D (rows, features), got shape " +
                    shapeToString(var->value.shape()));
}

void checkSameDType(const char* op, const Var& a, const char* aName, const Var& b,
                    const char* bName) {
  if (a->value.dtype() != b->value.dtype())
    throw UserError(std::string(op) + ": " + aName + " is " + dtypeName(a->value.dtype()) +
                    " but " + bName + " is " + dtypeName(b->value.dtype()) +
                    "; both must have the same dtype");
}

Var makeResult(Tensor value, bool requiresGrad) {
  auto var = std::make_shared<VarData>();
  var->value = std::move(value);
  var->requiresGrad = requiresGrad;
  return var;
}

bool needsBackward(const Tape& tape, std::initializer_list<const Var*> inputs) {
  if (!tape.recording()) return false;
  for (const Var* input : inputs)
    if (*input && (*input)->requiresGrad) return true;
  return false;
}

void accumulate(VarData& var, Tensor&& gradient) {
  if (gradient.dtype() != var.value.dtype() || gradient.shape() != var.value.shape())
    throw UserError("internal: a gradient of shape " + shapeToString(gradient.shape()) +
                    " does not match its value of shape " + shapeToString(var.value.shape()));
  const bool hasGrad = var.grad.dtype() == var.value.dtype() &&
                       var.grad.shape() == var.value.shape() &&
                       var.grad.nbytes() == var.value.nbytes();
  if (!hasGrad) {
    var.grad = std::move(gradient);
    return;
  }
  dispatch(gradient.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* out = var.grad.data<T>();
    const T* in = gradient.data<T>();
    parallelChunks(gradient.numel(), kElementsPerChunk, [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] += in[i];
    });
  });
}

}  // namespace einjit::rt::detail
