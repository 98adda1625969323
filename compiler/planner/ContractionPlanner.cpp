#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "compiler/planner/ContractionPlan.h"
#include "einjit/error.h"

namespace einjit {
namespace {

constexpr int64_t kMaxInt64 = std::numeric_limits<int64_t>::max();
// The DP visits 3^n (subset, split) pairs and stores 2^n entries: beyond this many operands it
// is not affordable whatever the options ask for, and greedy is used instead.
constexpr int kMaxDpOperands = 16;

int64_t saturatingMul(int64_t a, int64_t b) {
  if (a == 0 || b == 0) return 0;
  if (a > kMaxInt64 / b) return kMaxInt64;
  return a * b;
}

int64_t saturatingAdd(int64_t a, int64_t b) { return a > kMaxInt64 - b ? kMaxInt64 : a + b; }

// A set of label ids.
class LabelSet {
 public:
  explicit LabelSet(int numLabels) : words_((numLabels + 63) / 64, 0) {}

  void insert(int label) { words_[label / 64] |= uint64_t{1} << (label % 64); }
  bool contains(int label) const { return (words_[label / 64] >> (label % 64)) & 1; }

  LabelSet operator|(const LabelSet& other) const {
    LabelSet result = *this;
    for (std::size_t w = 0; w < words_.size(); ++w) result.words_[w] |= other.words_[w];
    return result;
  }
  LabelSet operator&(const LabelSet& other) const {
    LabelSet result = *this;
    for (std::size_t w = 0; w < words_.size(); ++w) result.words_[w] &= other.words_[w];
    return result;
  }

  // Saturating product of the sizes of the labels in the set.
  int64_t sizeProduct(const std::vector<int64_t>& labelSize) const {
    int64_t product = 1;
    for (std::size_t w = 0; w < words_.size(); ++w)
      for (int bit = 0; bit < 64; ++bit)
        if ((words_[w] >> bit) & 1) product = saturatingMul(product, labelSize[w * 64 + bit]);
    return product;
  }

 private:
  std::vector<uint64_t> words_;
};

void validateInputs(const std::vector<std::vector<int>>& inputLabels,
                    const std::vector<int>& outputLabels, const std::vector<int64_t>& labelSize) {
  if (inputLabels.empty()) throw UserError("an einsum needs at least one operand");
  const int numLabels = static_cast<int>(labelSize.size());
  for (int64_t size : labelSize)
    if (size < 0)
      throw UserError("contraction planner: negative label size " + std::to_string(size));
  std::vector<bool> inInputs(labelSize.size(), false);
  for (std::size_t k = 0; k < inputLabels.size(); ++k)
    for (int label : inputLabels[k]) {
      if (label < 0 || label >= numLabels)
        throw UserError("contraction planner: operand " + std::to_string(k) + " has label id " +
                        std::to_string(label) + " outside [0, " + std::to_string(numLabels) + ")");
      inInputs[label] = true;
    }
  std::vector<bool> inOutput(labelSize.size(), false);
  for (int label : outputLabels) {
    if (label < 0 || label >= numLabels)
      throw UserError("contraction planner: output label id " + std::to_string(label) +
                      " outside [0, " + std::to_string(numLabels) + ")");
    if (inOutput[label])
      throw UserError("contraction planner: output label id " + std::to_string(label) +
                      " appears twice");
    if (!inInputs[label])
      throw UserError("contraction planner: output label id " + std::to_string(label) +
                      " appears in no operand");
    inOutput[label] = true;
  }
}

// Distinct labels of `lhs` then `rhs` in order of first appearance, keeping those in `kept`.
std::vector<int> orderedResultLabels(const std::vector<int>& lhs, const std::vector<int>& rhs,
                                     const LabelSet& kept, int numLabels) {
  std::vector<int> result;
  LabelSet seen(numLabels);
  for (const std::vector<int>* labels : {&lhs, &rhs})
    for (int label : *labels)
      if (kept.contains(label) && !seen.contains(label)) {
        seen.insert(label);
        result.push_back(label);
      }
  return result;
}

struct Problem {
  const std::vector<std::vector<int>>& inputLabels;
  const std::vector<int>& outputLabels;
  const std::vector<int64_t>& labelSize;
  int numLabels;
  LabelSet outputSet;
  std::vector<LabelSet> operandSets;  // all labels of each original operand
};

void finishPlan(ContractionPlan& plan) {
  for (std::size_t s = 0; s < plan.steps.size(); ++s) {
    plan.totalMacs = saturatingAdd(plan.totalMacs, plan.steps[s].macs);
    if (s + 1 < plan.steps.size())
      plan.largestIntermediate = std::max(plan.largestIntermediate, plan.steps[s].resultSize);
  }
}

// ---- exhaustive DP over operand subsets ----

struct SubsetBest {
  int64_t cost = kMaxInt64;
  int64_t largestIntermediate = 0;
  uint32_t lhs = 0;  // the split: lhs part (contains the lowest operand), rest is rhs
};

ContractionPlan planOptimal(const Problem& problem) {
  const int n = static_cast<int>(problem.inputLabels.size());
  const uint32_t full = (uint32_t{1} << n) - 1;

  std::vector<LabelSet> unionLabels(full + 1, LabelSet(problem.numLabels));
  for (uint32_t s = 1; s <= full; ++s) {
    const uint32_t lowest = s & (~s + 1);
    unionLabels[s] = unionLabels[s ^ lowest] | problem.operandSets[std::countr_zero(lowest)];
  }
  // Labels a subset's contraction result keeps: those still needed by the output or outside.
  // Labels a subset brings into a step: a lone original operand brings all of its labels (its
  // private ones are summed in that step); an intermediate only the ones it kept.
  std::vector<LabelSet> kept(full + 1, LabelSet(problem.numLabels));
  std::vector<LabelSet> carried(full + 1, LabelSet(problem.numLabels));
  for (uint32_t s = 1; s <= full; ++s) {
    kept[s] = unionLabels[s] & (problem.outputSet | unionLabels[full ^ s]);
    carried[s] = std::popcount(s) == 1 ? unionLabels[s] : kept[s];
  }

  std::vector<SubsetBest> best(full + 1);
  for (int k = 0; k < n; ++k) best[uint32_t{1} << k] = {0, 0, 0};
  for (uint32_t s = 1; s <= full; ++s) {
    if (std::popcount(s) < 2) continue;
    const uint32_t lowest = s & (~s + 1);
    const int64_t resultSize = s == full ? 0 : kept[s].sizeProduct(problem.labelSize);
    for (uint32_t a = (s - 1) & s; a > 0; a = (a - 1) & s) {
      if (!(a & lowest)) continue;
      const uint32_t b = s ^ a;
      const int64_t macs = (carried[a] | carried[b]).sizeProduct(problem.labelSize);
      const int64_t cost = saturatingAdd(saturatingAdd(best[a].cost, best[b].cost), macs);
      const int64_t largest =
          std::max({best[a].largestIntermediate, best[b].largestIntermediate, resultSize});
      if (cost < best[s].cost || (cost == best[s].cost && largest < best[s].largestIntermediate) ||
          best[s].lhs == 0)
        best[s] = {cost, largest, a};
    }
  }

  // Emit the tree's steps in post-order, tracking which subset sits at each list position.
  ContractionPlan plan;
  plan.method = "optimal";
  std::vector<uint32_t> list;
  std::vector<std::vector<int>> listLabels;
  for (int k = 0; k < n; ++k) {
    list.push_back(uint32_t{1} << k);
    listLabels.push_back(problem.inputLabels[k]);
  }
  auto emit = [&](auto& self, uint32_t s) -> void {
    if (std::popcount(s) < 2) return;
    const uint32_t a = best[s].lhs, b = s ^ a;
    self(self, a);
    self(self, b);
    const int lhs = static_cast<int>(std::find(list.begin(), list.end(), a) - list.begin());
    const int rhs = static_cast<int>(std::find(list.begin(), list.end(), b) - list.begin());
    ContractionStep step;
    step.lhs = lhs;
    step.rhs = rhs;
    step.macs = (carried[a] | carried[b]).sizeProduct(problem.labelSize);
    step.resultLabels = s == full ? problem.outputLabels
                                  : orderedResultLabels(listLabels[lhs], listLabels[rhs], kept[s],
                                                        problem.numLabels);
    step.resultSize = kept[s].sizeProduct(problem.labelSize);
    for (int position : {std::max(lhs, rhs), std::min(lhs, rhs)}) {
      list.erase(list.begin() + position);
      listLabels.erase(listLabels.begin() + position);
    }
    list.push_back(s);
    listLabels.push_back(step.resultLabels);
    plan.steps.push_back(std::move(step));
  };
  emit(emit, full);
  finishPlan(plan);
  return plan;
}

// ---- greedy: repeatedly take the cheapest pairwise step ----

ContractionPlan planGreedy(const Problem& problem) {
  struct Item {
    std::vector<int> labels;  // original operand: as given (repeats allowed); else the result's
    LabelSet carried;
  };
  std::vector<Item> items;
  std::vector<int> carriers(problem.labelSize.size(), 0);  // label -> items carrying it
  for (std::size_t k = 0; k < problem.inputLabels.size(); ++k) {
    items.push_back({problem.inputLabels[k], problem.operandSets[k]});
    for (int label = 0; label < problem.numLabels; ++label)
      if (problem.operandSets[k].contains(label)) ++carriers[label];
  }

  ContractionPlan plan;
  plan.method = "greedy";
  while (items.size() > 1) {
    const bool last = items.size() == 2;
    struct Candidate {
      int lhs = -1, rhs = -1;
      int64_t macs = kMaxInt64, resultSize = kMaxInt64;
      LabelSet kept;
    };
    Candidate chosen{-1, -1, kMaxInt64, kMaxInt64, LabelSet(problem.numLabels)};
    for (int i = 0; i < static_cast<int>(items.size()); ++i)
      for (int j = i + 1; j < static_cast<int>(items.size()); ++j) {
        const LabelSet touched = items[i].carried | items[j].carried;
        LabelSet kept(problem.numLabels);
        for (int label = 0; label < problem.numLabels; ++label) {
          if (!touched.contains(label)) continue;
          const int elsewhere =
              carriers[label] - items[i].carried.contains(label) - items[j].carried.contains(label);
          if (problem.outputSet.contains(label) || elsewhere > 0) kept.insert(label);
        }
        const int64_t macs = touched.sizeProduct(problem.labelSize);
        const int64_t resultSize = kept.sizeProduct(problem.labelSize);
        if (chosen.lhs < 0 || macs < chosen.macs ||
            (macs == chosen.macs && resultSize < chosen.resultSize))
          chosen = {i, j, macs, resultSize, kept};
      }

    ContractionStep step;
    step.lhs = chosen.lhs;
    step.rhs = chosen.rhs;
    step.macs = chosen.macs;
    step.resultSize = chosen.resultSize;
    step.resultLabels =
        last ? problem.outputLabels
             : orderedResultLabels(items[chosen.lhs].labels, items[chosen.rhs].labels, chosen.kept,
                                   problem.numLabels);
    for (int label = 0; label < problem.numLabels; ++label) {
      carriers[label] -=
          items[chosen.lhs].carried.contains(label) + items[chosen.rhs].carried.contains(label);
      if (chosen.kept.contains(label)) ++carriers[label];
    }
    items.erase(items.begin() + chosen.rhs);
    items.erase(items.begin() + chosen.lhs);
    items.push_back({step.resultLabels, chosen.kept});
    plan.steps.push_back(std::move(step));
  }
  finishPlan(plan);
  return plan;
}

std::string labelString(const std::vector<int>& labels, const std::vector<std::string>& labelName) {
  auto name = [&](int label) {
    if (label >= 0 && label < static_cast<int>(labelName.size())) return labelName[label];
    std::string unnamed = "#";
    unnamed += std::to_string(label);
    return unnamed;
  };
  const bool allSingleCharacters =
      std::all_of(labels.begin(), labels.end(), [&](int label) { return name(label).size() == 1; });
  std::string text;
  for (std::size_t k = 0; k < labels.size(); ++k) {
    if (k > 0 && !allSingleCharacters) text += ",";
    text += name(labels[k]);
  }
  return labels.empty() ? "(scalar)" : text;
}

}  // namespace

ContractionPlan planContraction(const std::vector<std::vector<int>>& inputLabels,
                                const std::vector<int>& outputLabels,
                                const std::vector<int64_t>& labelSize, PlanOptions options) {
  validateInputs(inputLabels, outputLabels, labelSize);
  const int numLabels = static_cast<int>(labelSize.size());
  Problem problem{inputLabels, outputLabels, labelSize, numLabels, LabelSet(numLabels), {}};
  for (int label : outputLabels) problem.outputSet.insert(label);
  for (const std::vector<int>& labels : inputLabels) {
    LabelSet set(numLabels);
    for (int label : labels) set.insert(label);
    problem.operandSets.push_back(set);
  }

  const int n = static_cast<int>(inputLabels.size());
  if (n == 1) {
    ContractionPlan plan;
    plan.method = "single";
    ContractionStep step;
    step.lhs = 0;
    step.resultLabels = outputLabels;
    step.macs = problem.operandSets[0].sizeProduct(labelSize);
    step.resultSize = problem.outputSet.sizeProduct(labelSize);
    plan.steps.push_back(std::move(step));
    finishPlan(plan);
    return plan;
  }
  if (n <= std::min(options.maxOptimalOperands, kMaxDpOperands)) return planOptimal(problem);
  return planGreedy(problem);
}

std::string describePlan(const ContractionPlan& plan, const std::vector<std::string>& labelName) {
  std::ostringstream out;
  out << "plan (" << plan.method << "): " << plan.steps.size()
      << (plan.steps.size() == 1 ? " step" : " steps") << ", total MACs " << plan.totalMacs
      << ", largest intermediate " << plan.largestIntermediate << "\n";
  for (std::size_t s = 0; s < plan.steps.size(); ++s) {
    const ContractionStep& step = plan.steps[s];
    out << "  step " << s + 1 << ": ";
    if (step.rhs < 0)
      out << "(" << step.lhs << ")";
    else
      out << "(" << step.lhs << ", " << step.rhs << ")";
    out << " -> " << labelString(step.resultLabels, labelName) << "  MACs " << step.macs
        << "  size " << step.resultSize << "\n";
  }
  return out.str();
}

}  // namespace einjit
