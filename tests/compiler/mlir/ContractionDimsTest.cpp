#include "compiler/mlir/ContractionDims.h"

#include <gtest/gtest.h>

#include "einjit/error.h"
#include "frontend/structures/LayerIR.h"

namespace einjit::cpu {
namespace {

constexpr int64_t N = ir::kRows;

std::vector<std::string> loopLabels(const ContractionDims& dims) {
  std::vector<std::string> labels;
  for (const LoopDim& loop : dims.loops) labels.push_back(loop.labels);
  return labels;
}

TEST(ContractionDims, MatmulKeepsEveryLabel) {
  const ContractionDims dims = analyzeContraction("zi,io->zo", {{N, 64}, {64, 48}}, {N, 48});
  EXPECT_EQ(loopLabels(dims), (std::vector<std::string>{"z", "o", "i"}));
  EXPECT_EQ(dims.rowLoop, 0);
  EXPECT_TRUE(dims.loops[0].dynamic);
  EXPECT_FALSE(dims.loops[1].reduction);
  EXPECT_TRUE(dims.loops[2].reduction);
  EXPECT_EQ(dims.inputs[0].loopDim, (std::vector<int>{0, 2}));
  EXPECT_EQ(dims.inputs[1].loopDim, (std::vector<int>{2, 1}));
  EXPECT_EQ(dims.output.loopDim, (std::vector<int>{0, 1}));
  EXPECT_FALSE(dims.inputs[1].mergesDims());
}

TEST(ContractionDims, BttFirstCoreMergesRankIntoOutputFactor) {
  const ContractionDims dims =
      analyzeContraction("zab,abcr->zacr", {{N, 32, 32}, {32, 32, 32, 4}}, {N, 32, 32, 4});
  EXPECT_EQ(loopLabels(dims), (std::vector<std::string>{"z", "a", "cr", "b"}));
  EXPECT_EQ(dims.loops[2].size, 128);
  EXPECT_EQ(dims.inputs[1].groups, (std::vector<std::vector<int>>{{0}, {1}, {2, 3}}));
  EXPECT_EQ(dims.inputs[1].collapsedShape, (Shape{32, 32, 128}));
  EXPECT_EQ(dims.output.collapsedShape, (Shape{N, 32, 128}));
  EXPECT_TRUE(dims.output.mergesDims());
}

TEST(ContractionDims, BttSecondCoreMergesNothing) {
  const ContractionDims dims =
      analyzeContraction("zacr,card->zcd", {{N, 32, 32, 4}, {32, 32, 4, 32}}, {N, 32, 32});
  EXPECT_EQ(loopLabels(dims), (std::vector<std::string>{"z", "c", "d", "a", "r"}));
  EXPECT_EQ(dims.inputs[0].loopDim, (std::vector<int>{0, 3, 1, 4}));
}

TEST(ContractionDims, ReductionGroupsMerge) {
  const ContractionDims dims = analyzeContraction("abc,bcd->ad", {{2, 3, 4}, {3, 4, 5}}, {2, 5});
  EXPECT_EQ(loopLabels(dims), (std::vector<std::string>{"a", "d", "bc"}));
  EXPECT_EQ(dims.loops[2].size, 12);
  EXPECT_TRUE(dims.loops[2].reduction);
}

TEST(ContractionDims, DiagonalRepeatsTheLoopDim) {
  const ContractionDims dims = analyzeContraction("zii->z", {{N, 5, 5}}, {N});
  EXPECT_EQ(loopLabels(dims), (std::vector<std::string>{"z", "i"}));
  EXPECT_EQ(dims.inputs[0].loopDim, (std::vector<int>{0, 1, 1}));
}

TEST(ContractionDims, SizeOneDimsBroadcast) {
  const ContractionDims dims = analyzeContraction("zab,ab->zab", {{N, 4, 8}, {1, 8}}, {N, 4, 8});
  EXPECT_EQ(dims.inputs[1].loopDim, (std::vector<int>{-1, 2}));
  EXPECT_EQ(dims.inputs[1].collapsedShape, (Shape{1, 8}));
  // A broadcast dim never merges with its neighbour.
  EXPECT_FALSE(dims.inputs[1].mergesDims());
  // The row label may broadcast too.
  const ContractionDims rows = analyzeContraction("za,za->za", {{N, 3}, {1, 3}}, {N, 3});
  EXPECT_EQ(rows.inputs[1].loopDim, (std::vector<int>{-1, 1}));
}

TEST(ContractionDims, RejectsMismatches) {
  EXPECT_THROW(analyzeContraction("zi,io->zo", {{N, 64}}, {N, 48}), UserError);
  EXPECT_THROW(analyzeContraction("zi,io->zo", {{N, 64}, {32, 48}}, {N, 48}), UserError);
  EXPECT_THROW(analyzeContraction("zi,io", {{N, 64}, {64, 48}}, {N, 48}), UserError);
  EXPECT_THROW(analyzeContraction("zi,io->zx", {{N, 64}, {64, 48}}, {N, 48}), UserError);
  EXPECT_THROW(analyzeContraction("zi,io->zoo", {{N, 64}, {64, 48}}, {N, 48, 48}), UserError);
  EXPECT_THROW(analyzeContraction("zi,io->zo", {{N, 64}, {64, 48}}, {N, 47}), UserError);
  EXPECT_THROW(analyzeContraction("...i,io->o", {{N, 64}, {64, 48}}, {48}), UserError);
  EXPECT_THROW(analyzeContraction("zi,zo->io", {{N, 4}, {3, 5}}, {4, 5}), UserError);
  EXPECT_THROW(analyzeContraction("zi,i->zi", {{N, 4}, {4}}, {7, 4}), UserError);
}

}  // namespace
}  // namespace einjit::cpu
