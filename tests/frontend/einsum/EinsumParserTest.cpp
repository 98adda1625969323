// parseEinsum: the classic (numpy) einsum syntax, its source locations and its error messages.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "frontend/einsum/EinsumAST.h"
#include "tests/frontend/einsum/PrintableSpec.h"

namespace einjit {
namespace {

using testing_support::printableSpec;

// A term written back compactly: letters as themselves, the ellipsis as "...".
std::string spell(const OperandSubscripts& term) {
  std::string text;
  for (const Subscript& s : term.subscripts) text += s.isEllipsis ? std::string("...") : std::string(1, s.label);
  return text;
}

std::vector<std::string> inputsOf(const EinsumAST& ast) {
  std::vector<std::string> terms;
  for (const OperandSubscripts& term : ast.inputs) terms.push_back(spell(term));
  return terms;
}

void expectLoc(const SourceLoc& loc, int line, int column) {
  EXPECT_EQ(loc.line, line);
  EXPECT_EQ(loc.column, column);
}

using Terms = std::vector<std::string>;

TEST(EinsumParser, MatmulWithExplicitOutput) {
  const EinsumAST ast = parseEinsum("ij,jk->ik");
  EXPECT_EQ(ast.source, "ij,jk->ik");
  EXPECT_EQ(inputsOf(ast), (Terms{"ij", "jk"}));
  ASSERT_TRUE(ast.output.has_value());
  EXPECT_EQ(spell(*ast.output), "ik");
  // Every subscript keeps its column.
  expectLoc(ast.inputs[0].subscripts[0].loc, 1, 1);
  expectLoc(ast.inputs[0].subscripts[1].loc, 1, 2);
  expectLoc(ast.inputs[1].subscripts[0].loc, 1, 4);
  expectLoc(ast.inputs[1].subscripts[1].loc, 1, 5);
  expectLoc(ast.output->subscripts[0].loc, 1, 8);
  expectLoc(ast.output->subscripts[1].loc, 1, 9);
  expectLoc(ast.inputs[0].loc, 1, 1);
  expectLoc(ast.inputs[1].loc, 1, 4);
  expectLoc(ast.output->loc, 1, 8);
}

TEST(EinsumParser, ImplicitOutput) {
  const EinsumAST ast = parseEinsum("bij,bjk");
  EXPECT_EQ(inputsOf(ast), (Terms{"bij", "bjk"}));
  EXPECT_FALSE(ast.output.has_value());
}

TEST(EinsumParser, ManyOperands) {
  const EinsumAST ast = parseEinsum("a,b,c,d,e->edcba");
  EXPECT_EQ(inputsOf(ast), (Terms{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(spell(*ast.output), "edcba");
}

TEST(EinsumParser, UpperAndLowerCaseLabels) {
  const EinsumAST ast = parseEinsum("aAzZ->ZzAa");
  EXPECT_EQ(inputsOf(ast), (Terms{"aAzZ"}));
  EXPECT_EQ(spell(*ast.output), "ZzAa");
}

TEST(EinsumParser, RepeatedLabelsAreKept) {
  const EinsumAST ast = parseEinsum("ii->i");
  EXPECT_EQ(inputsOf(ast), (Terms{"ii"}));
  EXPECT_EQ(spell(*ast.output), "i");
}

TEST(EinsumParser, EmptySpecIsOneScalarOperand) {
  const EinsumAST ast = parseEinsum("");
  ASSERT_EQ(ast.inputs.size(), 1u);
  EXPECT_TRUE(ast.inputs[0].subscripts.empty());
  expectLoc(ast.inputs[0].loc, 1, 1);
  EXPECT_FALSE(ast.output.has_value());
}

TEST(EinsumParser, ArrowAloneIsScalarToScalar) {
  const EinsumAST ast = parseEinsum("->");
  EXPECT_EQ(inputsOf(ast), (Terms{""}));
  ASSERT_TRUE(ast.output.has_value());
  EXPECT_TRUE(ast.output->subscripts.empty());
  expectLoc(ast.output->loc, 1, 3);
}

TEST(EinsumParser, EmptyTermsAreScalars) {
  EXPECT_EQ(inputsOf(parseEinsum(",ab->ab")), (Terms{"", "ab"}));
  EXPECT_EQ(inputsOf(parseEinsum("ab,")), (Terms{"ab", ""}));
  EXPECT_EQ(inputsOf(parseEinsum(",")), (Terms{"", ""}));
  EXPECT_EQ(inputsOf(parseEinsum(",,")), (Terms{"", "", ""}));
  const EinsumAST sum = parseEinsum("ab,bc->");
  ASSERT_TRUE(sum.output.has_value());
  EXPECT_TRUE(sum.output->subscripts.empty());
}

TEST(EinsumParser, EmptyTermLocationIsWhereItWouldStart) {
  const EinsumAST ast = parseEinsum("ab, ,c");
  expectLoc(ast.inputs[1].loc, 1, 5);  // the ',' that ends the empty term
  expectLoc(ast.inputs[2].loc, 1, 6);
}

TEST(EinsumParser, EllipsisInEveryPosition) {
  const EinsumAST ast = parseEinsum("...ab,a...b,ab...,...->...");
  EXPECT_EQ(inputsOf(ast), (Terms{"...ab", "a...b", "ab...", "..."}));
  EXPECT_EQ(spell(*ast.output), "...");
  // The ellipsis is one subscript located at its first dot.
  ASSERT_EQ(ast.inputs[1].subscripts.size(), 3u);
  EXPECT_TRUE(ast.inputs[1].subscripts[1].isEllipsis);
  expectLoc(ast.inputs[1].subscripts[1].loc, 1, 8);
  expectLoc(ast.inputs[1].subscripts[2].loc, 1, 11);
  expectLoc(ast.output->subscripts[0].loc, 1, 24);
}

TEST(EinsumParser, SpacesBetweenTokens) {
  const EinsumAST ast = parseEinsum("  a b , b ... c ->  a ... c  ");
  EXPECT_EQ(inputsOf(ast), (Terms{"ab", "b...c"}));
  EXPECT_EQ(spell(*ast.output), "a...c");
  expectLoc(ast.inputs[0].loc, 1, 3);
  expectLoc(ast.inputs[0].subscripts[1].loc, 1, 5);
  expectLoc(ast.inputs[1].loc, 1, 9);
  expectLoc(ast.inputs[1].subscripts[1].loc, 1, 11);
  expectLoc(ast.inputs[1].subscripts[2].loc, 1, 15);
  expectLoc(ast.output->loc, 1, 21);
  expectLoc(ast.output->subscripts[2].loc, 1, 27);
}

TEST(EinsumParser, TabsAndCarriageReturnsAreWhitespace) {
  const EinsumAST ast = parseEinsum("\tab,\r\nbc\t->\tac");
  EXPECT_EQ(inputsOf(ast), (Terms{"ab", "bc"}));
  EXPECT_EQ(spell(*ast.output), "ac");
  expectLoc(ast.inputs[0].subscripts[0].loc, 1, 2);
  expectLoc(ast.inputs[1].subscripts[0].loc, 2, 1);
  expectLoc(ast.output->subscripts[0].loc, 2, 7);
}

TEST(EinsumParser, MultiLineLocations) {
  const EinsumAST ast = parseEinsum("ab,\n  bc,\n\n   c...\n-> a...");
  EXPECT_EQ(inputsOf(ast), (Terms{"ab", "bc", "c..."}));
  EXPECT_EQ(spell(*ast.output), "a...");
  expectLoc(ast.inputs[1].loc, 2, 3);
  expectLoc(ast.inputs[1].subscripts[1].loc, 2, 4);
  expectLoc(ast.inputs[2].loc, 4, 4);
  expectLoc(ast.inputs[2].subscripts[1].loc, 4, 5);
  expectLoc(ast.output->subscripts[0].loc, 5, 4);
  expectLoc(ast.output->subscripts[1].loc, 5, 5);
}

TEST(EinsumParser, DoesNotCheckOutputAgainstInputs) {
  // Unknown or repeated output labels are the binder's business.
  const EinsumAST ast = parseEinsum("ab->zzb...");
  EXPECT_EQ(spell(*ast.output), "zzb...");
}

// --- errors -------------------------------------------------------------------------------

struct BadSpec {
  std::string spec;
  int line;
  int column;
  std::string messagePart;
};
void PrintTo(const BadSpec& c, std::ostream* os) { *os << printableSpec(c.spec); }


class EinsumParserError : public testing::TestWithParam<BadSpec> {};

TEST_P(EinsumParserError, ReportsLocationAndCause) {
  const BadSpec& bad = GetParam();
  try {
    parseEinsum(bad.spec);
    FAIL() << "expected a SpecError for \"" << bad.spec << "\"";
  } catch (const SpecError& error) {
    EXPECT_EQ(error.loc().line, bad.line) << error.what();
    EXPECT_EQ(error.loc().column, bad.column) << error.what();
    EXPECT_NE(error.message().find(bad.messagePart), std::string::npos) << error.what();
    EXPECT_EQ(error.source(), bad.spec);
    const std::string prefix = "line " + std::to_string(bad.line) + ", column " +
                               std::to_string(bad.column) + ": ";
    EXPECT_EQ(std::string(error.what()), prefix + error.message());
  }
}

INSTANTIATE_TEST_SUITE_P(
    BadSpecs, EinsumParserError,
    testing::Values(
        BadSpec{"ab,c1", 1, 5, "invalid character '1'"},
        BadSpec{"ab,c1", 1, 5, "expected a letter (a-z, A-Z), '...', ',' or '->'"},
        BadSpec{"a_b", 1, 2, "invalid character '_'"},
        BadSpec{"ab->c;", 1, 6, "invalid character ';': expected a letter (a-z, A-Z), '...' or "
                                "the end of the spec"},
        BadSpec{"a\x01", 1, 2, "invalid character byte 0x01"},
        BadSpec{"a\xc3\xa9", 1, 2, "invalid character byte 0xc3"},
        BadSpec{"ab\n,c$", 2, 3, "invalid character '$'"},
        BadSpec{"a.b", 1, 2, "'.' is not part of an ellipsis: expected '...'"},
        BadSpec{"a..", 1, 2, "'.' is not part of an ellipsis"},
        BadSpec{".", 1, 1, "'.' is not part of an ellipsis"},
        BadSpec{". ..", 1, 1, "'.' is not part of an ellipsis"},
        BadSpec{"a....", 1, 5, "'.' is not part of an ellipsis"},
        BadSpec{"a->.", 1, 4, "'.' is not part of an ellipsis"},
        BadSpec{"a...b...", 1, 6, "at most one '...' (the first is at line 1, column 2)"},
        BadSpec{"a......", 1, 5, "at most one '...'"},
        BadSpec{"...->......", 1, 9, "at most one '...'"},
        BadSpec{"ab-c", 1, 3, "expected '->': '-' must be followed directly by '>'"},
        BadSpec{"ab-", 1, 3, "expected '->'"},
        BadSpec{"ab - > ba", 1, 4, "expected '->'"},
        BadSpec{"-", 1, 1, "expected '->'"},
        BadSpec{"a>b", 1, 2, "unexpected '>': the output arrow is written '->'"},
        BadSpec{"a->b->c", 1, 5, "'->' may appear only once (the first is at line 1, column 2)"},
        BadSpec{"->->", 1, 3, "'->' may appear only once"},
        BadSpec{"a->b-c", 1, 5, "unexpected '-' in the output"},
        BadSpec{"a->b,c", 1, 5, "the output after '->' is a single term"},
        BadSpec{"a->,", 1, 4, "single term"},
        BadSpec{"ab,\n  bc\n->\n  a.c", 4, 4, "'.' is not part of an ellipsis"},
        BadSpec{"a,\nb->\n  b->a", 3, 4, "'->' may appear only once (the first is at line 2, "
                                         "column 2)"}));

// --- rendering -----------------------------------------------------------------------------

std::string renderedError(const std::string& spec) {
  try {
    parseEinsum(spec);
  } catch (const SpecError& error) {
    return error.render();
  }
  return "no error";
}

TEST(EinsumParserRender, CaretUnderTheOffendingCharacter) {
  EXPECT_EQ(renderedError("ab,c1->a"),
            "error: line 1, column 5: invalid character '1': expected a letter (a-z, A-Z), "
            "'...', ',' or '->'\n"
            "  ab,c1->a\n"
            "      ^\n");
}

TEST(EinsumParserRender, CaretOnTheRightLineOfAMultiLineSpec) {
  EXPECT_EQ(renderedError("ij,\njk-ik"),
            "error: line 2, column 3: expected '->': '-' must be followed directly by '>'\n"
            "  jk-ik\n"
            "    ^\n");
}

TEST(EinsumParserRender, TabsAreKeptInTheCaretLine) {
  EXPECT_EQ(renderedError("\ta\t.b"),
            "error: line 1, column 4: '.' is not part of an ellipsis: expected '...' (three dots "
            "in a row)\n"
            "  \ta\t.b\n"
            "  \t \t^\n");
}

TEST(EinsumParserRender, CarriageReturnIsNotPrinted) {
  EXPECT_EQ(renderedError("ab,\r\nc.\r\n"),
            "error: line 2, column 2: '.' is not part of an ellipsis: expected '...' (three dots "
            "in a row)\n"
            "  c.\n"
            "   ^\n");
}

TEST(EinsumParserRender, CaretAfterTheLastCharacter) {
  EXPECT_EQ(renderedError("ab-"),
            "error: line 1, column 3: expected '->': '-' must be followed directly by '>'\n"
            "  ab-\n"
            "    ^\n");
}

TEST(SpecErrorRender, ColumnPastTheEndOfTheLineStaysAtItsEnd) {
  const SpecError error("abc", SourceLoc{1, 1000000}, "expected more");
  EXPECT_EQ(error.render(), "error: line 1, column 1000000: expected more\n  abc\n     ^\n");
}

TEST(SpecErrorRender, LineAfterTheLastNewlineIsEmpty) {
  const SpecError error("ab,\n", SourceLoc{2, 1}, "expected an operand");
  EXPECT_EQ(error.render(), "error: line 2, column 1: expected an operand\n  \n  ^\n");
}

// --- robustness ------------------------------------------------------------------------------

TEST(EinsumParser, EveryByteIsEitherAcceptedOrASpecError) {
  for (int byte = 0; byte < 256; ++byte) {
    const std::string spec = std::string("a") + static_cast<char>(byte) + "b";
    const char c = static_cast<char>(byte);
    const bool accepted = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == ' ' ||
                          c == '\t' || c == '\n' || c == '\r' || c == ',';
    if (accepted) {
      EXPECT_NO_THROW(parseEinsum(spec)) << "byte " << byte;
    } else {
      EXPECT_THROW(parseEinsum(spec), SpecError) << "byte " << byte;
    }
  }
}

TEST(EinsumParser, LongSpecs) {
  std::string spec;
  for (int i = 0; i < 10000; ++i) spec += i % 2 ? "a...," : "bc,";
  spec += "->";
  const EinsumAST ast = parseEinsum(spec);
  EXPECT_EQ(ast.inputs.size(), 10001u);
  EXPECT_TRUE(ast.output->subscripts.empty());
}

}  // namespace
}  // namespace einjit
