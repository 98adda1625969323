#include "runtime/autograd/Tape.h"

#include <utility>

#include "einjit/error.h"

namespace einjit::rt {

Tensor& VarData::gradOrZero() {
  // A default (empty) Tensor has no bytes; a gradient always has the value's layout.
  if (grad.dtype() != value.dtype() || grad.shape() != value.shape() ||
      grad.nbytes() != value.nbytes())
    grad = Tensor(value.dtype(), value.shape());
  return grad;
}

Var parameter(Tensor value, std::string name) {
  auto var = std::make_shared<VarData>();
  var->value = std::move(value);
  var->requiresGrad = true;
  var->name = std::move(name);
  return var;
}

Var constant(Tensor value) {
  auto var = std::make_shared<VarData>();
  var->value = std::move(value);
  return var;
}

void Tape::record(std::function<void()> backward) {
  if (recording_) closures_.push_back(std::move(backward));
}

void Tape::backward(const Var& loss) {
  if (!loss) throw UserError("backward: the loss is null");
  if (loss->value.numel() != 1)
    throw UserError("backward: the loss must hold one element, got shape " +
                    shapeToString(loss->value.shape()));
  Tensor seed(loss->value.dtype(), loss->value.shape());
  seed.set(0, 1.0);
  backward(loss, seed);
}

void Tape::backward(const Var& output, const Tensor& seed) {
  if (!output) throw UserError("backward: the output is null");
  if (!output->requiresGrad)
    throw UserError(
        "backward: the output does not depend on any parameter (was the tape "
        "recording when it was computed?)");
  if (seed.dtype() != output->value.dtype() || seed.shape() != output->value.shape())
    throw UserError(std::string("backward: the seed is ") + dtypeName(seed.dtype()) + " " +
                    shapeToString(seed.shape()) + ", expected " + dtypeName(output->value.dtype()) +
                    " " + shapeToString(output->value.shape()));
  output->grad = seed;
  // Closures run newest first; the tape is emptied even if one of them throws.
  std::vector<std::function<void()>> closures = std::move(closures_);
  closures_.clear();
  for (auto it = closures.rbegin(); it != closures.rend(); ++it) (*it)();
}

void Tape::clear() { closures_.clear(); }

void zeroGrad(const std::vector<Var>& vars) {
  for (const Var& var : vars)
    if (var) var->grad = Tensor();
}

}  // namespace einjit::rt
