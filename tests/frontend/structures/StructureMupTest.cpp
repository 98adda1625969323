// The muP table of structures.md section 3 (exact for square d = m^2), base widths, weight
// decay, zero-init of the last core and the weight-norm scales of section 4.
#include <gtest/gtest.h>

#include <cmath>

#include "frontend/structures/Structures.h"

namespace einjit {
namespace {

struct Expected {
  std::string param;
  double sigma, kappa;
};

void expectMup(const std::string& spec, const std::vector<Expected>& rows) {
  SCOPED_TRACE(spec);
  const ir::LayerProgram p = buildLayer(spec);
  for (const Expected& row : rows) {
    const ir::Parameter* param = p.findParam(row.param);
    ASSERT_NE(param, nullptr) << row.param;
    EXPECT_NEAR(param->initStd, row.sigma, 1e-12 * row.sigma) << row.param;
    EXPECT_NEAR(param->lrMult, row.kappa, 1e-12 * row.kappa) << row.param;
  }
}

class MupTable : public ::testing::TestWithParam<std::tuple<int64_t, int64_t>> {};

TEST_P(MupTable, MatchesStructuresMdSection3) {
  const auto [dInt, rInt] = GetParam();
  const double d = static_cast<double>(dInt), r = static_cast<double>(rInt);
  const std::string size = "(in=" + std::to_string(dInt) + ", out=" + std::to_string(dInt);
  const std::string rank = ", rank=" + std::to_string(rInt) + ")";
  expectMup("dense" + size + ")", {{"W", 1 / std::sqrt(d), 1}});
  expectMup("lowrank" + size + rank,
            {{"U", std::sqrt(r) / d, 0.5}, {"V", 1 / std::sqrt(r), d / (2 * r)}});
  const double quarter = std::pow(d, -0.25);
  expectMup("kron" + size + ")", {{"L", quarter, std::sqrt(d) / 2}, {"R", quarter, std::sqrt(d) / 2}});
  expectMup("tt" + size + rank, {{"G1", quarter, std::sqrt(d) / 2},
                                 {"G2", 1 / (r * std::pow(d, 0.25)), std::sqrt(d) / (2 * r)}});
  expectMup("btt" + size + rank, {{"W0", quarter, std::sqrt(d) / 2},
                                  {"W1", 1 / (r * std::pow(d, 0.25)), std::sqrt(d) / (2 * r)}});
  for (int64_t b : {int64_t{4}, static_cast<int64_t>(std::sqrt(d))}) {
    const double blocks = static_cast<double>(b);
    expectMup("monarch" + size + ", blocks=" + std::to_string(b) + ")",
              {{"W1", std::sqrt(blocks / d), blocks / 2}, {"W2", std::sqrt(blocks / d), blocks / 2}});
  }
}

INSTANTIATE_TEST_SUITE_P(SquareWidths, MupTable,
                         ::testing::Combine(::testing::Values(256, 1024, 4096),
                                            ::testing::Values(1, 4)));

TEST(Mup, FactorDimsFollowTheConsumingContraction) {
  // BTT 768 -> 3072, r = 4: W0 is (m1 blocks) x (m0 -> n0 r), W1 is (n0 blocks) x (m1 r -> n1).
  const auto p = buildLayer("btt(in=768, out=3072, rank=4)");
  const ir::Parameter& w0 = *p.findParam("W0");
  const ir::Parameter& w1 = *p.findParam("W1");
  EXPECT_EQ(w0.factorIn, 24);
  EXPECT_EQ(w0.factorOut, 48 * 4);
  EXPECT_EQ(w1.factorIn, 32 * 4);
  EXPECT_EQ(w1.factorOut, 64);
  // sigma = d_in^-1/2 min(1, sqrt(d_out/d_in)); kappa = D_in / d_in_f / 2.
  EXPECT_NEAR(w0.initStd, 1 / std::sqrt(24.0), 1e-15);
  EXPECT_NEAR(w1.initStd, std::sqrt(64.0 / 128) / std::sqrt(128.0), 1e-15);
  EXPECT_NEAR(w0.lrMult, 768.0 / 24 / 2, 1e-12);
  EXPECT_NEAR(w1.lrMult, 768.0 / 128 / 2, 1e-12);
  // Monarch 10 -> 20, b = 3: W1 (3, 4, 4) maps p=4 -> q=4, W2 (3, 7, 4) maps 4 -> 7.
  const auto m = buildLayer("monarch(in=10, out=20, blocks=3)");
  EXPECT_EQ(m.findParam("W1")->factorIn, 4);
  EXPECT_EQ(m.findParam("W2")->factorOut, 7);
  EXPECT_NEAR(m.findParam("W2")->lrMult, 10.0 / 4 / 2, 1e-12);
  // TT 3 cores: core t maps (r_{t-1} n_t) -> (m_t r_t).
  const auto t = buildLayer("tt(in=24, out=30, rank=3, cores=3)");
  EXPECT_EQ(t.findParam("G2")->factorIn, 3 * 3);
  EXPECT_EQ(t.findParam("G2")->factorOut, 3 * 3);
  EXPECT_NEAR(t.findParam("G3")->lrMult, 24.0 / (3 * 4) / 3, 1e-12);  // n_factors = 3
  // c-core BTT: core t maps (r_t n_t) -> (r_{t+1} m_t); m_<t and n_>t are blocks.
  const auto b = buildLayer("btt(in=24, out=30, rank=2, cores=3)");
  EXPECT_EQ(b.findParam("W1")->factorIn, 2 * 3);
  EXPECT_EQ(b.findParam("W1")->factorOut, 2 * 3);
  EXPECT_EQ(b.findParam("W2")->factorIn, 2 * 4);
  EXPECT_EQ(b.findParam("W2")->factorOut, 5);
}

TEST(Mup, BaseWidthScalesEveryMultiplier) {
  // FFN down-projection of GPT-2 at d = 768: dense multiplier 768 / (4 * 768);
  // sigma = 3072^-1/2 * sqrt(768 / 3072).
  expectMup("dense(in=3072, out=768, base=768)", {{"W", 0.5 / std::sqrt(3072.0), 0.25}});
  expectMup("dense(in=1024, out=1024, base=64)", {{"W", 1 / 32.0, 64.0 / 1024}});
  // kappa_f = (D_in / d_in_f) / n_factors * base / D_in.
  expectMup("btt(in=1024, out=1024, rank=4, base=256)",
            {{"W0", std::pow(1024.0, -0.25), 256.0 / 32 / 2}, {"W1", 1 / (4 * std::pow(1024.0, 0.25)), 256.0 / 128 / 2}});
  EXPECT_EQ(buildLayer("dense(in=8, out=8, base=64)").attributes.back(),
            (std::pair<std::string, std::string>{"base", "64"}));
}

TEST(Mup, WeightDecayGainsAndZeroInit) {
  const auto p = buildLayer("btt(in=64, out=64, rank=2, norm)");
  for (const std::string name : {"W0", "W1"}) {
    EXPECT_TRUE(p.findParam(name)->weightDecay) << name;
    EXPECT_FALSE(p.findParam(name)->isScalarGain) << name;
  }
  for (const std::string name : {"W0_gamma", "W1_gamma"}) {
    const ir::Parameter& gain = *p.findParam(name);
    EXPECT_TRUE(gain.shape.empty());
    EXPECT_TRUE(gain.isScalarGain);
    EXPECT_FALSE(gain.weightDecay);
    EXPECT_EQ(gain.lrMult, 1.0);
    EXPECT_FALSE(gain.zeroInitIfResidual);
  }
  // Gains do not count as factors: W0's multiplier still divides by 2.
  EXPECT_NEAR(p.findParam("W0")->lrMult, 64.0 / 8 / 2, 1e-12);
  // Only the last core is zeroed when the layer replaces a zero-initialised dense layer.
  const std::vector<std::pair<std::string, std::string>> lastCores = {
      {"dense(in=8, out=8)", "W"},          {"lowrank(in=8, out=8, rank=2)", "V"},
      {"kron(in=8, out=8, factors=3)", "K3"}, {"tt(in=8, out=8, rank=2, cores=3)", "G3"},
      {"monarch(in=8, out=8, blocks=2)", "W2"}, {"btt(in=8, out=8, rank=2)", "W1"},
      {"btt(in=8, out=8, rank=2, cores=3)", "W2"},
      {"theta(in=16, out=16, alpha=0.5, beta=0.5, gamma=0, delta=0.5, epsilon=0.5, phi=0, rho=0)",
       "B"}};
  for (const auto& [spec, last] : lastCores) {
    const auto program = buildLayer(spec);
    for (const ir::Parameter& param : program.params)
      EXPECT_EQ(param.zeroInitIfResidual, param.name == last) << spec << " " << param.name;
  }
}

TEST(Mup, WeightNormScalesAndEps) {
  // btt_norm: sigma_i = sqrt(min(d_in_f, d_out_f)) / d_in_f, eps 1e-8, with a gain.
  const auto p = buildLayer("btt(in=768, out=3072, rank=4, norm)");
  std::vector<const ir::Op*> norms;
  for (const ir::Op& op : p.ops)
    if (op.kind == ir::OpKind::WeightNorm) norms.push_back(&op);
  ASSERT_EQ(norms.size(), 2u);
  EXPECT_EQ(p.values.at(norms[0]->inputs.at(0)).name, "W0");
  EXPECT_EQ(p.values.at(norms[0]->inputs.at(1)).name, "W0_gamma");
  EXPECT_NEAR(norms[0]->normSigma, std::sqrt(24.0) / 24, 1e-15);    // W0: 24 -> 192
  EXPECT_NEAR(norms[1]->normSigma, std::sqrt(64.0) / 128, 1e-15);   // W1: 128 -> 64
  EXPECT_EQ(norms[0]->normEps, 1e-8);
  EXPECT_EQ(norms[1]->normEps, 1e-8);
  // Monarch with norm gets btt_norm too.
  const auto m = buildLayer("monarch(in=64, out=64, blocks=4, norm)");
  EXPECT_NE(m.findParam("W1_gamma"), nullptr);
  for (const ir::Op& op : m.ops)
    if (op.kind == ir::OpKind::WeightNorm) {
      EXPECT_NEAR(op.normSigma, 4.0 / 16, 1e-15);
    }
}

TEST(Mup, WeightNormWithoutGains) {
  // gain=false (W_Q, W_K under QK-LayerNorm): btt_norm's eps and sigma, no gain parameters.
  const auto p = buildLayer("btt(in=768, out=3072, rank=4, norm, gain=false)");
  EXPECT_EQ(p.spec, "btt(in=768, out=3072, rank=4, norm, gain=false)");
  ASSERT_EQ(p.params.size(), 2u);
  EXPECT_EQ(p.params[0].name, "W0");
  EXPECT_EQ(p.params[1].name, "W1");
  int norms = 0;
  for (const ir::Op& op : p.ops)
    if (op.kind == ir::OpKind::WeightNorm) {
      ++norms;
      EXPECT_EQ(op.inputs.size(), 1u);
      EXPECT_EQ(op.normEps, 1e-8);
      EXPECT_GT(op.normSigma, 0);
    }
  EXPECT_EQ(norms, 2);
  // Theta on the BTT route takes gain=false the same way; off it, einsum_norm has no gains.
  const std::string bttPoint = "theta(in=64, out=64, alpha=0.5, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5, rho=0";
  EXPECT_EQ(buildLayer(bttPoint + ", norm)").params.size(), 4u);
  EXPECT_EQ(buildLayer(bttPoint + ", norm, gain=false)").params.size(), 2u);
  for (const ir::Op& op : buildLayer(bttPoint + ", norm, gain=false)").ops) {
    if (op.kind == ir::OpKind::WeightNorm) {
      EXPECT_EQ(op.normEps, 1e-8);
    }
  }
  // gain=true is the default.
  EXPECT_EQ(buildLayer("btt(in=64, out=64, norm, gain=true)").params.size(),
            buildLayer("btt(in=64, out=64, norm)").params.size());
}

TEST(Mup, GeneralEinsumUsesBmm0) {
  // A as (a, d f r), B as (b g r, e), n_factors = 2. in = out = 256, TT-like point rho = 0.25:
  // a = b = d = e = 16, g = f = 1, r = 4.
  const auto p = buildLayer(
      "theta(in=256, out=256, alpha=0.5, beta=0.5, gamma=0, delta=0.5, epsilon=0.5, phi=0, "
      "rho=0.25)");
  const ir::Parameter& a = *p.findParam("A");
  const ir::Parameter& b = *p.findParam("B");
  EXPECT_EQ(a.factorIn, 16);
  EXPECT_EQ(a.factorOut, 16 * 1 * 4);
  EXPECT_EQ(b.factorIn, 16 * 1 * 4);
  EXPECT_EQ(b.factorOut, 16);
  EXPECT_NEAR(a.initStd, 1 / 4.0, 1e-15);
  EXPECT_NEAR(b.initStd, std::sqrt(16.0 / 64) / 8, 1e-15);
  EXPECT_NEAR(a.lrMult, 256.0 / 16 / 2, 1e-12);
  EXPECT_NEAR(b.lrMult, 256.0 / 64 / 2, 1e-12);
}

}  // namespace
}  // namespace einjit
