// Named structured layers: the spec syntax and the IR builders.
//
// Grammar (spaces and newlines allowed between tokens):
//   spec   := name '(' [ arg { ',' arg } ] ')'
//   arg    := key '=' value | key            (a bare key means key=true)
//   value  := number | 'true' | 'false' | identifier
// e.g. "btt(in=1024, out=1024, rank=4)", "monarch(in=768, out=3072, blocks=4, norm)",
//      "theta(in=256, out=256, alpha=0.5, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5, rho=0)"
//
// Names: dense, lowrank, kron, tt, monarch, btt, theta; aliases low_rank, kronecker, einsum (theta).
// Keys of every structure: in, out (widths, 1..2^40), norm (bool), gain (bool, default true;
// false: norm without the learnable gains), base (muP base width).
//   lowrank: rank (default ceil(sqrt(min(in, out))))    kron: factors (2..16, default 2)
//   tt, btt: rank (default 1), cores (2..16, default 2)  monarch: blocks (>= 1 or -1, default 4)
//   theta: alpha beta gamma delta epsilon phi rho (all required, in [0, 1])
// Layouts, defaults and the muP rule: docs/layouts.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "einjit/error.h"
#include "frontend/structures/LayerIR.h"

namespace einjit {

struct StructureArg {
  std::string key;
  std::string value;  // the literal as written ("4", "0.5", "true")
  SourceLoc keyLoc, valueLoc;
};

struct StructureSpec {
  std::string source;
  std::string name;
  SourceLoc nameLoc;
  std::vector<StructureArg> args;
};

// Syntax only. Throws SpecError (with line, column, caret) on malformed text; an unknown
// structure name suggests the nearest known one ("did you mean 'btt'?").
StructureSpec parseStructureSpec(const std::string& spec);

// Checks the arguments (unknown keys, wrong types, out-of-range values, sizes that overflow:
// SpecError at the offending argument), resolves defaults and sizes, builds the layer IR and
// applies the muP rule. `in`/`out` given here override/complete those in the spec (templates
// such as "btt(rank=4)" get their sizes from the model).
ir::LayerProgram buildLayer(const StructureSpec& spec, std::optional<int64_t> dIn = std::nullopt,
                            std::optional<int64_t> dOut = std::nullopt);
ir::LayerProgram buildLayer(const std::string& spec);

// The known structure names, for help text and suggestions.
const std::vector<std::string>& structureNames();

// factorize(d, n): n integer factors of d, as even as possible (greedy over prime factors),
// sorted ascending (structures.md, conventions).
std::vector<int64_t> factorize(int64_t d, int n);

// The muP rule of structures.md section 3, applied to every parameter of `program` from the
// contraction that consumes it: axes contracted with the activation form d_in_f, axes only in
// the result form d_out_f, the rest are block (batch) axes.
//   sigma_f = d_in_f^-1/2 * min(1, sqrt(d_out_f / d_in_f))
//   kappa_f = (D_in / d_in_f) / n_factors * (base_width / D_in)
// base_width == 0 means D_in (dense multiplier 1).
void applyMup(ir::LayerProgram& program, int64_t baseWidth = 0);

}  // namespace einjit
