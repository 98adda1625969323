#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "frontend/einsum/BoundEinsum.h"

namespace einjit {

namespace {

std::string describe(SourceLoc loc) {
  if (loc.line == 1) return "column " + std::to_string(loc.column);
  return "line " + std::to_string(loc.line) + ", column " + std::to_string(loc.column);
}

std::string operandName(std::size_t operand) { return "operand " + std::to_string(operand); }

std::string plural(std::size_t count, const std::string& noun) {
  return std::to_string(count) + " " + noun + (count == 1 ? "" : "s");
}

// The 1-based line and column of byte `index` of `source`.
SourceLoc locationOf(const std::string& source, std::size_t index) {
  SourceLoc loc;
  for (std::size_t i = 0; i < index && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++loc.line;
      loc.column = 1;
    } else {
      ++loc.column;
    }
  }
  return loc;
}

// Where one more operand would have to be written: at the "->", or just past the last input.
SourceLoc endOfInputs(const std::string& source) {
  const std::size_t arrow = source.find("->");
  if (arrow != std::string::npos) return locationOf(source, arrow);
  std::size_t end = source.size();
  while (end > 0 && (source[end - 1] == ' ' || source[end - 1] == '\t' ||
                     source[end - 1] == '\n' || source[end - 1] == '\r'))
    --end;
  return locationOf(source, end);
}

// One dimension of one operand, with the subscript it came from (the "..." for ellipsis dims).
struct DimSource {
  std::size_t operand = 0;
  std::size_t dim = 0;
  SourceLoc loc;
};

class Binder {
 public:
  Binder(const EinsumAST& ast, const std::vector<Shape>& shapes) : ast_(ast), shapes_(shapes) {
    letterId_.fill(-1);
  }

  BoundEinsum bind() {
    checkOperandCount();
    for (std::size_t op = 0; op < shapes_.size(); ++op) checkRank(op);
    for (std::size_t op = 0; op < shapes_.size(); ++op) assignLabels(op);
    bindOutput();
    for (std::size_t op = 0; op < shapes_.size(); ++op) bindSizes(op);
    bound_.inputShapes = shapes_;
    for (int label : bound_.outputLabels) bound_.outputShape.push_back(bound_.labelSize[label]);
    return std::move(bound_);
  }

 private:
  [[noreturn]] void fail(SourceLoc loc, const std::string& message) const {
    throw SpecError(ast_.source, loc, message);
  }

  void checkOperandCount() const {
    const std::size_t expected = ast_.inputs.size();
    const std::size_t given = shapes_.size();
    const std::string counts = "the spec has " + plural(expected, "operand") + " but " +
                               plural(given, "shape") + (given == 1 ? " was" : " were") +
                               " given";
    if (given < expected)
      fail(ast_.inputs[given].loc, counts + ": no shape for " + operandName(given));
    if (given > expected) fail(endOfInputs(ast_.source), counts + ": expected another operand here");
  }

  static std::size_t countLetters(const OperandSubscripts& term) {
    return static_cast<std::size_t>(std::count_if(term.subscripts.begin(), term.subscripts.end(),
                                                  [](const Subscript& s) { return !s.isEllipsis; }));
  }

  // Whether `term` has a "..."; a second one (only a hand-built AST can have it) is an error.
  bool hasEllipsis(const OperandSubscripts& term) const {
    const Subscript* first = nullptr;
    for (const Subscript& s : term.subscripts) {
      if (!s.isEllipsis) continue;
      if (first)
        fail(s.loc, "a term may contain at most one '...' (the first is at " +
                        describe(first->loc) + ")");
      first = &s;
    }
    return first != nullptr;
  }

  // Checks that the subscripts of `op` fit its rank and records how many dims its "..." covers.
  void checkRank(std::size_t op) {
    const OperandSubscripts& term = ast_.inputs[op];
    const Shape& shape = shapes_[op];
    for (std::size_t d = 0; d < shape.size(); ++d)
      if (shape[d] < 0)
        throw UserError(operandName(op) + " has shape " + shapeToString(shape) + ": dimension " +
                        std::to_string(d) + " has negative size " + std::to_string(shape[d]));

    const std::size_t letters = countLetters(term);
    const bool ellipsis = hasEllipsis(term);
    const std::string rank = operandName(op) + " has rank " + std::to_string(shape.size()) +
                             " (shape " + shapeToString(shape) + ")";
    if (letters > shape.size()) {
      // Point at the first letter that has no dimension left to name.
      std::size_t seen = 0;
      for (const Subscript& s : term.subscripts) {
        if (s.isEllipsis) continue;
        if (seen++ == shape.size())
          fail(s.loc, "too many subscripts: " + rank + " but its subscripts name " +
                          plural(letters, "dimension") +
                          (ellipsis ? " besides the ones '...' covers" : ""));
      }
    }
    if (!ellipsis && letters < shape.size())
      fail(term.loc, rank + " but its subscripts name only " + plural(letters, "dimension") +
                         ": add subscripts, or '...' to cover the remaining dimensions");
    if (ellipsis) {
      ellipsisDims_.push_back(shape.size() - letters);
      broadcastDims_ = std::max(broadcastDims_, shape.size() - letters);
    } else {
      ellipsisDims_.push_back(0);
    }
  }

  int addLabel(const std::string& name) {
    bound_.labelName.push_back(name);
    bound_.labelSize.push_back(-1);  // set by bindSizes from the first dimension it labels
    return static_cast<int>(bound_.labelName.size()) - 1;
  }

  // Label ids in order of first appearance; the first "..." introduces all broadcast dims at once,
  // named "...0" (leftmost) to "...<n-1>".
  void assignLabels(std::size_t op) {
    std::vector<int> labels;
    for (const Subscript& s : ast_.inputs[op].subscripts) {
      if (s.isEllipsis) {
        if (firstEllipsisLabel_ < 0) {
          firstEllipsisLabel_ = static_cast<int>(bound_.labelName.size());
          for (std::size_t i = 0; i < broadcastDims_; ++i) addLabel("..." + std::to_string(i));
        }
        // This operand's ellipsis dims align with the rightmost broadcast dims.
        const std::size_t skipped = broadcastDims_ - ellipsisDims_[op];
        for (std::size_t i = 0; i < ellipsisDims_[op]; ++i)
          labels.push_back(firstEllipsisLabel_ + static_cast<int>(skipped + i));
        continue;
      }
      const auto letter = static_cast<unsigned char>(s.label);
      if (letterId_[letter] < 0) letterId_[letter] = addLabel(std::string(1, s.label));
      ++letterCount_[letter];
      labels.push_back(letterId_[letter]);
    }
    bound_.inputLabels.push_back(std::move(labels));
  }

  void bindOutput() {
    if (!ast_.output) {
      // numpy's implicit output: the broadcast dims, then the letters used exactly once, in
      // ASCII order (so upper case before lower case).
      for (std::size_t i = 0; i < broadcastDims_; ++i)
        bound_.outputLabels.push_back(firstEllipsisLabel_ + static_cast<int>(i));
      for (std::size_t letter = 0; letter < letterCount_.size(); ++letter)
        if (letterCount_[letter] == 1) bound_.outputLabels.push_back(letterId_[letter]);
      return;
    }
    const OperandSubscripts& output = *ast_.output;
    std::array<const Subscript*, 256> seen{};
    const bool ellipsis = hasEllipsis(output);
    for (const Subscript& s : output.subscripts) {
      if (s.isEllipsis) {
        // numpy accepts "ij->...ij": with no '...' in the inputs it covers zero dims.
        for (std::size_t i = 0; i < broadcastDims_; ++i)
          bound_.outputLabels.push_back(firstEllipsisLabel_ + static_cast<int>(i));
        continue;
      }
      const auto letter = static_cast<unsigned char>(s.label);
      if (letterId_[letter] < 0)
        fail(s.loc, "output label '" + std::string(1, s.label) + "' does not appear in any input");
      if (seen[letter])
        fail(s.loc, "label '" + std::string(1, s.label) +
                        "' appears more than once in the output (first at " +
                        describe(seen[letter]->loc) + ")");
      seen[letter] = &s;
      bound_.outputLabels.push_back(letterId_[letter]);
    }
    if (!ellipsis && broadcastDims_ > 0) {
      const auto widest = std::find(ellipsisDims_.begin(), ellipsisDims_.end(), broadcastDims_);
      const std::size_t op = static_cast<std::size_t>(widest - ellipsisDims_.begin());
      fail(output.loc, "the output has no '...', but the '...' of " + operandName(op) +
                           " (shape " + shapeToString(shapes_[op]) + ") covers " +
                           plural(broadcastDims_, "dimension") +
                           ": add '...' to the output to keep them");
    }
  }

  // Per dimension of `op`: the subscript it came from.
  std::vector<SourceLoc> dimLocations(std::size_t op) const {
    std::vector<SourceLoc> locs;
    for (const Subscript& s : ast_.inputs[op].subscripts) {
      const std::size_t count = s.isEllipsis ? ellipsisDims_[op] : 1;
      locs.insert(locs.end(), count, s.loc);
    }
    return locs;
  }

  std::string labelDescription(int label) const {
    const std::string& name = bound_.labelName[label];
    if (name.size() == 1) return "label '" + name + "'";
    return "broadcast dimension " + name.substr(3) + " (counted from the left) of '...'";
  }

  std::string dimDescription(const DimSource& d) const {
    return std::to_string(shapes_[d.operand][d.dim]) + " in " + operandName(d.operand) +
           " (shape " + shapeToString(shapes_[d.operand]) + ", at " + describe(d.loc) + ")";
  }

  // Sizes follow numpy: a repeated label inside one operand (a diagonal) needs equal sizes there;
  // across operands a size-1 dimension broadcasts against any other size.
  void bindSizes(std::size_t op) {
    const std::vector<int>& labels = bound_.inputLabels[op];
    const std::vector<SourceLoc> locs = dimLocations(op);
    std::array<int, 256> firstDimOfLetter;
    firstDimOfLetter.fill(-1);
    sizeSource_.resize(bound_.labelSize.size());
    for (std::size_t d = 0; d < labels.size(); ++d) {
      const int label = labels[d];
      const int64_t size = shapes_[op][d];
      const DimSource here{op, d, locs[d]};
      const std::string& name = bound_.labelName[label];
      if (name.size() == 1) {
        int& first = firstDimOfLetter[static_cast<unsigned char>(name[0])];
        if (first >= 0 && shapes_[op][first] != size)
          fail(here.loc, labelDescription(label) + " is repeated in " + operandName(op) +
                             ", which takes a diagonal, so its dimensions must have equal sizes: " +
                             std::to_string(shapes_[op][first]) + " at " + describe(locs[first]) +
                             " but " + std::to_string(size) + " at " + describe(here.loc));
        if (first < 0) first = static_cast<int>(d);
      }
      int64_t& current = bound_.labelSize[label];
      if (current < 0 || current == 1) {
        if (current < 0 || size != 1) {
          current = size;
          sizeSource_[label] = here;
        }
      } else if (size != 1 && size != current) {
        fail(here.loc, "size mismatch for " + labelDescription(label) + ": " +
                           dimDescription(here) + " but " + dimDescription(sizeSource_[label]) +
                           "; sizes must be equal, or 1 to broadcast");
      }
    }
  }

  const EinsumAST& ast_;
  const std::vector<Shape>& shapes_;
  BoundEinsum bound_;
  std::vector<std::size_t> ellipsisDims_;  // operand -> dims its "..." covers (0 without one)
  std::size_t broadcastDims_ = 0;          // the most dims any "..." covers
  int firstEllipsisLabel_ = -1;            // id of "...0"; -1 while no input has "..."
  std::array<int, 256> letterId_;          // letter -> label id, -1 if unused
  std::array<int, 256> letterCount_{};     // letter -> occurrences over all inputs
  std::vector<DimSource> sizeSource_;      // label -> the dimension its size came from
};

}  // namespace

std::string BoundEinsum::canonical() const {
  auto appendTerm = [this](std::string& text, const std::vector<int>& labels) {
    for (int label : labels) {
      if (label >= 0 && label < numLabels()) {
        text += labelName[label];
      } else {
        text += '?';
        text += std::to_string(label);
      }
    }
  };
  std::string text;
  for (std::size_t op = 0; op < inputLabels.size(); ++op) {
    if (op > 0) text += ',';
    appendTerm(text, inputLabels[op]);
  }
  text += "->";
  appendTerm(text, outputLabels);
  return text;
}

BoundEinsum bindEinsum(const EinsumAST& ast, const std::vector<Shape>& shapes) {
  return Binder(ast, shapes).bind();
}

}  // namespace einjit
