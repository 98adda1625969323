#include <gtest/gtest.h>

#include "frontend/structures/Structures.h"
#include "tests/frontend/structures/SpecErrorMatchers.h"

namespace einjit {
namespace {

using testing::expectSpecError;

void expectParseError(const std::string& spec, int line, int column, const std::string& text) {
  expectSpecError([&] { parseStructureSpec(spec); }, line, column, text);
}

TEST(StructureParser, ReadsNameArgumentsAndPositions) {
  const StructureSpec spec = parseStructureSpec("btt(in=4, out=16, rank=2)");
  EXPECT_EQ(spec.name, "btt");
  EXPECT_EQ(spec.nameLoc.line, 1);
  EXPECT_EQ(spec.nameLoc.column, 1);
  ASSERT_EQ(spec.args.size(), 3u);
  EXPECT_EQ(spec.args[0].key, "in");
  EXPECT_EQ(spec.args[0].value, "4");
  EXPECT_EQ(spec.args[0].keyLoc.column, 5);
  EXPECT_EQ(spec.args[0].valueLoc.column, 8);
  EXPECT_EQ(spec.args[1].key, "out");
  EXPECT_EQ(spec.args[1].value, "16");
  EXPECT_EQ(spec.args[1].keyLoc.column, 11);
  EXPECT_EQ(spec.args[1].valueLoc.column, 15);
  EXPECT_EQ(spec.args[2].key, "rank");
  EXPECT_EQ(spec.args[2].keyLoc.column, 19);
  EXPECT_EQ(spec.args[2].valueLoc.column, 24);
}

TEST(StructureParser, MultiLineSpecsCountLinesAndColumns) {
  const StructureSpec spec = parseStructureSpec("  btt(\n  in = 1024,\n\tout=512\n)\n");
  EXPECT_EQ(spec.nameLoc.line, 1);
  EXPECT_EQ(spec.nameLoc.column, 3);
  ASSERT_EQ(spec.args.size(), 2u);
  EXPECT_EQ(spec.args[0].keyLoc.line, 2);
  EXPECT_EQ(spec.args[0].keyLoc.column, 3);
  EXPECT_EQ(spec.args[0].valueLoc.line, 2);
  EXPECT_EQ(spec.args[0].valueLoc.column, 8);
  EXPECT_EQ(spec.args[1].keyLoc.line, 3);
  EXPECT_EQ(spec.args[1].keyLoc.column, 2);  // a tab is one column
  EXPECT_EQ(spec.args[1].value, "512");
}

TEST(StructureParser, BareKeyMeansTrueAndValuesKeepTheirLiteral) {
  const StructureSpec spec =
      parseStructureSpec("theta(norm, alpha=0.5, rho=1e-1, blocks=-1, x=+2.5E+3, name=abc_1)");
  ASSERT_EQ(spec.args.size(), 6u);
  EXPECT_EQ(spec.args[0].key, "norm");
  EXPECT_EQ(spec.args[0].value, "true");
  EXPECT_EQ(spec.args[1].value, "0.5");
  EXPECT_EQ(spec.args[2].value, "1e-1");
  EXPECT_EQ(spec.args[3].value, "-1");
  EXPECT_EQ(spec.args[4].value, "+2.5E+3");
  EXPECT_EQ(spec.args[5].value, "abc_1");
}

TEST(StructureParser, EmptyArgumentListAndAliases) {
  EXPECT_TRUE(parseStructureSpec("dense()").args.empty());
  EXPECT_TRUE(parseStructureSpec("dense ( )").args.empty());
  EXPECT_EQ(parseStructureSpec("low_rank()").name, "lowrank");
  EXPECT_EQ(parseStructureSpec("kronecker()").name, "kron");
  EXPECT_EQ(parseStructureSpec("einsum()").name, "theta");
}

TEST(StructureParser, KnownNames) {
  const std::vector<std::string> expected = {"dense", "lowrank", "kron", "tt",
                                             "monarch", "btt", "theta"};
  EXPECT_EQ(structureNames(), expected);
  for (const std::string& name : expected) EXPECT_EQ(parseStructureSpec(name + "()").name, name);
}

TEST(StructureParser, UnknownNameSuggestsTheNearest) {
  expectParseError("bt(in=4)", 1, 1, "unknown structure 'bt'; did you mean 'btt'?");
  expectParseError("  monarh(in=4)", 1, 3, "did you mean 'monarch'?");
  expectParseError("lowrnk()", 1, 1, "did you mean 'lowrank'?");
  expectParseError("DENSE()", 1, 1, "did you mean 'dense'?");
  expectParseError("kronecer()", 1, 1, "did you mean 'kron'?");
  expectParseError("\n\n  denes()", 3, 3, "did you mean 'dense'?");
}

TEST(StructureParser, UnknownNameWithoutANearOneListsTheKnownNames) {
  try {
    parseStructureSpec("butterfly(in=4)");
    FAIL() << "accepted an unknown structure";
  } catch (const SpecError& error) {
    EXPECT_EQ(error.message().find("did you mean"), std::string::npos) << error.message();
    EXPECT_NE(error.message().find("dense, lowrank, kron, tt, monarch, btt, theta"),
              std::string::npos)
        << error.message();
  }
}

TEST(StructureParser, SyntaxErrorsPointAtTheOffendingCharacter) {
  expectParseError("", 1, 1, "expected a structure name");
  expectParseError("   ", 1, 4, "expected a structure name");
  expectParseError("4btt()", 1, 1, "expected a structure name");
  expectParseError("btt", 1, 4, "expected '(' after 'btt', found the end of the spec");
  expectParseError("btt in=4", 1, 5, "expected '(' after 'btt', found 'i'");
  expectParseError("btt(in=4", 1, 9, "expected ',' or ')' after the argument 'in', found the end");
  expectParseError("btt(in=4 out=4)", 1, 10, "expected ',' or ')' after the argument 'in'");
  expectParseError("btt(in=)", 1, 8, "expected a value");
  expectParseError("btt(in=,out=4)", 1, 8, "expected a value");
  expectParseError("btt(in=4,)", 1, 10, "expected an argument name");
  expectParseError("btt(,in=4)", 1, 5, "expected an argument name");
  expectParseError("btt(=4)", 1, 5, "expected an argument name");
  expectParseError("btt(in 4)", 1, 8, "expected '=', ',' or ')' after the argument name 'in'");
  expectParseError("btt(in=4) x", 1, 11, "expected the end of the spec after ')', found 'x'");
  expectParseError("btt(in=4))", 1, 10, "expected the end of the spec");
  expectParseError("btt(in=1.2.3)", 1, 8, "found '1.2.3'");
  expectParseError("btt(in=4e)", 1, 8, "found '4e'");
  expectParseError("btt(in=--4)", 1, 8, "found '--4'");
  expectParseError("btt(in=4@)", 1, 9, "found '@'");
  expectParseError("btt(in=4\x01)", 1, 9, "found byte 0x01");
}

TEST(StructureParser, SyntaxErrorsInMultiLineSpecs) {
  expectParseError("btt(\n  in=4,\n  out=4 rank=2)", 3, 9, "expected ',' or ')'");
  expectParseError("btt(\n  in=4,\n  out=\n)", 4, 1, "expected a value");
  expectParseError("btt(in=4,\n  out=4", 2, 8, "found the end of the spec");
}

TEST(StructureParser, RenderShowsTheLineAndACaret) {
  try {
    parseStructureSpec("btt(in=4,\n  out=4 rank=2)");
    FAIL();
  } catch (const SpecError& error) {
    EXPECT_EQ(error.render(),
              "error: line 2, column 9: expected ',' or ')' after the argument 'out', found 'r'\n"
              "    out=4 rank=2)\n"
              "          ^\n");
  }
}

}  // namespace
}  // namespace einjit
