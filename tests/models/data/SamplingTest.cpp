#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "models/data/Sampling.h"

namespace einjit::data {
namespace {

// Expected values from tests/models/data/make_sampling_cases.py (an independent Python
// implementation of mt19937_64, splitmix64 and the rejection mapping).
TEST(Sampling, DeriveSeedMatchesIndependentImplementation) {
  EXPECT_EQ(deriveSeed(42, 0), 6332618229526065668ull);
  EXPECT_EQ(deriveSeed(42, 1), 17532488217563185893ull);
  EXPECT_EQ(deriveSeed(0, 0), 12035550249420947055ull);
}

TEST(Sampling, UniformBelowMatchesIndependentImplementation) {
  std::mt19937_64 rng(deriveSeed(1, 0));
  const uint64_t bound = (uint64_t{1} << 63) + 1;  // about half of all draws are rejected
  const std::vector<uint64_t> expected{8144083929183497542ull, 6057952945524387058ull,
                                       7225936893203282844ull, 4686314153635195459ull};
  for (uint64_t e : expected) EXPECT_EQ(uniformBelow(rng, bound), e);
  std::mt19937_64 one(5);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(uniformBelow(one, 1), 0u);
}

TEST(Sampling, StandardNormalHasUnitMoments) {
  std::mt19937_64 rng(11);
  const int n = 200000;
  double sum = 0, squares = 0, fourth = 0;
  for (int i = 0; i < n; ++i) {
    const double x = standardNormal(rng);
    ASSERT_TRUE(std::isfinite(x));
    sum += x, squares += x * x, fourth += x * x * x * x;
  }
  // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032, 4th moment ~0.02.
  EXPECT_NEAR(sum / n, 0.0, 0.012);
  EXPECT_NEAR(squares / n, 1.0, 0.016);
  EXPECT_NEAR(fourth / n, 3.0, 0.1);
}

TEST(Sampling, UniformUnitIsInHalfOpenUnitInterval) {
  std::mt19937_64 rng(3);
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    const double u = uniformUnit(rng);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
}

}  // namespace
}  // namespace einjit::data
