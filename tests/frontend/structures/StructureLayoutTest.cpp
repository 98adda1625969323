// Parameter names and shapes, parameter counts and MACs of every structure against the closed
// forms of structures.md / docs/layouts.md, plus argument checking and factorize.
#include <gtest/gtest.h>

#include <cmath>

#include "frontend/structures/Structures.h"
#include "tests/frontend/structures/SpecErrorMatchers.h"

namespace einjit {
namespace {

// prefix + k, built by appending (GCC 12 -Wrestrict misfires on "literal" + std::string&&).
std::string indexed(const std::string& prefix, int k) {
  std::string text = prefix;
  text += std::to_string(k);
  return text;
}

using testing::expectSpecError;

// Parameter names and shapes in order (scalar gains included).
std::vector<std::pair<std::string, Shape>> paramShapes(const ir::LayerProgram& program) {
  std::vector<std::pair<std::string, Shape>> shapes;
  for (const ir::Parameter& p : program.params) shapes.emplace_back(p.name, p.shape);
  return shapes;
}

using Shapes = std::vector<std::pair<std::string, Shape>>;

std::string attribute(const ir::LayerProgram& program, const std::string& key) {
  for (const auto& [k, v] : program.attributes)
    if (k == key) return v;
  return "<absent>";
}

// The program's output value is (N, dOut) and its input (N, dIn).
void expectEnds(const ir::LayerProgram& program) {
  EXPECT_EQ(program.values.at(program.input).shape, (Shape{ir::kRows, program.dIn}));
  EXPECT_EQ(program.values.at(program.output).shape, (Shape{ir::kRows, program.dOut}));
  EXPECT_EQ(program.values.at(program.output).name, "y");
}

int countOps(const ir::LayerProgram& program, ir::OpKind kind) {
  int n = 0;
  for (const ir::Op& op : program.ops) n += op.kind == kind;
  return n;
}

TEST(Factorize, GreedyOverPrimesAscending) {
  EXPECT_EQ(factorize(1024, 2), (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(factorize(768, 2), (std::vector<int64_t>{24, 32}));
  EXPECT_EQ(factorize(3072, 2), (std::vector<int64_t>{48, 64}));
  EXPECT_EQ(factorize(12, 3), (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(factorize(7, 2), (std::vector<int64_t>{1, 7}));
  EXPECT_EQ(factorize(1, 2), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(factorize(30, 2), (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(factorize(1000, 3), (std::vector<int64_t>{10, 10, 10}));
  EXPECT_EQ(factorize(64, 4), (std::vector<int64_t>{2, 2, 4, 4}));
  EXPECT_EQ(factorize(97, 1), (std::vector<int64_t>{97}));
  // Greedy, not optimal: 5,3,2,2 -> [5,1] [5,3] [5,6] [10,6].
  EXPECT_EQ(factorize(60, 2), (std::vector<int64_t>{6, 10}));
  EXPECT_THROW(factorize(0, 2), UserError);
  EXPECT_THROW(factorize(4, 0), UserError);
}

TEST(Dense, ShapesAndCounts) {
  for (auto [din, dout] : {std::pair<int64_t, int64_t>{256, 256}, {768, 3072}, {7, 5}}) {
    const auto p = buildLayer("dense(in=" + std::to_string(din) + ", out=" + std::to_string(dout) + ")");
    EXPECT_EQ(paramShapes(p), (Shapes{{"W", {din, dout}}}));
    EXPECT_EQ(p.paramCount(), din * dout);
    EXPECT_EQ(p.macsPerRow(), din * dout);
    EXPECT_EQ(p.structure, "dense");
    expectEnds(p);
  }
}

TEST(LowRank, ShapesCountsAndDefaultRank) {
  auto p = buildLayer("lowrank(in=768, out=3072, rank=16)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"U", {768, 16}}, {"V", {16, 3072}}}));
  EXPECT_EQ(p.paramCount(), 16 * (768 + 3072));
  EXPECT_EQ(p.macsPerRow(), 16 * (768 + 3072));
  expectEnds(p);
  // Default rank ceil(sqrt(min(d_in, d_out))): ceil(sqrt(1000)) = 32, sqrt(256) = 16.
  p = buildLayer("lowrank(in=1000, out=2000)");
  EXPECT_EQ(p.findParam("U")->shape, (Shape{1000, 32}));
  EXPECT_EQ(attribute(p, "rank"), "32");
  EXPECT_EQ(buildLayer("lowrank(in=512, out=256)").findParam("V")->shape, (Shape{16, 256}));
}

TEST(Kronecker, TwoFactors) {
  // d_in = 768 = 24*32, d_out = 3072 = 48*64; MACs: m0 n0 m1 + n0 m1 n1.
  auto p = buildLayer("kron(in=768, out=3072)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"L", {24, 48}}, {"R", {32, 64}}}));
  EXPECT_EQ(p.paramCount(), 24 * 48 + 32 * 64);
  EXPECT_EQ(p.macsPerRow(), 24 * 48 * 32 + 48 * 32 * 64);
  expectEnds(p);
  // Square d = m^2: MACs = 2 d^1.5.
  p = buildLayer("kron(in=1024, out=1024)");
  EXPECT_EQ(p.macsPerRow(), 2 * 32768);
  // A prime width factors as 1 x d.
  p = buildLayer("kron(in=7, out=10)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"L", {1, 2}}, {"R", {7, 5}}}));
  EXPECT_EQ(p.macsPerRow(), 1 * 2 * 7 + 2 * 7 * 5);
}

TEST(Kronecker, ThreeFactors) {
  // m = [2,2,3] (12), n = [2,3,5] (30). MACs of factor t: n_<t * m_t * n_t * m_>t.
  const auto p = buildLayer("kron(in=12, out=30, factors=3)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"K1", {2, 2}}, {"K2", {2, 3}}, {"K3", {3, 5}}}));
  EXPECT_EQ(p.paramCount(), 4 + 6 + 15);
  EXPECT_EQ(p.macsPerRow(), 2 * 2 * (2 * 3) + 2 * (2 * 3) * 3 + (2 * 3) * 3 * 5);
  EXPECT_EQ(attribute(p, "in_factors"), "2x2x3");
  EXPECT_EQ(attribute(p, "out_factors"), "2x3x5");
  expectEnds(p);
}

// TT with c cores: params sum r_{t-1} n_t m_t r_t; MACs of core t: m_<t r_{t-1} n_t m_t r_t n_>t.
int64_t ttMacs(const std::vector<int64_t>& n, const std::vector<int64_t>& m, int64_t r) {
  const int c = static_cast<int>(n.size());
  int64_t total = 0;
  for (int t = 0; t < c; ++t) {
    int64_t macs = (t == 0 ? 1 : r) * n[t] * m[t] * (t == c - 1 ? 1 : r);
    for (int k = 0; k < t; ++k) macs *= m[k];
    for (int k = t + 1; k < c; ++k) macs *= n[k];
    total += macs;
  }
  return total;
}

TEST(TensorTrain, TwoCores) {
  auto p = buildLayer("tt(in=1024, out=1024, rank=16)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"G1", {1, 32, 32, 16}}, {"G2", {16, 32, 32, 1}}}));
  EXPECT_EQ(p.paramCount(), 2 * 16 * 1024);  // ~ 2 r d
  EXPECT_EQ(p.macsPerRow(), 2 * 16 * 32768);  // ~ 2 r d^1.5, exact for square d
  EXPECT_EQ(p.macsPerRow(), ttMacs({32, 32}, {32, 32}, 16));
  expectEnds(p);
  p = buildLayer("tt(in=768, out=3072, rank=4)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"G1", {1, 24, 48, 4}}, {"G2", {4, 32, 64, 1}}}));
  EXPECT_EQ(p.paramCount(), 24 * 48 * 4 + 4 * 32 * 64);
  EXPECT_EQ(p.macsPerRow(), ttMacs({24, 32}, {48, 64}, 4));
  // Default rank 1 is the Kronecker product: same counts as kron.
  p = buildLayer("tt(in=768, out=3072)");
  EXPECT_EQ(p.macsPerRow(), buildLayer("kron(in=768, out=3072)").macsPerRow());
}

TEST(TensorTrain, ThreeCoresAndPrimeWidths) {
  auto p = buildLayer("tt(in=24, out=30, rank=3, cores=3)");  // n = [2,3,4], m = [2,3,5]
  EXPECT_EQ(paramShapes(p),
            (Shapes{{"G1", {1, 2, 2, 3}}, {"G2", {3, 3, 3, 3}}, {"G3", {3, 4, 5, 1}}}));
  EXPECT_EQ(p.paramCount(), 12 + 81 + 60);
  EXPECT_EQ(p.macsPerRow(), ttMacs({2, 3, 4}, {2, 3, 5}, 3));
  expectEnds(p);
  p = buildLayer("tt(in=13, out=11, rank=2)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"G1", {1, 1, 1, 2}}, {"G2", {2, 13, 11, 1}}}));
  EXPECT_EQ(p.macsPerRow(), ttMacs({1, 13}, {1, 11}, 2));
}

TEST(Monarch, SquareDefaultAndSqrtBlocks) {
  // b = 4 blocks, p = s = 256: MACs = params = b q p + b s q = 2 d^2 / b.
  auto p = buildLayer("monarch(in=1024, out=1024)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"W1", {4, 256, 256}}, {"W2", {4, 256, 256}}}));
  EXPECT_EQ(p.paramCount(), 2 * 1024 * 1024 / 4);
  EXPECT_EQ(p.macsPerRow(), 2 * 1024 * 1024 / 4);
  EXPECT_EQ(countOps(p, ir::OpKind::Pad) + countOps(p, ir::OpKind::Truncate), 0);
  EXPECT_EQ(countOps(p, ir::OpKind::Permute), 0);  // P1/P2 live in the equations
  expectEnds(p);
  // blocks=-1: ceil(sqrt(d_in)) = 32 for 1024, 28 for 768 (27.7).
  p = buildLayer("monarch(in=1024, out=1024, blocks=-1)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"W1", {32, 32, 32}}, {"W2", {32, 32, 32}}}));
  EXPECT_EQ(attribute(buildLayer("monarch(in=768, out=768, blocks=-1)"), "blocks"), "28");
}

TEST(Monarch, NonSquareAndPadded) {
  // in < out: W1 (b, p, p), W2 (b, s, p). p = 192, s = 768.
  auto p = buildLayer("monarch(in=768, out=3072, blocks=4)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"W1", {4, 192, 192}}, {"W2", {4, 768, 192}}}));
  EXPECT_EQ(p.macsPerRow(), 4 * 192 * 192 + 4 * 768 * 192);
  // in > out: W1 (b, s, p), W2 (b, s, s).
  p = buildLayer("monarch(in=3072, out=768, blocks=4)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"W1", {4, 192, 768}}, {"W2", {4, 192, 192}}}));
  EXPECT_EQ(p.macsPerRow(), 4 * 192 * 768 + 4 * 192 * 192);
  // Padded: in = 10, out = 20, b = 3: p = 4 (pad to 12), s = 7 (21, truncated to 20).
  p = buildLayer("monarch(in=10, out=20, blocks=3)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"W1", {3, 4, 4}}, {"W2", {3, 7, 4}}}));
  EXPECT_EQ(p.paramCount(), 3 * 4 * 4 + 3 * 7 * 4);
  EXPECT_EQ(p.macsPerRow(), 3 * 4 * 4 + 3 * 7 * 4);
  EXPECT_EQ(countOps(p, ir::OpKind::Pad), 1);
  EXPECT_EQ(countOps(p, ir::OpKind::Truncate), 1);
  EXPECT_EQ(attribute(p, "padded_in"), "12");
  EXPECT_EQ(attribute(p, "padded_out"), "21");
  expectEnds(p);
}

TEST(Btt, TwoCores) {
  // Params = MACs = r (m1 m0 n0 + n0 m1 n1).
  for (int64_t r : {1, 4}) {
    auto p = buildLayer("btt(in=1024, out=1024, rank=" + std::to_string(r) + ")");
    EXPECT_EQ(paramShapes(p), (Shapes{{"W0", {32, 32, 32 * r}}, {"W1", {32, 32 * r, 32}}}));
    EXPECT_EQ(p.paramCount(), r * (32 * 32 * 32 + 32 * 32 * 32));  // 2 r d^1.5
    EXPECT_EQ(p.macsPerRow(), p.paramCount());
    expectEnds(p);
  }
  // [m0, m1] = [24, 32], [n0, n1] = [48, 64].
  auto p = buildLayer("btt(in=768, out=3072, rank=4)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"W0", {32, 24, 48 * 4}}, {"W1", {48, 32 * 4, 64}}}));
  EXPECT_EQ(p.paramCount(), 4 * (32 * 24 * 48 + 48 * 32 * 64));
  EXPECT_EQ(p.macsPerRow(), p.paramCount());
  EXPECT_EQ(attribute(p, "in_factors"), "24x32");
  EXPECT_EQ(attribute(p, "out_factors"), "48x64");
  // Prime widths: [1, 7] and [1, 5].
  p = buildLayer("btt(in=7, out=5, rank=3)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"W0", {7, 1, 3}}, {"W1", {1, 21, 5}}}));
  EXPECT_EQ(p.macsPerRow(), 3 * (7 * 1 * 1 + 1 * 7 * 5));
  // With norm, a scalar gain follows each core.
  p = buildLayer("btt(in=768, out=3072, rank=4, norm)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"W0", {32, 24, 192}},
                                    {"W0_gamma", {}},
                                    {"W1", {48, 128, 64}},
                                    {"W1_gamma", {}}}));
  EXPECT_EQ(p.paramCount(), 4 * (32 * 24 * 48 + 48 * 32 * 64) + 2);
  EXPECT_EQ(countOps(p, ir::OpKind::WeightNorm), 2);
}

// c-core BTT: core t (r_{t+1}, r_t, m_<t, m_t, n_t, n_>t); params = MACs = sum of core sizes.
TEST(Btt, ThreeAndFourCores) {
  // m = factorize(30, 3) = [2,3,5] (outputs), n = factorize(24, 3) = [2,3,4] (inputs), r = 2.
  auto p = buildLayer("btt(in=24, out=30, rank=2, cores=3)");
  EXPECT_EQ(paramShapes(p), (Shapes{{"W0", {2, 1, 1, 2, 2, 12}},
                                    {"W1", {2, 2, 2, 3, 3, 4}},
                                    {"W2", {1, 2, 6, 5, 4, 1}}}));
  const int64_t expected = 2 * 1 * 1 * 2 * 2 * 12 + 2 * 2 * 2 * 3 * 3 * 4 + 1 * 2 * 6 * 5 * 4 * 1;
  EXPECT_EQ(p.paramCount(), expected);
  EXPECT_EQ(p.macsPerRow(), expected);
  expectEnds(p);
  // 4 cores, 64 -> 16: n = [2,2,4,4], m = [2,2,2,2], r = 3.
  p = buildLayer("btt(in=64, out=16, rank=3, cores=4)");
  const std::vector<int64_t> n = {2, 2, 4, 4}, m = {2, 2, 2, 2}, ranks = {1, 3, 3, 3, 1};
  int64_t total = 0;
  for (int t = 0; t < 4; ++t) {
    int64_t before = 1, after = 1;
    for (int k = 0; k < t; ++k) before *= m[k];
    for (int k = t + 1; k < 4; ++k) after *= n[k];
    const Shape shape{ranks[t + 1], ranks[t], before, m[t], n[t], after};
    EXPECT_EQ(p.params.at(t).shape, shape) << "core " << t;
    EXPECT_EQ(p.params.at(t).name, indexed("W", t));
    total += shapeNumel(shape);
  }
  EXPECT_EQ(p.paramCount(), total);
  EXPECT_EQ(p.macsPerRow(), total);
}

TEST(LayerProgram, ContractionMacsAndLookups) {
  const auto p = buildLayer("lowrank(in=100, out=50, rank=8)");
  std::vector<int64_t> macs;
  for (const ir::Op& op : p.ops)
    if (op.kind == ir::OpKind::Contract) macs.push_back(ir::contractionMacsPerRow(p, op));
  EXPECT_EQ(macs, (std::vector<int64_t>{800, 400}));
  EXPECT_EQ(p.findParam("V")->shape, (Shape{8, 50}));
  EXPECT_EQ(p.findParam("W"), nullptr);
  ir::Op reshape;
  reshape.kind = ir::OpKind::Reshape;
  EXPECT_THROW(ir::contractionMacsPerRow(p, reshape), UserError);
  EXPECT_STREQ(ir::opKindName(ir::OpKind::Contract), "contract");
  EXPECT_STREQ(ir::opKindName(ir::OpKind::WeightNorm), "weight_norm");
}

TEST(BuildLayer, NormalisedSpecAndOverrides) {
  const auto p = buildLayer(parseStructureSpec("btt(rank=4, norm)"), 1024, 512);
  EXPECT_EQ(p.spec, "btt(in=1024, out=512, rank=4, norm)");
  EXPECT_EQ(p.dIn, 1024);
  EXPECT_EQ(p.dOut, 512);
  // Overrides replace the spec's widths.
  const auto q = buildLayer(parseStructureSpec("dense(in=4, out=8)"), 16, std::nullopt);
  EXPECT_EQ(q.spec, "dense(in=16, out=8)");
  EXPECT_EQ(q.findParam("W")->shape, (Shape{16, 8}));
  EXPECT_EQ(buildLayer("low_rank(out=4, in=6, rank=2)").spec, "lowrank(in=6, out=4, rank=2)");
  EXPECT_THROW(buildLayer(parseStructureSpec("dense()"), 0, 4), UserError);
}

void expectBuildError(const std::string& spec, int line, int column, const std::string& text) {
  expectSpecError([&] { buildLayer(spec); }, line, column, text);
}

TEST(BuildLayer, RejectsBadArguments) {
  expectBuildError("btt(in=4, out=4, rnk=2)", 1, 18,
                   "unknown argument 'rnk' for btt; did you mean 'rank'? (valid arguments: in, "
                   "out, rank, cores, norm, gain, base)");
  expectBuildError("dense(in=4, out=4, rank=2)", 1, 20, "valid arguments: in, out, norm, gain, base");
  expectBuildError("btt(in=4, out=4, gain=false)", 1, 18, "'gain' applies to weight normalisation");
  expectBuildError("monarch(in=4, out=4, block=2)", 1, 22, "did you mean 'blocks'?");
  expectBuildError("btt(in=4, out=4, rank=2, rank=3)", 1, 26,
                   "duplicate argument 'rank' (first given at line 1, column 18)");
  expectBuildError("btt(in=4, out=4, rank=1.5)", 1, 23, "expected a positive integer for 'rank'");
  expectBuildError("btt(in=4, out=4, rank=abc)", 1, 23, "found 'abc'");
  expectBuildError("btt(in=-3, out=4)", 1, 8, "expected a positive integer for 'in', found -3");
  expectBuildError("btt(in=0, out=4)", 1, 8, "expected a positive integer for 'in', found 0");
  expectBuildError("btt(in=true, out=4)", 1, 8, "expected a positive integer");
  expectBuildError("btt(in=99999999999999999999, out=4)", 1, 8, "too large");
  expectBuildError("btt(in=-99999999999999999999, out=4)", 1, 8, "expected a positive integer");
  expectBuildError("btt(in=2000000000000, out=4)", 1, 8, "too large: at most 1099511627776");
  expectBuildError("btt(in=4, out=4, norm=3)", 1, 23, "expected true or false for 'norm'");
  expectBuildError("btt(in=4, out=4, cores=1)", 1, 24, "an integer in [2, 16]");
  expectBuildError("tt(in=4, out=4, cores=17)", 1, 23, "'cores' = 17 is too large: at most 16");
  expectBuildError("kron(in=4, out=4, factors=1)", 1, 27, "an integer in [2, 16]");
  expectBuildError("monarch(in=4, out=4, blocks=0)", 1, 29, "a positive integer or -1");
  expectBuildError("monarch(in=4, out=4, blocks=-2)", 1, 29, "a positive integer or -1");
  expectBuildError("dense(in=4, out=4, base=0)", 1, 25, "positive integer for 'base'");
  expectBuildError("btt(\n  in=4,\n  out=4,\n  rank=x)", 4, 8, "for 'rank', found 'x'");
}

TEST(BuildLayer, MissingWidths) {
  expectBuildError("btt(rank=4)", 1, 1, "missing 'in'");
  expectBuildError("  btt(in=4)", 1, 3, "missing 'out'");
  EXPECT_NO_THROW(buildLayer(parseStructureSpec("btt(in=4)"), std::nullopt, 8));
}

TEST(BuildLayer, OverflowingSizesAreSpecErrors) {
  const std::string big = "1099511627776";  // 2^40: allowed alone, products overflow
  expectBuildError("dense(in=" + big + ", out=" + big + ")", 1, 1, "overflow int64");
  expectBuildError("lowrank(in=" + big + ", out=" + big + ", rank=" + big + ")", 1, 1, "overflow");
  expectBuildError("btt(in=" + big + ", out=" + big + ", rank=" + big + ")", 1, 1, "overflow");
  expectBuildError("tt(in=4, out=4, rank=" + big + ", cores=3)", 1, 1, "overflow");
  expectBuildError("monarch(in=" + big + ", out=" + big + ", blocks=1)", 1, 1, "overflow");
  // Large but representable: fine.
  const auto p = buildLayer("lowrank(in=" + big + ", out=" + big + ", rank=1)");
  EXPECT_EQ(p.paramCount(), 2 * (int64_t{1} << 40));
}

}  // namespace
}  // namespace einjit
