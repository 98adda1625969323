// Reverse-mode automatic differentiation on a tape.
//
// A Var is a shared handle to a value and, when it requires a gradient, the gradient that
// Tape::backward accumulates into it. Ops (runtime/ops/Ops.h) compute their result eagerly and,
// when the tape is recording and some input requires a gradient, push one backward closure onto
// the tape. backward() runs the closures in reverse order, so each op's output gradient is
// complete before the op propagates it to its inputs.
//
// Values are host tensors (float32 for training, float64 for gradient checks); an op's result
// has the dtype of its inputs, which must agree.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "einjit/tensor.h"

namespace einjit::rt {

struct VarData {
  Tensor value;
  // Same shape and dtype as value once backward() reached it; empty before. An intermediate's
  // gradient is working storage of backward() (the op that made it may take it over): read
  // the gradients of leaves.
  Tensor grad;
  bool requiresGrad = false;
  std::string name;  // parameters: "blocks.0.attn.q.W0"; intermediates: empty

  // The gradient, zero-filled on first use.
  Tensor& gradOrZero();
};
using Var = std::shared_ptr<VarData>;

// A trainable leaf (requiresGrad) and a constant leaf (no gradient).
Var parameter(Tensor value, std::string name);
Var constant(Tensor value);

class Tape {
 public:
  // False while not recording (inference): ops record nothing and keep no intermediates.
  bool recording() const { return recording_; }
  void setRecording(bool on) { recording_ = on; }

  // Called by ops: `backward` reads output->grad and adds into the inputs' gradients.
  void record(std::function<void()> backward);

  // Seeds d(loss)/d(loss) = 1 (loss must hold one element), runs every recorded closure in
  // reverse order, then clears the tape. Gradients accumulate into existing .grad tensors, so
  // call zeroGrad on the parameters between steps.
  void backward(const Var& loss);
  // The same for a vector-Jacobian product: seeds output's gradient with `seed` (output's shape
  // and dtype), so the inputs receive the gradients of sum(output * seed).
  void backward(const Var& output, const Tensor& seed);

  // Drops every recorded closure (and the intermediates they keep alive).
  void clear();
  size_t size() const { return closures_.size(); }

 private:
  std::vector<std::function<void()>> closures_;
  bool recording_ = true;
};

// Clears (empties) the gradients of `vars`.
void zeroGrad(const std::vector<Var>& vars);

}  // namespace einjit::rt
