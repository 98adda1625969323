// Private to frontend/structures: the pieces the structure builders share.
//
// Equation conventions of every builder: the row axis is the label 'z' (never used for
// anything else); the other labels are chosen per structure and documented at each builder.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "einjit/tensor.h"
#include "frontend/structures/LayerIR.h"
#include "frontend/structures/Structures.h"

namespace einjit::structures {

constexpr char kRowLabel = 'z';

// Thrown by checkedMul when a size, a parameter count or a MAC count leaves int64; buildLayer
// reports it as a SpecError at the structure name.
struct SizeOverflow {};

int64_t checkedMul(int64_t a, int64_t b);
int64_t checkedAdd(int64_t a, int64_t b);
int64_t checkedProduct(const std::vector<int64_t>& sizes);

// How the cores are normalised (structures.md section 4).
enum class NormKind {
  None,
  BttNorm,             // learnable scalar gain per core, eps 1e-8
  BttNormWithoutGain,  // btt_norm without the gains (W_Q, W_K under QK-LayerNorm), eps 1e-8
  EinsumNorm,          // no gain, eps 1e-6 (theta points off the BTT route)
};

// Appends values, parameters and ops to a LayerProgram. Activations are named t1, t2, ...;
// the output is renamed "y" by finish().
class ProgramBuilder {
 public:
  ProgramBuilder(ir::LayerProgram& program, NormKind norm);

  ir::ValueId input();  // x: (N, dIn)
  // A learnable core; when normalisation is on, the returned value is the normalised core
  // (a WeightNorm op, with a "<name>_gamma" scalar for BttNorm).
  ir::ValueId core(const std::string& name, const Shape& shape);
  ir::ValueId reshape(ir::ValueId value, const Shape& shape);
  // Zero-pads or truncates axis 1 of a (N, k) activation to `size`; no op when k == size.
  ir::ValueId resizeFeatures(ir::ValueId value, int64_t size);
  // `equation` has one plain term per input (letters only) and an explicit "->"; the result
  // shape follows from the input shapes.
  ir::ValueId contract(const std::string& equation, const std::vector<ir::ValueId>& inputs);
  // Sets the output (renamed "y") and checks that the parameter count fits int64.
  void finish(ir::ValueId output);

  const Shape& shapeOf(ir::ValueId value) const { return program_.values.at(value).shape; }

 private:
  ir::ValueId addValue(const std::string& name, const Shape& shape);
  ir::ValueId addOp(ir::Op op, const std::string& name, const Shape& shape);
  std::string nextActivationName();

  ir::LayerProgram& program_;
  NormKind norm_;
  int activations_ = 0;
  int64_t macs_ = 0;  // running MACs per row, checked against overflow
};

// One builder per structure family; each fills program.values/params/ops/attributes.
// Sizes are already validated (positive, within the spec limits).
void buildDense(ir::LayerProgram& program, NormKind norm);
void buildLowRank(ir::LayerProgram& program, NormKind norm, int64_t rank);
void buildKronecker(ir::LayerProgram& program, NormKind norm, int factors);
void buildTensorTrain(ir::LayerProgram& program, NormKind norm, int64_t rank, int cores);
void buildMonarch(ir::LayerProgram& program, NormKind norm, int64_t blocks);
void buildBtt(ir::LayerProgram& program, NormKind norm, int64_t rank, int cores);

// The seven continuous coordinates of a theta-space point (structures.md section 2).
struct Theta {
  double alpha = 0, beta = 0, gamma = 0, delta = 0, epsilon = 0, phi = 0, rho = 0;
};

// Rounded theta sizes; a*b*g and d*e*f may miss dIn / dOut (padding / truncation).
struct ThetaSizes {
  int64_t a = 1, b = 1, g = 1, d = 1, e = 1, f = 1, r = 1;
};

ThetaSizes thetaSizes(const Theta& theta, int64_t dIn, int64_t dOut);
ir::Taxonomy thetaTaxonomy(const Theta& theta);
// True when the rounded sizes put the point on the BTT route (b = d = 1).
inline bool isBttRoute(const ThetaSizes& sizes) { return sizes.b == 1 && sizes.d == 1; }
// `norm` requests weight normalisation; its flavour follows from the rounded sizes.
// norm: btt_norm on the BTT route (with gains unless `gains` is false), einsum_norm (no gains) off it.
void buildTheta(ir::LayerProgram& program, bool norm, bool gains, const Theta& theta, const ThetaSizes& sizes);

// The candidate nearest to `word` by edit distance when it is a plausible typo (at most 2 edits,
// fewer than half the longer word), for "did you mean" hints.
std::optional<std::string> nearestName(const std::string& word,
                                       const std::vector<std::string>& candidates);

// prefix followed by k: "t3", "G1", "W0".
std::string numbered(const std::string& prefix, int64_t k);

// "24x32" for inspect attributes.
std::string joinSizes(const std::vector<int64_t>& sizes);

}  // namespace einjit::structures
