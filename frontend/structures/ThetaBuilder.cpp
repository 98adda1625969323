// The continuous Einsum space of structures.md section 2 (docs/layouts.md, "theta").
#include <algorithm>
#include <cmath>
#include <string>

#include "frontend/structures/LayerBuilder.h"

namespace einjit::structures {

namespace {

// round(base^exponent), half away from zero, at least 1.
int64_t roundedPower(int64_t base, double exponent) {
  const double value = std::round(std::pow(static_cast<double>(base), exponent));
  return std::max<int64_t>(1, static_cast<int64_t>(value));
}

}  // namespace

ThetaSizes thetaSizes(const Theta& theta, int64_t dIn, int64_t dOut) {
  ThetaSizes s;
  s.a = roundedPower(dIn, theta.alpha);
  s.b = roundedPower(dIn, theta.beta);
  s.g = roundedPower(dIn, theta.gamma);
  s.d = roundedPower(dOut, theta.delta);
  s.e = roundedPower(dOut, theta.epsilon);
  s.f = roundedPower(dOut, theta.phi);
  s.r = roundedPower(std::min(dIn, dOut), theta.rho);
  return s;
}

// omega = min(alpha+delta, beta+epsilon) - min(alpha, epsilon)
// psi   = 1 + min(0, 1 + rho - alpha - epsilon)
// nu    = 1 + rho - min(alpha, epsilon)
ir::Taxonomy thetaTaxonomy(const Theta& t) {
  ir::Taxonomy tax;
  tax.omega = std::min(t.alpha + t.delta, t.beta + t.epsilon) - std::min(t.alpha, t.epsilon);
  tax.psi = 1 + std::min(0.0, 1 + t.rho - t.alpha - t.epsilon);
  tax.nu = 1 + t.rho - std::min(t.alpha, t.epsilon);
  return tax;
}

// x padded/truncated to g*b*a and viewed (N, g, b, a); A (f, d, r, g, a), B (f, e, r, g, b):
//   Z[z,f,d,r,g,b] = sum_a x[z,g,b,a] A[f,d,r,g,a]
//   Y[z,f,e,d]     = sum_{r,g,b} Z[z,f,d,r,g,b] B[f,e,r,g,b]
// y = Y viewed (N, f*e*d), padded/truncated to d_out. Size-1 axes are kept in the einsums (the
// letters are the size names of structures.md; the row axis is 'z').
void buildTheta(ir::LayerProgram& program, bool norm, bool gains, const Theta& theta, const ThetaSizes& s) {
  const bool btt = isBttRoute(s);
  const int64_t paddedIn = checkedProduct({s.g, s.b, s.a});
  const int64_t paddedOut = checkedProduct({s.f, s.e, s.d});
  for (const auto& [key, value] : {std::pair{"a", s.a}, {"b", s.b}, {"g", s.g}, {"d", s.d},
                                   {"e", s.e}, {"f", s.f}, {"r", s.r}})
    program.attributes.emplace_back(key, std::to_string(value));
  if (paddedIn != program.dIn) program.attributes.emplace_back("in_resized_to", std::to_string(paddedIn));
  if (paddedOut != program.dOut)
    program.attributes.emplace_back("out_resized_from", std::to_string(paddedOut));
  program.attributes.emplace_back("route", btt ? "btt" : "einsum");
  // Points the reference's plots drop (structures.md section 2), from the continuous thetas.
  if (std::min(theta.alpha, theta.epsilon) < std::min(theta.beta, theta.delta))
    program.attributes.emplace_back("redundant", "true");
  if (theta.rho > std::min(theta.alpha, theta.epsilon))
    program.attributes.emplace_back("degenerate", "true");
  program.taxonomy = thetaTaxonomy(theta);

  const NormKind kind = !norm  ? NormKind::None
                        : !btt ? NormKind::EinsumNorm
                        : gains ? NormKind::BttNorm
                                : NormKind::BttNormWithoutGain;
  if (norm) program.attributes.emplace_back("norm", btt ? "btt_norm" : "einsum_norm");
  ProgramBuilder builder(program, kind);
  const ir::ValueId x = builder.reshape(builder.resizeFeatures(builder.input(), paddedIn),
                                        {ir::kRows, s.g, s.b, s.a});
  const ir::ValueId a = builder.core("A", {s.f, s.d, s.r, s.g, s.a});
  const ir::ValueId z = builder.contract("zgba,fdrga->zfdrgb", {x, a});
  const ir::ValueId b = builder.core("B", {s.f, s.e, s.r, s.g, s.b});
  const ir::ValueId y = builder.contract("zfdrgb,fergb->zfed", {z, b});
  builder.finish(builder.resizeFeatures(builder.reshape(y, {ir::kRows, paddedOut}), program.dOut));
}

}  // namespace einjit::structures
