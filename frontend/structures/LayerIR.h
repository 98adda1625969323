// The einsum IR of one structured linear layer: a small program over named values.
//
// Values are activations (with a leading row axis of unknown length N, written kRows in
// shapes) or parameter tensors (fixed shapes). Ops run in order; each defines one new value.
// The input x has shape (N, dIn); the output y has shape (N, dOut).
//
// Equations of the built-in structures write the row axis as 'z' (the size letters of
// structures.md, n among them, stay free for the other axes); see frontend/structures/*Builders.cpp.
//
// Example, low-rank(r): values x:(N,in) U:(in,r) V:(r,out) t1:(N,r) y:(N,out)
//   t1 = contract "zi,ir->zr" (x, U)
//   y  = contract "zr,ro->zo" (t1, V)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "einjit/tensor.h"

namespace einjit::ir {

constexpr int64_t kRows = -1;  // the symbolic row count N inside activation shapes
using ValueId = int;

struct Value {
  std::string name;
  Shape shape;  // activations: shape[0] == kRows
};

// A learnable tensor with its muP metadata (structures.md section 3).
struct Parameter {
  std::string name;  // as in structures.md: "W", "U", "V", "L", "R", "G1", "W0", "A", "B", ...
  ValueId value = -1;
  Shape shape;
  // Per-block (d_in_f, d_out_f) of the factor seen as a batched dense matrix; 0 for scalars.
  int64_t factorIn = 0;
  int64_t factorOut = 0;
  double initStd = 0.0;      // sigma_f; scalars (norm gains) are initialised to 1 instead
  double lrMult = 1.0;       // Adam LR multiplier kappa_f, dense muP factor included
  bool weightDecay = true;   // rank >= 2
  bool isScalarGain = false; // a weight-norm gamma: init 1, no decay, LR multiplier 1
  // Zeroed at init when the layer replaces a zero-initialised dense layer (residual output
  // projection, LM head): the last core, i.e. the parameter consumed by the last contraction
  // (einjit applies this to every structure; the einsum-search code's own low-rank class, which
  // zeroes U instead, is not reproduced).
  bool zeroInitIfResidual = false;
};

enum class OpKind {
  Contract,    // result = einsum(equation, inputs...); the row axis appears in the equation
  Reshape,     // result = inputs[0] viewed with `shape` (row-major, same element count)
  Permute,     // result = inputs[0] with axes permuted: result axis k = input axis perm[k]
  Pad,         // result = inputs[0] zero-padded at the end of `axis` up to `size`
  Truncate,    // result = inputs[0] cut to the first `size` entries of `axis`
  WeightNorm,  // result = gamma * W / max(1, RMS(W)/sigma); inputs = {W} or {W, gamma}
  Add,         // result = inputs[0] + inputs[1] (same shapes); gradient programs accumulate
};

const char* opKindName(OpKind kind);

struct Op {
  OpKind kind = OpKind::Contract;
  std::vector<ValueId> inputs;
  ValueId result = -1;
  std::string equation;   // Contract: classic einsum, one term per input, explicit "->"
  Shape shape;            // Reshape: the new shape (may contain kRows)
  std::vector<int> perm;  // Permute
  int axis = -1;          // Pad / Truncate
  int64_t size = 0;       // Pad / Truncate: the new extent of `axis`
  double normSigma = 0;   // WeightNorm: sigma_i of the core
  double normEps = 0;     // WeightNorm: added to mean(W^2) inside the RMS
};

// The omega/psi/nu taxonomy of a theta-space point (structures.md section 2).
struct Taxonomy {
  double omega = 0, psi = 0, nu = 0;
};

struct LayerProgram {
  std::string spec;       // normalised spec text, e.g. "btt(in=1024, out=1024, rank=4)"
  std::string structure;  // "dense", "lowrank", "kron", "tt", "monarch", "btt", "theta"
  int64_t dIn = 0, dOut = 0;
  std::vector<std::pair<std::string, std::string>> attributes;  // resolved sizes, for inspect
  std::vector<Value> values;
  std::vector<Parameter> params;
  std::vector<Op> ops;
  ValueId input = -1, output = -1;
  std::optional<Taxonomy> taxonomy;  // theta specs only

  int64_t paramCount() const;  // sum of numel over params (scalar gains included)
  int64_t macsPerRow() const;  // sum over Contract ops of the product of label sizes, N = 1
  const Parameter* findParam(const std::string& name) const;
};

// MACs per row of one Contract op of `program` (product of all its label sizes, rows = 1).
int64_t contractionMacsPerRow(const LayerProgram& program, const Op& op);

}  // namespace einjit::ir
