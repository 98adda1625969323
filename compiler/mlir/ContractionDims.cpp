#include "compiler/mlir/ContractionDims.h"

#include <algorithm>
#include <map>

#include "einjit/error.h"
#include "frontend/einsum/EinsumAST.h"
#include "frontend/structures/LayerIR.h"

namespace einjit::cpu {

bool OperandAccess::mergesDims() const {
  return std::any_of(groups.begin(), groups.end(), [](const auto& g) { return g.size() > 1; });
}

namespace {

struct Label {
  char name = 0;
  int64_t size = 1;
  bool dynamic = false;
};

// One dim of a term while labels are being coalesced: the group (label set) indexing it and the
// declared dims it covers.
struct Item {
  int group = -1;
  bool broadcast = false;
  std::vector<int> declaredDims;
};

struct Group {
  std::vector<int> labels;
  bool alive = true;
};

[[noreturn]] void fail(const std::string& equation, const std::string& what) {
  throw UserError("contraction '" + equation + "': " + what);
}

// True if groups g and h can become one loop dim: in every term that mentions either, each
// appears exactly once, unbroadcast, h right after g.
bool canMerge(const std::vector<std::vector<Item>>& terms, const std::vector<Label>& labels,
              const std::vector<Group>& groups, int g, int h) {
  for (int label : groups[g].labels)
    if (labels[label].dynamic) return false;
  for (int label : groups[h].labels)
    if (labels[label].dynamic) return false;
  bool seen = false;
  for (const auto& term : terms) {
    int posG = -1, posH = -1, countG = 0, countH = 0;
    for (int k = 0; k < static_cast<int>(term.size()); ++k) {
      const Item& item = term[k];
      if (item.group != g && item.group != h) continue;
      if (item.broadcast) return false;
      if (item.group == g) posG = k, ++countG;
      if (item.group == h) posH = k, ++countH;
    }
    if (countG == 0 && countH == 0) continue;
    if (countG != 1 || countH != 1 || posH != posG + 1) return false;
    seen = true;
  }
  return seen;
}

void merge(std::vector<std::vector<Item>>& terms, std::vector<Group>& groups, int g, int h) {
  for (auto& term : terms) {
    for (std::size_t k = 0; k + 1 < term.size(); ++k) {
      if (term[k].group != g) continue;
      Item& next = term[k + 1];
      term[k].declaredDims.insert(term[k].declaredDims.end(), next.declaredDims.begin(),
                                  next.declaredDims.end());
      term.erase(term.begin() + static_cast<std::ptrdiff_t>(k) + 1);
      break;
    }
  }
  groups[g].labels.insert(groups[g].labels.end(), groups[h].labels.begin(), groups[h].labels.end());
  groups[h].alive = false;
}

}  // namespace

ContractionDims analyzeContraction(const std::string& equation, const std::vector<Shape>& inputShapes,
                                   const Shape& outputShape) {
  const EinsumAST ast = parseEinsum(equation);
  if (!ast.output) fail(equation, "the output must be explicit ('->')");
  if (ast.inputs.size() != inputShapes.size())
    fail(equation, std::to_string(ast.inputs.size()) + " terms for " +
                       std::to_string(inputShapes.size()) + " operands");

  std::vector<Label> labels;
  std::map<char, int> labelId;
  std::vector<std::vector<int>> termLabels;  // inputs, then the output
  std::vector<const Shape*> termShapes;
  auto addTerm = [&](const OperandSubscripts& term, const Shape& shape, const std::string& what) {
    if (term.subscripts.size() != shape.size())
      fail(equation, what + " has " + std::to_string(term.subscripts.size()) + " labels but rank " +
                         std::to_string(shape.size()));
    std::vector<int> ids;
    for (const Subscript& s : term.subscripts) {
      if (s.isEllipsis) fail(equation, "'...' is not allowed in kernel programs");
      auto [it, inserted] = labelId.emplace(s.label, static_cast<int>(labels.size()));
      if (inserted) labels.push_back(Label{s.label});
      ids.push_back(it->second);
    }
    termLabels.push_back(std::move(ids));
    termShapes.push_back(&shape);
  };
  for (std::size_t i = 0; i < inputShapes.size(); ++i)
    addTerm(ast.inputs[i], inputShapes[i], "operand " + std::to_string(i));
  const int outputLabelsStart = static_cast<int>(labels.size());
  addTerm(*ast.output, outputShape, "the output");
  const int numInputs = static_cast<int>(inputShapes.size());

  // Label sizes from the inputs: sizes other than 1 must agree; 1 broadcasts.
  for (int t = 0; t < numInputs; ++t) {
    for (std::size_t k = 0; k < termLabels[t].size(); ++k) {
      Label& label = labels[termLabels[t][k]];
      const int64_t dim = (*termShapes[t])[k];
      if (dim == ir::kRows) {
        label.dynamic = true;
      } else if (dim < 0) {
        fail(equation, "negative dimension");
      } else if (dim != 1) {
        if (label.size != 1 && label.size != dim)
          fail(equation, std::string("label '") + label.name + "' has sizes " +
                             std::to_string(label.size) + " and " + std::to_string(dim));
        label.size = dim;
      }
    }
  }
  for (const Label& label : labels)
    if (label.dynamic && label.size != 1)
      fail(equation, std::string("label '") + label.name + "' is the row axis but also has size " +
                         std::to_string(label.size));
  if (outputLabelsStart != static_cast<int>(labels.size()))
    fail(equation, std::string("output label '") + labels[outputLabelsStart].name +
                       "' is in no operand");
  const std::vector<int>& outLabels = termLabels.back();
  for (std::size_t k = 0; k < outLabels.size(); ++k) {
    const Label& label = labels[outLabels[k]];
    if (std::count(outLabels.begin(), outLabels.end(), outLabels[k]) > 1)
      fail(equation, std::string("output label '") + label.name + "' is repeated");
    const int64_t dim = outputShape[k];
    if (label.dynamic ? dim != ir::kRows : dim != label.size)
      fail(equation, std::string("output dim of label '") + label.name + "' has the wrong size");
  }

  // One item per declared dim, one group per label; then coalesce to a fixpoint.
  std::vector<Group> groups(labels.size());
  for (std::size_t l = 0; l < labels.size(); ++l) groups[l].labels = {static_cast<int>(l)};
  std::vector<std::vector<Item>> terms(termLabels.size());
  for (std::size_t t = 0; t < termLabels.size(); ++t) {
    for (std::size_t k = 0; k < termLabels[t].size(); ++k) {
      const Label& label = labels[termLabels[t][k]];
      const int64_t dim = (*termShapes[t])[k];
      const bool broadcast = dim == 1 && (label.dynamic || label.size != 1);
      terms[t].push_back(Item{termLabels[t][k], broadcast, {static_cast<int>(k)}});
    }
  }
  for (bool merged = true; merged;) {
    merged = false;
    for (std::size_t g = 0; g < groups.size() && !merged; ++g)
      for (std::size_t h = 0; h < groups.size() && !merged; ++h)
        if (g != h && groups[g].alive && groups[h].alive &&
            canMerge(terms, labels, groups, static_cast<int>(g), static_cast<int>(h))) {
          merge(terms, groups, static_cast<int>(g), static_cast<int>(h));
          merged = true;
        }
  }

  ContractionDims dims;
  std::vector<int> loopOfGroup(groups.size(), -1);
  auto addLoop = [&](int group, bool reduction) {
    LoopDim loop;
    loop.size = 1;
    loop.reduction = reduction;
    for (int l : groups[group].labels) {
      loop.labels += labels[l].name;
      loop.dynamic = loop.dynamic || labels[l].dynamic;
      loop.size *= labels[l].size;
    }
    if (loop.dynamic) dims.rowLoop = static_cast<int>(dims.loops.size());
    loopOfGroup[group] = static_cast<int>(dims.loops.size());
    dims.loops.push_back(loop);
  };
  for (const Item& item : terms.back()) addLoop(item.group, false);
  for (int t = 0; t < numInputs; ++t)
    for (const Item& item : terms[t])
      if (!item.broadcast && loopOfGroup[item.group] < 0) addLoop(item.group, true);

  auto access = [&](const std::vector<Item>& term, const Shape& shape) {
    OperandAccess a;
    for (const Item& item : term) {
      a.groups.push_back(item.declaredDims);
      a.loopDim.push_back(item.broadcast ? -1 : loopOfGroup[item.group]);
      if (item.broadcast) {
        a.collapsedShape.push_back(1);
      } else if (dims.loops[loopOfGroup[item.group]].dynamic) {
        a.collapsedShape.push_back(ir::kRows);
      } else {
        int64_t size = 1;
        for (int d : item.declaredDims) size *= shape[d];
        a.collapsedShape.push_back(size);
      }
    }
    return a;
  };
  for (int t = 0; t < numInputs; ++t) dims.inputs.push_back(access(terms[t], inputShapes[t]));
  dims.output = access(terms.back(), outputShape);
  return dims;
}

}  // namespace einjit::cpu
