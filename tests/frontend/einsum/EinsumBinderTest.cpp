// bindEinsum: numpy.einsum's rules for operand shapes, broadcasting and the implicit output.
// Expected output shapes were computed once with numpy 1.24 (np.einsum on np.ones operands);
// the canonical forms are written by hand from the label numbering rules.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tests/frontend/einsum/PrintableSpec.h"
#include "frontend/einsum/BoundEinsum.h"

namespace einjit {
namespace {

using testing_support::printableSpec;

BoundEinsum bind(const std::string& spec, const std::vector<Shape>& shapes) {
  return bindEinsum(parseEinsum(spec), shapes);
}

struct GoodCase {
  std::string spec;
  std::vector<Shape> shapes;
  Shape numpyOutputShape;
  std::string canonical;
};
void PrintTo(const GoodCase& c, std::ostream* os) { *os << printableSpec(c.spec); }


class EinsumBinderGood : public testing::TestWithParam<GoodCase> {};

TEST_P(EinsumBinderGood, MatchesNumpy) {
  const GoodCase& c = GetParam();
  const BoundEinsum bound = bind(c.spec, c.shapes);
  EXPECT_EQ(bound.outputShape, c.numpyOutputShape);
  EXPECT_EQ(bound.canonical(), c.canonical);
  EXPECT_EQ(bound.inputShapes, c.shapes);

  // The bound form is self-consistent: every dimension has a label whose size it equals or
  // broadcasts to, and the output shape is the sizes of the output labels.
  ASSERT_EQ(bound.inputLabels.size(), c.shapes.size());
  ASSERT_EQ(bound.labelName.size(), bound.labelSize.size());
  for (std::size_t op = 0; op < c.shapes.size(); ++op) {
    ASSERT_EQ(bound.inputLabels[op].size(), c.shapes[op].size());
    for (std::size_t d = 0; d < c.shapes[op].size(); ++d) {
      const int label = bound.inputLabels[op][d];
      ASSERT_GE(label, 0);
      ASSERT_LT(label, bound.numLabels());
      const int64_t size = c.shapes[op][d];
      EXPECT_TRUE(size == bound.labelSize[label] || size == 1) << c.spec;
    }
  }
  ASSERT_EQ(bound.outputLabels.size(), bound.outputShape.size());
  for (std::size_t d = 0; d < bound.outputLabels.size(); ++d)
    EXPECT_EQ(bound.outputShape[d], bound.labelSize[bound.outputLabels[d]]);
}

INSTANTIATE_TEST_SUITE_P(
    Specs, EinsumBinderGood,
    testing::Values(
        // matmul, batched matmul, chains
        GoodCase{"ij,jk->ik", {Shape{2, 3}, Shape{3, 4}}, {2, 4}, "ij,jk->ik"},
        // numpy: '...' in the output with none in the inputs covers zero dims
        GoodCase{"ij->...ji", {Shape{2, 3}}, {3, 2}, "ij->ji"},
        GoodCase{"ij,jk", {Shape{2, 3}, Shape{3, 4}}, {2, 4}, "ij,jk->ik"},
        GoodCase{"bij,bjk->bik", {Shape{5, 2, 3}, Shape{5, 3, 4}}, {5, 2, 4}, "bij,bjk->bik"},
        GoodCase{"ij,jk,kl->il", {Shape{2, 3}, Shape{3, 4}, Shape{4, 5}}, {2, 5}, "ij,jk,kl->il"},
        // traces and diagonals
        GoodCase{"ii", {Shape{3, 3}}, {}, "ii->"},
        GoodCase{"ii->i", {Shape{3, 3}}, {3}, "ii->i"},
        GoodCase{"iij", {Shape{3, 3, 2}}, {2}, "iij->j"},
        GoodCase{"Aa,aA->", {Shape{3, 4}, Shape{4, 3}}, {}, "Aa,aA->"},
        // implicit outputs: letters used once, ASCII order, upper case first
        GoodCase{"ij->ji", {Shape{2, 3}}, {3, 2}, "ij->ji"},
        GoodCase{"ij", {Shape{2, 3}}, {2, 3}, "ij->ij"},
        GoodCase{"ji", {Shape{2, 3}}, {3, 2}, "ji->ij"},
        GoodCase{"aB", {Shape{2, 3}}, {3, 2}, "aB->Ba"},
        GoodCase{"zZaA", {Shape{1, 2, 3, 4}}, {4, 2, 3, 1}, "zZaA->AZaz"},
        GoodCase{"ba,cb", {Shape{2, 3}, Shape{4, 2}}, {3, 4}, "ba,cb->ac"},
        GoodCase{"a,b,c", {Shape{2}, Shape{3}, Shape{4}}, {2, 3, 4}, "a,b,c->abc"},
        // size-1 dimensions broadcast, also for explicit labels; 1 against 0 gives 0
        GoodCase{"ij,ij->ij", {Shape{3, 1}, Shape{3, 4}}, {3, 4}, "ij,ij->ij"},
        GoodCase{"ij,ij", {Shape{1, 4}, Shape{3, 1}}, {}, "ij,ij->"},
        GoodCase{"i,i->i", {Shape{1}, Shape{0}}, {0}, "i,i->i"},
        GoodCase{"i,i", {Shape{0}, Shape{1}}, {}, "i,i->"},
        GoodCase{"ii,i->i", {Shape{1, 1}, Shape{3}}, {3}, "ii,i->i"},
        GoodCase{"i,i,i->i", {Shape{1}, Shape{4}, Shape{1}}, {4}, "i,i,i->i"},
        // ellipsis: right-aligned broadcasting, different dim counts per operand
        GoodCase{"...ij,...jk->...ik", {Shape{2, 3, 4}, Shape{4, 5}}, {2, 3, 5},
                 "...0ij,jk->...0ik"},
        GoodCase{"...,...", {Shape{2, 3}, Shape{3}}, {2, 3}, "...0...1,...1->...0...1"},
        GoodCase{"...,...", {Shape{2, 1}, Shape{4}}, {2, 4}, "...0...1,...1->...0...1"},
        GoodCase{"...,...", {Shape{2, 0}, Shape{1}}, {2, 0}, "...0...1,...1->...0...1"},
        GoodCase{"a...,...b->...ab", {Shape{2, 3, 4}, Shape{1, 4, 5}}, {3, 4, 2, 5},
                 "a...0...1,...0...1b->...0...1ab"},
        GoodCase{"a...,...b", {Shape{2, 3, 4}, Shape{4, 5}}, {3, 4, 2, 5},
                 "a...0...1,...1b->...0...1ab"},
        GoodCase{"...a->a...", {Shape{2, 3, 4, 5}}, {5, 2, 3, 4}, "...0...1...2a->a...0...1...2"},
        GoodCase{"a...b->...", {Shape{2, 3, 4, 5}}, {3, 4}, "a...0...1b->...0...1"},
        GoodCase{"a...a", {Shape{2, 3, 2}}, {3}, "a...0a->...0"},
        GoodCase{"...ii->...i", {Shape{2, 3, 3}}, {2, 3}, "...0ii->...0i"},
        GoodCase{"...,...a->...", {Shape{5, 2, 1}, Shape{3, 4}}, {5, 2, 3},
                 "...0...1...2,...2a->...0...1...2"},
        // an ellipsis that covers no dimension needs no "..." in the output
        GoodCase{"ij...->ij", {Shape{2, 3}}, {2, 3}, "ij->ij"},
        GoodCase{"ab...", {Shape{2, 3}}, {2, 3}, "ab->ab"},
        GoodCase{"ij...,...->ij", {Shape{2, 3}, Shape{}}, {2, 3}, "ij,->ij"},
        GoodCase{"...", {Shape{}}, {}, "->"},
        GoodCase{"...", {Shape{2, 3}}, {2, 3}, "...0...1->...0...1"},
        // scalars
        GoodCase{"", {Shape{}}, {}, "->"},
        GoodCase{",", {Shape{}, Shape{}}, {}, ",->"},
        GoodCase{",ab->ab", {Shape{}, Shape{2, 3}}, {2, 3}, ",ab->ab"},
        GoodCase{"ab,", {Shape{2, 3}, Shape{}}, {2, 3}, "ab,->ab"},
        GoodCase{"->", {Shape{}}, {}, "->"},
        GoodCase{"ab,bc->", {Shape{2, 3}, Shape{3, 4}}, {}, "ab,bc->"},
        // whitespace and several lines
        GoodCase{" a b , b c -> a c ", {Shape{2, 3}, Shape{3, 4}}, {2, 4}, "ab,bc->ac"},
        GoodCase{"a b,b c", {Shape{2, 3}, Shape{3, 4}}, {2, 4}, "ab,bc->ac"},
        GoodCase{"ab,\n  bc\n  -> ac\n", {Shape{2, 3}, Shape{3, 4}}, {2, 4}, "ab,bc->ac"}));

TEST(EinsumBinder, FillsEveryFieldWithBroadcastEllipsis) {
  const BoundEinsum bound = bind("a...,...b->...ab", {Shape{2, 5, 1}, Shape{1, 4, 5}});
  EXPECT_EQ(bound.labelName, (std::vector<std::string>{"a", "...0", "...1", "b"}));
  EXPECT_EQ(bound.labelSize, (std::vector<int64_t>{2, 5, 4, 5}));
  EXPECT_EQ(bound.inputLabels, (std::vector<std::vector<int>>{{0, 1, 2}, {1, 2, 3}}));
  EXPECT_EQ(bound.inputShapes, (std::vector<Shape>{Shape{2, 5, 1}, Shape{1, 4, 5}}));
  EXPECT_EQ(bound.outputLabels, (std::vector<int>{1, 2, 0, 3}));
  EXPECT_EQ(bound.outputShape, (Shape{5, 4, 2, 5}));  // numpy: (5, 4, 2, 5)
  EXPECT_EQ(bound.numLabels(), 4);
}

TEST(EinsumBinder, EllipsisOfFewerDimsTakesTheRightmostBroadcastLabels) {
  const BoundEinsum bound = bind("b,...a", {Shape{4}, Shape{2, 3, 5}});
  EXPECT_EQ(bound.labelName, (std::vector<std::string>{"b", "...0", "...1", "a"}));
  EXPECT_EQ(bound.outputLabels, (std::vector<int>{1, 2, 3, 0}));
  EXPECT_EQ(bound.outputShape, (Shape{2, 3, 5, 4}));  // numpy: (2, 3, 5, 4)

  const BoundEinsum mixed = bind("...x,...->...", {Shape{7, 2}, Shape{3, 1}});
  EXPECT_EQ(mixed.labelName, (std::vector<std::string>{"...0", "...1", "x"}));
  EXPECT_EQ(mixed.inputLabels, (std::vector<std::vector<int>>{{1, 2}, {0, 1}}));
  EXPECT_EQ(mixed.labelSize, (std::vector<int64_t>{3, 7, 2}));
  EXPECT_EQ(mixed.outputShape, (Shape{3, 7}));
}

TEST(EinsumBinder, LabelSizeIsTheBroadcastSize) {
  EXPECT_EQ(bind("ij,ij->ij", {Shape{3, 1}, Shape{3, 4}}).labelSize, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(bind("i,i->i", {Shape{1}, Shape{0}}).labelSize, (std::vector<int64_t>{0}));
  const BoundEinsum diagonal = bind("ii,i->i", {Shape{1, 1}, Shape{3}});
  EXPECT_EQ(diagonal.labelSize, (std::vector<int64_t>{3}));
  EXPECT_EQ(diagonal.inputLabels, (std::vector<std::vector<int>>{{0, 0}, {0}}));
}

TEST(EinsumBinder, ExtremeSizesAreKeptAsGiven) {
  const int64_t huge = std::numeric_limits<int64_t>::max();
  const BoundEinsum bound = bind("ij,jk->ik", {Shape{huge, 1}, Shape{huge, huge}});
  EXPECT_EQ(bound.labelSize, (std::vector<int64_t>{huge, huge, huge}));
  EXPECT_EQ(bound.outputShape, (Shape{huge, huge}));
}

TEST(EinsumBinder, HighRankEllipsis) {
  const Shape shape(100000, 1);
  const BoundEinsum bound = bind("...a->a...", {shape});
  EXPECT_EQ(bound.numLabels(), 100000);
  EXPECT_EQ(bound.labelName[99998], "...99998");
  EXPECT_EQ(bound.outputShape, shape);
  EXPECT_EQ(bound.outputLabels.front(), 99999);
}

TEST(EinsumBinder, CanonicalOfAHandBuiltBinding) {
  BoundEinsum bound;
  bound.labelName = {"x", "...0", "Y"};
  bound.labelSize = {2, 3, 4};
  bound.inputLabels = {{0, 1}, {1, 2}, {}};
  bound.outputLabels = {2, 0};
  EXPECT_EQ(bound.canonical(), "x...0,...0Y,->Yx");
}

TEST(EinsumBinder, NegativeDimensionIsAUserError) {
  try {
    bind("ab", {Shape{2, -1}});
    FAIL() << "expected a UserError";
  } catch (const SpecError&) {
    FAIL() << "a bad shape is not an error in the spec";
  } catch (const UserError& error) {
    EXPECT_NE(std::string(error.what()).find("negative size -1"), std::string::npos);
  }
}

TEST(EinsumBinder, HandBuiltAstWithoutOperands) {
  const BoundEinsum bound = bindEinsum(EinsumAST{}, {});
  EXPECT_EQ(bound.numLabels(), 0);
  EXPECT_TRUE(bound.outputShape.empty());
  EXPECT_THROW(bindEinsum(EinsumAST{}, {Shape{}}), SpecError);
}

TEST(EinsumBinder, HandBuiltAstWithTwoEllipsesInATerm) {
  const Subscript ellipsisAt1{true, 0, SourceLoc{1, 1}};
  const Subscript ellipsisAt4{true, 0, SourceLoc{1, 4}};
  EinsumAST ast;
  ast.source = "......";
  ast.inputs.push_back(OperandSubscripts{{ellipsisAt1, ellipsisAt4}, SourceLoc{1, 1}});
  try {
    bindEinsum(ast, {Shape{2, 3}});
    FAIL() << "expected a SpecError";
  } catch (const SpecError& error) {
    EXPECT_EQ(error.loc().column, 4);
    EXPECT_NE(error.message().find("at most one '...'"), std::string::npos);
  }
  ast.inputs[0].subscripts.pop_back();
  ast.output = OperandSubscripts{{ellipsisAt1, ellipsisAt4}, SourceLoc{1, 1}};
  EXPECT_THROW(bindEinsum(ast, {Shape{2, 3}}), SpecError);
}

// --- errors -------------------------------------------------------------------------------

struct BadCase {
  std::string spec;
  std::vector<Shape> shapes;
  int line;
  int column;
  std::vector<std::string> messageParts;
};
void PrintTo(const BadCase& c, std::ostream* os) { *os << printableSpec(c.spec); }


class EinsumBinderError : public testing::TestWithParam<BadCase> {};

TEST_P(EinsumBinderError, ReportsLocationAndCause) {
  const BadCase& bad = GetParam();
  try {
    bind(bad.spec, bad.shapes);
    FAIL() << "expected a SpecError for \"" << bad.spec << "\"";
  } catch (const SpecError& error) {
    EXPECT_EQ(error.loc().line, bad.line) << error.what();
    EXPECT_EQ(error.loc().column, bad.column) << error.what();
    EXPECT_EQ(error.source(), bad.spec);
    for (const std::string& part : bad.messageParts)
      EXPECT_NE(error.message().find(part), std::string::npos)
          << "missing \"" << part << "\" in: " << error.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    BadBindings, EinsumBinderError,
    testing::Values(
        // operand count
        BadCase{"ij,jk", {Shape{2, 3}}, 1, 4,
                {"the spec has 2 operands but 1 shape was given: no shape for operand 1"}},
        BadCase{"ij", {Shape{2, 3}, Shape{3}}, 1, 3,
                {"the spec has 1 operand but 2 shapes were given: expected another operand here"}},
        BadCase{"ij->i", {Shape{2, 3}, Shape{3}}, 1, 3, {"1 operand but 2 shapes"}},
        BadCase{"ij, jk ->ik", {Shape{2, 3}, Shape{3, 4}, Shape{4}}, 1, 8,
                {"2 operands but 3 shapes"}},
        BadCase{"ab  \n", {Shape{2, 3}, Shape{3}}, 1, 3, {"1 operand but 2 shapes"}},
        // rank
        BadCase{"ab", {Shape{2}}, 1, 2,
                {"too many subscripts: operand 0 has rank 1 (shape (2,)) but its subscripts name "
                 "2 dimensions"}},
        BadCase{"a...b", {Shape{2}}, 1, 5, {"too many subscripts", "besides the ones '...' covers"}},
        BadCase{"a", {Shape{2, 3}}, 1, 1,
                {"operand 0 has rank 2 (shape (2, 3)) but its subscripts name only 1 dimension",
                 "'...'"}},
        BadCase{"ab,c", {Shape{2, 3}, Shape{4, 5}}, 1, 4, {"operand 1 has rank 2"}},
        BadCase{"", {Shape{2}}, 1, 1, {"name only 0 dimensions"}},
        BadCase{"ab, ,c", {Shape{2, 3}, Shape{3}, Shape{4}}, 1, 5, {"operand 1 has rank 1"}},
        // sizes
        BadCase{"ij,jk", {Shape{2, 3}, Shape{4, 5}}, 1, 4,
                {"size mismatch for label 'j': 4 in operand 1 (shape (4, 5), at column 4) but 3 "
                 "in operand 0 (shape (2, 3), at column 2); sizes must be equal, or 1 to "
                 "broadcast"}},
        BadCase{"ij,ij", {Shape{3, 1}, Shape{2, 4}}, 1, 4,
                {"label 'i'", "2 in operand 1", "3 in operand 0"}},
        BadCase{"i,i", {Shape{0}, Shape{2}}, 1, 3, {"2 in operand 1", "0 in operand 0"}},
        // the size-1 operand 0 is not the one operand 2 conflicts with
        BadCase{"i,i,i", {Shape{1}, Shape{3}, Shape{4}}, 1, 5,
                {"4 in operand 2 (shape (4,), at column 5) but 3 in operand 1 (shape (3,), at "
                 "column 3)"}},
        BadCase{"ii,i->i", {Shape{3, 3}, Shape{4}}, 1, 4, {"4 in operand 1", "3 in operand 0"}},
        BadCase{"...,...", {Shape{0}, Shape{2}}, 1, 5,
                {"size mismatch for broadcast dimension 0 (counted from the left) of '...'"}},
        BadCase{"a...,...b->...ab", {Shape{2, 5, 1}, Shape{7, 4, 5}}, 1, 6,
                {"broadcast dimension 0", "7 in operand 1 (shape (7, 4, 5), at column 6)",
                 "5 in operand 0 (shape (2, 5, 1), at column 2)"}},
        BadCase{"ii", {Shape{3, 1}}, 1, 2,
                {"label 'i' is repeated in operand 0, which takes a diagonal, so its dimensions "
                 "must have equal sizes: 3 at column 1 but 1 at column 2"}},
        // a diagonal needs equal sizes even where one of them is 1 (numpy does not broadcast it)
        BadCase{"i...i", {Shape{1, 2, 3}}, 1, 5, {"diagonal", "1 at column 1 but 3 at column 5"}},
        // output
        BadCase{"ij->k", {Shape{2, 3}}, 1, 5, {"output label 'k' does not appear in any input"}},
        BadCase{"ij->iji", {Shape{2, 3}}, 1, 7,
                {"label 'i' appears more than once in the output (first at column 5)"}},
        BadCase{"ij...->ij", {Shape{2, 3, 1}}, 1, 8,
                {"the output has no '...', but the '...' of operand 0 (shape (2, 3, 1)) covers 1 "
                 "dimension"}},
        BadCase{"a...,b->ab", {Shape{2, 1}, Shape{3}}, 1, 9, {"the output has no '...'"}},
        BadCase{"b,a...->ab", {Shape{3}, Shape{2, 1, 1}}, 1, 9,
                {"the '...' of operand 1 (shape (2, 1, 1)) covers 2 dimensions"}},
        BadCase{"a...->", {Shape{2, 3}}, 1, 7, {"the output has no '...'"}},
        // numpy checks the output before the sizes
        BadCase{"ij,jk->x", {Shape{2, 3}, Shape{4, 5}}, 1, 8, {"output label 'x'"}},
        // several lines
        BadCase{"ab,\nbc->ac", {Shape{2, 3}, Shape{4, 5}}, 2, 1,
                {"4 in operand 1 (shape (4, 5), at line 2, column 1) but 3 in operand 0 (shape "
                 "(2, 3), at column 2)"}},
        BadCase{"ab,\n  bc\n  -> ad", {Shape{2, 3}, Shape{3, 4}}, 3, 7, {"output label 'd'"}}));

TEST(EinsumBinderRender, CaretUnderTheConflictingLabel) {
  try {
    bind("ij,jk->ik", {Shape{2, 3}, Shape{4, 5}});
    FAIL() << "expected a SpecError";
  } catch (const SpecError& error) {
    EXPECT_EQ(error.render(),
              "error: line 1, column 4: size mismatch for label 'j': 4 in operand 1 (shape (4, 5), "
              "at column 4) but 3 in operand 0 (shape (2, 3), at column 2); sizes must be equal, "
              "or 1 to broadcast\n"
              "  ij,jk->ik\n"
              "     ^\n");
  }
}

TEST(EinsumBinderRender, CaretAtTheEndOfTheInputsForAnExtraShape) {
  try {
    bind("ab,\nbc ", {Shape{2, 3}, Shape{3, 4}, Shape{4}});
    FAIL() << "expected a SpecError";
  } catch (const SpecError& error) {
    EXPECT_EQ(error.render(),
              "error: line 2, column 3: the spec has 2 operands but 3 shapes were given: expected "
              "another operand here\n"
              "  bc \n"
              "    ^\n");
  }
}

}  // namespace
}  // namespace einjit
