#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "compiler/planner/ContractionPlan.h"
#include "einjit/error.h"

namespace einjit {
namespace {

using Labels = std::vector<int>;
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

int64_t productOf(const std::set<int>& labels, const std::vector<int64_t>& size) {
  long double product = 1;
  for (int label : labels) product *= static_cast<long double>(size[label]);
  return product >= static_cast<long double>(kMax) ? kMax : static_cast<int64_t>(product);
}

// Replays `plan` on the operand list and checks every step against the rules the planner
// promises: positions valid, result labels distinct, exactly the still-needed labels kept,
// MACs and sizes right, the last step producing the output in output order.
void expectValidPlan(const ContractionPlan& plan, const std::vector<Labels>& inputs,
                     const Labels& output, const std::vector<int64_t>& size) {
  std::vector<Labels> list = inputs;
  ASSERT_EQ(plan.steps.size(), inputs.size() == 1 ? 1u : inputs.size() - 1);
  int64_t total = 0;
  int64_t largest = 0;
  for (std::size_t s = 0; s < plan.steps.size(); ++s) {
    const ContractionStep& step = plan.steps[s];
    ASSERT_GE(step.lhs, 0);
    ASSERT_LT(step.lhs, static_cast<int>(list.size()));
    std::set<int> touched(list[step.lhs].begin(), list[step.lhs].end());
    std::vector<int> removed = {step.lhs};
    if (inputs.size() == 1) {
      EXPECT_EQ(step.rhs, -1);
    } else {
      ASSERT_GE(step.rhs, 0);
      ASSERT_LT(step.rhs, static_cast<int>(list.size()));
      ASSERT_NE(step.lhs, step.rhs);
      touched.insert(list[step.rhs].begin(), list[step.rhs].end());
      removed.push_back(step.rhs);
    }
    std::set<int> needed(output.begin(), output.end());
    for (int k = 0; k < static_cast<int>(list.size()); ++k)
      if (std::find(removed.begin(), removed.end(), k) == removed.end())
        needed.insert(list[k].begin(), list[k].end());
    std::set<int> expectedResult;
    for (int label : touched)
      if (needed.count(label)) expectedResult.insert(label);
    std::set<int> result(step.resultLabels.begin(), step.resultLabels.end());
    EXPECT_EQ(result.size(), step.resultLabels.size()) << "repeated label in step " << s;
    EXPECT_EQ(result, expectedResult) << "step " << s;
    EXPECT_EQ(step.macs, productOf(touched, size)) << "step " << s;
    EXPECT_EQ(step.resultSize, productOf(result, size)) << "step " << s;
    total = total > kMax - step.macs ? kMax : total + step.macs;
    if (s + 1 < plan.steps.size()) largest = std::max(largest, step.resultSize);
    std::sort(removed.rbegin(), removed.rend());
    for (int position : removed) list.erase(list.begin() + position);
    list.push_back(step.resultLabels);
  }
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0], output);
  EXPECT_EQ(plan.totalMacs, total);
  EXPECT_EQ(plan.largestIntermediate, largest);
}

// The cheapest total MACs over every possible sequence of pairwise steps, by brute force.
int64_t bruteForceBestCost(const std::vector<Labels>& inputs, const Labels& output,
                           const std::vector<int64_t>& size) {
  std::function<int64_t(std::vector<std::set<int>>)> best = [&](std::vector<std::set<int>> list) {
    if (list.size() == 1) return int64_t{0};
    int64_t bestCost = kMax;
    for (std::size_t i = 0; i < list.size(); ++i)
      for (std::size_t j = i + 1; j < list.size(); ++j) {
        std::set<int> touched = list[i];
        touched.insert(list[j].begin(), list[j].end());
        std::set<int> needed(output.begin(), output.end());
        std::vector<std::set<int>> rest;
        for (std::size_t k = 0; k < list.size(); ++k)
          if (k != i && k != j) {
            rest.push_back(list[k]);
            needed.insert(list[k].begin(), list[k].end());
          }
        std::set<int> result;
        for (int label : touched)
          if (needed.count(label)) result.insert(label);
        rest.push_back(result);
        bestCost = std::min(bestCost, productOf(touched, size) + best(rest));
      }
    return bestCost;
  };
  std::vector<std::set<int>> list;
  for (const Labels& labels : inputs) list.emplace_back(labels.begin(), labels.end());
  return best(list);
}

TEST(ContractionPlanner, MatrixChainPicksABFirst) {
  // A(10x100) B(100x5) C(5x50): (AB)C = 5000 + 2500 MACs, A(BC) = 25000 + 50000.
  const std::vector<int64_t> size = {10, 100, 5, 50};  // i j k l
  const std::vector<Labels> inputs = {{0, 1}, {1, 2}, {2, 3}};
  const ContractionPlan plan = planContraction(inputs, {0, 3}, size);
  EXPECT_EQ(plan.method, "optimal");
  ASSERT_EQ(plan.steps.size(), 2u);
  EXPECT_EQ(plan.steps[0].lhs, 0);
  EXPECT_EQ(plan.steps[0].rhs, 1);
  EXPECT_EQ(plan.steps[0].resultLabels, (Labels{0, 2}));
  EXPECT_EQ(plan.steps[0].macs, 5000);
  EXPECT_EQ(plan.steps[0].resultSize, 50);
  // The list is now [C, AB].
  EXPECT_EQ(std::set<int>({plan.steps[1].lhs, plan.steps[1].rhs}), std::set<int>({0, 1}));
  EXPECT_EQ(plan.steps[1].resultLabels, (Labels{0, 3}));
  EXPECT_EQ(plan.steps[1].macs, 2500);
  EXPECT_EQ(plan.totalMacs, 7500);
  EXPECT_EQ(plan.largestIntermediate, 50);
  expectValidPlan(plan, inputs, {0, 3}, size);
}

TEST(ContractionPlanner, MatrixChainPicksBCFirstWhenCheaper) {
  // A(10x5) B(5x100) C(100x2): A(BC) = 1000 + 100 MACs, (AB)C = 5000 + 2000.
  const std::vector<int64_t> size = {10, 5, 100, 2};
  const std::vector<Labels> inputs = {{0, 1}, {1, 2}, {2, 3}};
  const ContractionPlan plan = planContraction(inputs, {0, 3}, size);
  ASSERT_EQ(plan.steps.size(), 2u);
  EXPECT_EQ(std::set<int>({plan.steps[0].lhs, plan.steps[0].rhs}), std::set<int>({1, 2}));
  EXPECT_EQ(plan.totalMacs, 1100);
  expectValidPlan(plan, inputs, {0, 3}, size);
}

TEST(ContractionPlanner, GreedyIsSuboptimalWhereDpIsNot) {
  // A(2x1) B(1x100) C(100x3). Greedy takes the cheapest first step AB (200 MACs) and then pays
  // 600; the optimum is BC (300) then A(BC) (6).
  const std::vector<int64_t> size = {2, 1, 100, 3};
  const std::vector<Labels> inputs = {{0, 1}, {1, 2}, {2, 3}};
  const ContractionPlan optimal = planContraction(inputs, {0, 3}, size);
  EXPECT_EQ(optimal.method, "optimal");
  EXPECT_EQ(optimal.totalMacs, 306);
  expectValidPlan(optimal, inputs, {0, 3}, size);

  const ContractionPlan greedy = planContraction(inputs, {0, 3}, size, {.maxOptimalOperands = 2});
  EXPECT_EQ(greedy.method, "greedy");
  EXPECT_EQ(greedy.totalMacs, 800);
  ASSERT_EQ(greedy.steps.size(), 2u);
  EXPECT_EQ(greedy.steps[0].lhs, 0);
  EXPECT_EQ(greedy.steps[0].rhs, 1);
  expectValidPlan(greedy, inputs, {0, 3}, size);
}

TEST(ContractionPlanner, TiesAreBrokenBySmallerIntermediate) {
  // A(2x3) B(3x6) C(6x3): (AB)C = 36 + 36 and A(BC) = 54 + 18 MACs, both 72; the intermediate
  // AB has 12 elements, BC 9, so BC goes first.
  const std::vector<int64_t> size = {2, 3, 6, 3};
  const std::vector<Labels> inputs = {{0, 1}, {1, 2}, {2, 3}};
  const ContractionPlan plan = planContraction(inputs, {0, 3}, size);
  ASSERT_EQ(plan.steps.size(), 2u);
  EXPECT_EQ(plan.steps[0].lhs, 1);
  EXPECT_EQ(plan.steps[0].rhs, 2);
  EXPECT_EQ(plan.steps[0].resultLabels, (Labels{1, 3}));
  EXPECT_EQ(plan.totalMacs, 72);
  EXPECT_EQ(plan.largestIntermediate, 9);
  expectValidPlan(plan, inputs, {0, 3}, size);
}

TEST(ContractionPlanner, DpMatchesBruteForceOnRandomProblems) {
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 60; ++trial) {
    const int numLabels = 3 + static_cast<int>(rng() % 5);
    const int numOperands = 2 + static_cast<int>(rng() % 4);
    std::vector<int64_t> size(numLabels);
    for (int64_t& s : size) s = 1 + static_cast<int64_t>(rng() % 7);
    std::vector<Labels> inputs(numOperands);
    std::set<int> used;
    for (Labels& labels : inputs) {
      const int rank = static_cast<int>(rng() % 4);
      for (int d = 0; d < rank; ++d) labels.push_back(static_cast<int>(rng() % numLabels));
      used.insert(labels.begin(), labels.end());
    }
    Labels output;
    for (int label : used)
      if (rng() % 3 == 0) output.push_back(label);
    std::shuffle(output.begin(), output.end(), rng);

    const ContractionPlan plan = planContraction(inputs, output, size);
    SCOPED_TRACE(describePlan(plan, {}));
    expectValidPlan(plan, inputs, output, size);
    EXPECT_EQ(plan.totalMacs, bruteForceBestCost(inputs, output, size)) << "trial " << trial;
  }
}

TEST(ContractionPlanner, GreedyAboveThresholdStaysValid) {
  // A chain of 10 matrices: above the default DP limit of 8 operands.
  std::vector<int64_t> size = {3, 7, 2, 9, 4, 5, 8, 2, 6, 3, 4};
  std::vector<Labels> inputs;
  for (int k = 0; k < 10; ++k) inputs.push_back({k, k + 1});
  const Labels output = {10, 0};
  const ContractionPlan plan = planContraction(inputs, output, size);
  EXPECT_EQ(plan.method, "greedy");
  expectValidPlan(plan, inputs, output, size);

  const ContractionPlan optimal = planContraction(inputs, output, size, {.maxOptimalOperands = 10});
  EXPECT_EQ(optimal.method, "optimal");
  expectValidPlan(optimal, inputs, output, size);
  EXPECT_LE(optimal.totalMacs, plan.totalMacs);
}

TEST(ContractionPlanner, SingleOperandIsOneUnaryStep) {
  // "iij->j" (diagonal then sum): touches i and j.
  const ContractionPlan plan = planContraction({{0, 0, 1}}, {1}, {4, 3});
  EXPECT_EQ(plan.method, "single");
  ASSERT_EQ(plan.steps.size(), 1u);
  EXPECT_EQ(plan.steps[0].lhs, 0);
  EXPECT_EQ(plan.steps[0].rhs, -1);
  EXPECT_EQ(plan.steps[0].resultLabels, (Labels{1}));
  EXPECT_EQ(plan.steps[0].macs, 12);
  EXPECT_EQ(plan.steps[0].resultSize, 3);
  EXPECT_EQ(plan.totalMacs, 12);
  EXPECT_EQ(plan.largestIntermediate, 0);

  // A trace gives a scalar; a transpose keeps the output order.
  const ContractionPlan trace = planContraction({{0, 0}}, {}, {5});
  EXPECT_TRUE(trace.steps[0].resultLabels.empty());
  EXPECT_EQ(trace.steps[0].resultSize, 1);
  const ContractionPlan transpose = planContraction({{0, 1}}, {1, 0}, {2, 3});
  EXPECT_EQ(transpose.steps[0].resultLabels, (Labels{1, 0}));
}

TEST(ContractionPlanner, PrivateLabelsAreSummedInTheFirstStep) {
  // "ax,ab,bc->c": x only in the first operand; a shared by the first two.
  const std::vector<int64_t> size = {2, 7, 3, 4};  // a x b c
  const std::vector<Labels> inputs = {{0, 1}, {0, 2}, {2, 3}};
  const ContractionPlan plan = planContraction(inputs, {3}, size);
  expectValidPlan(plan, inputs, {3}, size);
  ASSERT_EQ(plan.steps.size(), 2u);
  // Best: (ax,ab) -> b for 42 MACs, then (b,bc) -> c for 12.
  EXPECT_EQ(plan.steps[0].resultLabels, (Labels{2}));
  EXPECT_EQ(plan.steps[0].macs, 42);
  EXPECT_EQ(plan.totalMacs, 54);
}

TEST(ContractionPlanner, OutputOrderIsRespected) {
  const std::vector<int64_t> size = {2, 3, 4};
  const ContractionPlan plan = planContraction({{0, 1}, {1, 2}}, {2, 0}, size);
  ASSERT_EQ(plan.steps.size(), 1u);
  EXPECT_EQ(plan.steps[0].resultLabels, (Labels{2, 0}));
  EXPECT_EQ(plan.steps[0].macs, 24);
}

TEST(ContractionPlanner, ScalarsAndZeroSizes) {
  // "ab,,b->a" with a scalar operand.
  const std::vector<Labels> inputs = {{0, 1}, {}, {1}};
  const ContractionPlan plan = planContraction(inputs, {0}, {3, 4});
  expectValidPlan(plan, inputs, {0}, {3, 4});
  // A zero-size label makes everything free.
  const ContractionPlan empty = planContraction({{0, 1}, {1, 2}}, {0, 2}, {3, 0, 4});
  EXPECT_EQ(empty.totalMacs, 0);
  EXPECT_EQ(empty.steps[0].resultSize, 12);
}

TEST(ContractionPlanner, HugeSizesSaturate) {
  const int64_t huge = int64_t{1} << 40;
  const std::vector<int64_t> size = {huge, huge, huge, huge};
  const std::vector<Labels> inputs = {{0, 1}, {1, 2}, {2, 3}};
  for (int limit : {8, 1}) {
    const ContractionPlan plan =
        planContraction(inputs, {0, 3}, size, {.maxOptimalOperands = limit});
    EXPECT_EQ(plan.totalMacs, kMax);
    for (const ContractionStep& step : plan.steps) EXPECT_EQ(step.macs, kMax);
    EXPECT_EQ(plan.largestIntermediate, kMax);
    expectValidPlan(plan, inputs, {0, 3}, size);
  }
  const ContractionPlan single = planContraction({{0, 1, 2}}, {0, 1, 2}, {huge, huge, huge});
  EXPECT_EQ(single.totalMacs, kMax);
  EXPECT_EQ(single.steps[0].resultSize, kMax);
}

TEST(ContractionPlanner, RejectsMalformedInput) {
  EXPECT_THROW(planContraction({}, {}, {}), UserError);
  EXPECT_THROW(planContraction({{0, 5}}, {0}, {2, 3}), UserError);
  EXPECT_THROW(planContraction({{0, -1}}, {0}, {2, 3}), UserError);
  EXPECT_THROW(planContraction({{0, 1}}, {0, 0}, {2, 3}), UserError);
  EXPECT_THROW(planContraction({{0}}, {1}, {2, 3}), UserError);
  EXPECT_THROW(planContraction({{0}}, {0}, {-2}), UserError);
}

TEST(ContractionPlanner, DescribePlanNamesLabelsAndCosts) {
  const ContractionPlan plan = planContraction({{0, 1}, {1, 2}, {2, 3}}, {0, 3}, {2, 3, 6, 3});
  const std::string text = describePlan(plan, {"a", "b", "c", "d"});
  EXPECT_NE(text.find("optimal"), std::string::npos) << text;
  EXPECT_NE(text.find("total MACs 72"), std::string::npos) << text;
  EXPECT_NE(text.find("step 1: (1, 2) -> bd  MACs 54  size 9"), std::string::npos) << text;
  EXPECT_NE(text.find("step 2: (0, 1) -> ad  MACs 18  size 6"), std::string::npos) << text;

  const ContractionPlan ellipsis = planContraction({{0, 1}}, {0, 1}, {2, 3});
  EXPECT_NE(describePlan(ellipsis, {"...0", "a"}).find("-> ...0,a"), std::string::npos);
  EXPECT_NE(describePlan(planContraction({{0, 0}}, {}, {3}), {"i"}).find("(scalar)"),
            std::string::npos);
}

}  // namespace
}  // namespace einjit
