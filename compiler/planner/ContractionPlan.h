// Contraction ordering for multi-operand einsums.
//
// An einsum with k operands is executed as k-1 pairwise contractions (or one unary step for a
// single operand). The planner chooses the order: exhaustive dynamic programming over operand
// subsets when there are few operands, greedy otherwise. Cost is total MACs; ties are broken by
// the size of the largest intermediate.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace einjit {

struct ContractionStep {
  // Positions in the current operand list. The step removes both operands (rhs == -1: a unary
  // step on lhs, e.g. a trace or a diagonal) and appends its result at the end of the list.
  int lhs = -1, rhs = -1;
  std::vector<int> resultLabels;  // label ids of the result's dimensions, in order
  int64_t macs = 0;               // product of the sizes of all labels the step touches
  int64_t resultSize = 0;         // elements in the result
};

struct ContractionPlan {
  std::vector<ContractionStep> steps;  // the last step produces the output, in output order
  int64_t totalMacs = 0;
  int64_t largestIntermediate = 0;
  std::string method;  // "single", "optimal" or "greedy"
};

struct PlanOptions {
  int maxOptimalOperands = 8;  // DP over subsets up to this many operands, greedy above
};

// inputLabels: per operand, its label ids (repeats allowed: diagonals). outputLabels: the
// output's label ids. labelSize: size of every label id. MACs saturate at INT64_MAX.
ContractionPlan planContraction(const std::vector<std::vector<int>>& inputLabels,
                                const std::vector<int>& outputLabels,
                                const std::vector<int64_t>& labelSize, PlanOptions options = {});

// "step 1: (0, 1) -> abd  MACs 4096 ..." for inspect and debugging.
std::string describePlan(const ContractionPlan& plan, const std::vector<std::string>& labelName);

}  // namespace einjit
