// A linear layer whose weight is any structure of the layer IR (dense, btt, monarch, kron, tt,
// lowrank, theta, with or without norm), optionally with a bias, as a differentiable op.
// Forward and backward run the CPU target's compiled kernels (compiler/cpu) on the parameter
// values in place; weight normalisation, when the spec has `norm`, is part of the op.
// Parameter gradients are sums over the row chunks that runKernel gives each thread: the same
// run to run for a thread count, but rounded differently for another thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "frontend/structures/LayerIR.h"
#include "runtime/autograd/Tape.h"

namespace einjit::rt {

struct ParameterInfo {
  Var var;
  double lrMultiplier = 1.0;  // muP Adam learning-rate multiplier from the IR
  bool weightDecay = false;   // decay only tensors of rank >= 2 (structures.md section 3)
};

class StructuredLinear {
 public:
  // `spec` is a structure spec ("btt(rank=4)", "dense", "theta(...)", ...) built for dIn -> dOut;
  // a bare name ("dense") means the structure with its defaults.
  // Parameters are named `name + "." + IR parameter name` and initialised by the IR's muP rule
  // (initLayerParams) from `seed`; zeroLast zeroes the last core (residual projections, head).
  // muPBaseWidth > 0 re-applies the muP rule with that base width (applyMup); 0 keeps the
  // spec's own `base` (default: the layer's input width, dense multiplier 1).
  StructuredLinear(std::string name, const std::string& spec, int64_t dIn, int64_t dOut,
                   bool bias, uint64_t seed, DType dtype = DType::F32, bool zeroLast = false,
                   int64_t muPBaseWidth = 0);

  // x (n, dIn) -> (n, dOut).
  Var forward(Tape& tape, const Var& x) const;

  const ir::LayerProgram& program() const { return program_; }
  // The weight parameters in IR order, then the bias (multiplier 1, no decay) if any.
  const std::vector<ParameterInfo>& parameters() const { return params_; }
  int64_t macsPerRow() const;

 private:
  // What forward() and the backward closures it records share: the compiled kernels and the
  // parameter Vars (defined in StructuredLinear.cpp; closures keep it alive past the layer).
  struct State;

  std::string name_;
  ir::LayerProgram program_;
  std::vector<ParameterInfo> params_;
  std::shared_ptr<const State> state_;
};

}  // namespace einjit::rt
