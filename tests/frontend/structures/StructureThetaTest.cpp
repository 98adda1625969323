// Theta-space points (structures.md section 2): rounded sizes, padding, counts, taxonomy,
// the BTT route, redundant / degenerate flags and argument checks.
#include <gtest/gtest.h>

#include <cmath>

#include "frontend/structures/Structures.h"
#include "tests/frontend/structures/SpecErrorMatchers.h"

namespace einjit {
namespace {

using testing::expectSpecError;

struct Point {
  double alpha, beta, gamma, delta, epsilon, phi, rho;
};

std::string num(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

std::string thetaSpec(int64_t in, int64_t out, const Point& t, const std::string& extra = "") {
  return "theta(in=" + std::to_string(in) + ", out=" + std::to_string(out) + ", alpha=" +
         num(t.alpha) + ", beta=" + num(t.beta) + ", gamma=" + num(t.gamma) + ", delta=" +
         num(t.delta) + ", epsilon=" + num(t.epsilon) + ", phi=" + num(t.phi) + ", rho=" +
         num(t.rho) + extra + ")";
}

std::string attribute(const ir::LayerProgram& program, const std::string& key) {
  for (const auto& [k, v] : program.attributes)
    if (k == key) return v;
  return "<absent>";
}

int64_t rounded(int64_t base, double exponent) {
  return std::max<int64_t>(1, std::llround(std::pow(static_cast<double>(base), exponent)));
}

// Shapes A (f, d, r, g, a), B (f, e, r, g, b); params f r g (d a + e b); MACs f d r g b (a + e).
void expectCounts(int64_t in, int64_t out, const Point& t) {
  SCOPED_TRACE(thetaSpec(in, out, t));
  const auto p = buildLayer(thetaSpec(in, out, t));
  const int64_t a = rounded(in, t.alpha), b = rounded(in, t.beta), g = rounded(in, t.gamma);
  const int64_t d = rounded(out, t.delta), e = rounded(out, t.epsilon), f = rounded(out, t.phi);
  const int64_t r = rounded(std::min(in, out), t.rho);
  ASSERT_EQ(p.params.size(), 2u);
  EXPECT_EQ(p.params[0].name, "A");
  EXPECT_EQ(p.params[0].shape, (Shape{f, d, r, g, a}));
  EXPECT_EQ(p.params[1].name, "B");
  EXPECT_EQ(p.params[1].shape, (Shape{f, e, r, g, b}));
  EXPECT_EQ(p.paramCount(), f * r * g * (d * a + e * b));
  EXPECT_EQ(p.macsPerRow(), f * d * r * g * b * (a + e));
  EXPECT_EQ(attribute(p, "a"), std::to_string(a));
  EXPECT_EQ(attribute(p, "r"), std::to_string(r));
  EXPECT_EQ(p.values.at(p.output).shape, (Shape{ir::kRows, out}));
}

const Point kDense{1, 0, 0, 0, 0, 1, 0};
const Point kBtt{0.5, 0, 0.5, 0, 0.5, 0.5, 0};
const Point kTt{0.5, 0.5, 0, 0.5, 0.5, 0, 0};
const Point kLowRank{1, 0, 0, 0, 1, 0, 0.5};

TEST(Theta, CountsAtKnownPoints) {
  for (const Point& t : {kDense, kBtt, kTt, kLowRank, Point{0.5, 0, 0.5, 0, 0.5, 0.5, 0.5},
                         Point{0.4, 0.3, 0.3, 0.2, 0.5, 0.3, 0.25}}) {
    expectCounts(256, 256, t);
    expectCounts(1024, 4096, t);
  }
  expectCounts(4096, 1024, Point{0.5, 0.25, 0.25, 0.25, 0.5, 0.25, 0.5});
}

TEST(Theta, DenseAndLowRankPointsMatchTheirStructures) {
  // The nominal dense point is A = dense (f = d_out, a = d_in) followed by B, a per-output
  // scale (e = b = d = g = r = 1): f (a + 1) parameters and MACs.
  auto p = buildLayer(thetaSpec(256, 512, kDense));
  EXPECT_EQ(p.paramCount(), 512 * (256 + 1));
  EXPECT_EQ(p.macsPerRow(), 512 * (256 + 1));
  p = buildLayer(thetaSpec(256, 1024, kLowRank));  // r = round(256^0.5) = 16
  EXPECT_EQ(p.paramCount(), 16 * (256 + 1024));
  EXPECT_EQ(p.macsPerRow(), 16 * (256 + 1024));
  // The BTT point has the counts of btt(rank=1): 2 d^1.5.
  EXPECT_EQ(buildLayer(thetaSpec(1024, 1024, kBtt)).macsPerRow(), 2 * 32768);
}

TEST(Theta, PaddingAndTruncation) {
  // in = 120 (alpha=.5, beta=0, gamma=.5): a = g = round(10.95) = 11 -> 121, pad by 1;
  // out = 90 (delta=0, epsilon=.5, phi=.5): e = f = round(9.49) = 9 -> 81, pad 81 -> 90.
  auto p = buildLayer(thetaSpec(120, 90, kBtt));
  EXPECT_EQ(attribute(p, "a"), "11");
  EXPECT_EQ(attribute(p, "in_resized_to"), "121");
  EXPECT_EQ(attribute(p, "out_resized_from"), "81");
  int pads = 0, truncates = 0;
  for (const ir::Op& op : p.ops) {
    pads += op.kind == ir::OpKind::Pad;
    truncates += op.kind == ir::OpKind::Truncate;
  }
  EXPECT_EQ(pads, 2);
  EXPECT_EQ(truncates, 0);
  // in = 110: a = g = round(10.49) = 10 -> 100, truncated; out = 110 -> e = f = 10, padded.
  p = buildLayer(thetaSpec(110, 110, kBtt));
  pads = truncates = 0;
  for (const ir::Op& op : p.ops) {
    pads += op.kind == ir::OpKind::Pad;
    truncates += op.kind == ir::OpKind::Truncate;
  }
  EXPECT_EQ(truncates, 1);
  EXPECT_EQ(pads, 1);
  EXPECT_EQ(p.values.at(p.input).shape, (Shape{ir::kRows, 110}));
  EXPECT_EQ(p.values.at(p.output).shape, (Shape{ir::kRows, 110}));
}

TEST(Theta, TaxonomyOfKnownPoints) {
  struct Case {
    Point point;
    double omega, psi, nu;
  };
  for (const Case& c : {Case{kDense, 0, 1, 1}, Case{kBtt, 0, 1, 0.5}, Case{kTt, 0.5, 1, 0.5},
                        Case{kLowRank, 0, 0.5, 0.5}}) {
    const auto p = buildLayer(thetaSpec(256, 256, c.point));
    ASSERT_TRUE(p.taxonomy.has_value());
    EXPECT_NEAR(p.taxonomy->omega, c.omega, 1e-12);
    EXPECT_NEAR(p.taxonomy->psi, c.psi, 1e-12);
    EXPECT_NEAR(p.taxonomy->nu, c.nu, 1e-12);
  }
  // A generic point, by the formulas: omega = min(.6, .7) - min(.4, .5) = .2,
  // psi = 1 + min(0, 1 + .25 - .9) = 1, nu = 1 + .25 - .4 = .85.
  const auto p = buildLayer(thetaSpec(256, 256, Point{0.4, 0.3, 0.3, 0.2, 0.5, 0.3, 0.25}));
  EXPECT_NEAR(p.taxonomy->omega, 0.2, 1e-12);
  EXPECT_NEAR(p.taxonomy->psi, 1, 1e-12);
  EXPECT_NEAR(p.taxonomy->nu, 0.85, 1e-12);
  EXPECT_FALSE(buildLayer("dense(in=4, out=4)").taxonomy.has_value());
}

TEST(Theta, RouteAndPointFlags) {
  EXPECT_EQ(attribute(buildLayer(thetaSpec(256, 256, kBtt)), "route"), "btt");
  EXPECT_EQ(attribute(buildLayer(thetaSpec(256, 256, kTt)), "route"), "einsum");
  // The route follows the ROUNDED sizes: beta = 0.01 on 256 gives b = round(1.057) = 1
  // (a = 16, g = round(256^0.49) = 15: 240, 6% short of 256).
  EXPECT_EQ(
      attribute(buildLayer(thetaSpec(256, 256, Point{0.5, 0.01, 0.49, 0, 0.5, 0.5, 0})), "route"),
      "btt");
  // Redundant: min(alpha, epsilon) < min(beta, delta).
  const auto redundant = buildLayer(thetaSpec(256, 256, Point{0.2, 0.4, 0.4, 0.4, 0.2, 0.4, 0}));
  EXPECT_EQ(attribute(redundant, "redundant"), "true");
  EXPECT_EQ(attribute(redundant, "degenerate"), "<absent>");
  // Degenerate: rho > min(alpha, epsilon).
  const auto degenerate = buildLayer(thetaSpec(256, 256, Point{0.5, 0, 0.5, 0, 0.5, 0.5, 0.6}));
  EXPECT_EQ(attribute(degenerate, "degenerate"), "true");
  EXPECT_EQ(attribute(degenerate, "redundant"), "<absent>");
  EXPECT_EQ(attribute(buildLayer(thetaSpec(256, 256, kTt)), "redundant"), "<absent>");
}

TEST(Theta, NormFlavourFollowsTheRoute) {
  // BTT route: btt_norm, a gain per core, eps 1e-8.
  auto p = buildLayer(thetaSpec(256, 256, kBtt, ", norm"));
  EXPECT_NE(p.findParam("A_gamma"), nullptr);
  EXPECT_NE(p.findParam("B_gamma"), nullptr);
  for (const ir::Op& op : p.ops)
    if (op.kind == ir::OpKind::WeightNorm) {
      EXPECT_EQ(op.inputs.size(), 2u);
      EXPECT_EQ(op.normEps, 1e-8);
    }
  // Elsewhere: einsum_norm, no gain, eps 1e-6. A: 16 -> 64, sigma = sqrt(16)/16.
  p = buildLayer(thetaSpec(256, 256, Point{0.5, 0.5, 0, 0.5, 0.5, 0, 0.25}, ", norm"));
  EXPECT_EQ(p.params.size(), 2u);
  int norms = 0;
  for (const ir::Op& op : p.ops)
    if (op.kind == ir::OpKind::WeightNorm) {
      ++norms;
      EXPECT_EQ(op.inputs.size(), 1u);
      EXPECT_EQ(op.normEps, 1e-6);
    }
  EXPECT_EQ(norms, 2);
  EXPECT_NEAR(p.ops.at(1).normSigma, 0.25, 1e-15);
}

void expectBuildError(const std::string& spec, int line, int column, const std::string& text) {
  expectSpecError([&] { buildLayer(spec); }, line, column, text);
}

TEST(Theta, RejectsBadPoints) {
  const std::string head = "theta(in=256, out=256, ";
  // "theta(in=256, out=256, " is 23 characters: the first theta key is at column 24.
  expectBuildError(head + "alpha=0.3, beta=0.3, gamma=0.3, delta=0, epsilon=0.5, phi=0.5, rho=0)",
                   1, 24, "alpha + beta + gamma must be 1 (within 0.01), got 0.9");
  expectBuildError(head + "alpha=0.5, beta=0, gamma=0.5, delta=0.5, epsilon=0.5, phi=0.5, rho=0)",
                   1, 54, "delta + epsilon + phi must be 1");
  expectBuildError(head + "alpha=1.5, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5, rho=0)",
                   1, 30, "expected a number in [0, 1] for 'alpha', found '1.5'");
  expectBuildError(head + "alpha=x, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5, rho=0)", 1,
                   30, "found 'x'");
  expectBuildError(head + "alpha=nan, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5, rho=0)",
                   1, 30, "found 'nan'");
  expectBuildError(head + "alpha=0.5, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5)", 1, 1,
                   "missing 'rho'");
  // Within the 0.01 tolerance: accepted.
  EXPECT_NO_THROW(buildLayer(
      head + "alpha=0.5, beta=0, gamma=0.505, delta=0, epsilon=0.5, phi=0.495, rho=0)"));
  // in = 10, alpha = beta = gamma = 1/3: a = b = g = 2, 8 is 20% short of 10.
  expectBuildError("theta(in=10, out=8, alpha=0.34, beta=0.33, gamma=0.33, delta=0.34, epsilon=0.33, "
                   "phi=0.33, rho=0)",
                   1, 1, "more than 15%");
}

}  // namespace
}  // namespace einjit
