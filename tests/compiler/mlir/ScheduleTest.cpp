// Decisions of the schedule (compiler/mlir/Schedule.cpp) read off the tiled loop nests: the
// generated module is scheduled and each register tile's loops are looked at directly, since
// the loop order no longer shows once everything is lowered to branches.
#include <gtest/gtest.h>

#include "compiler/mlir/CodegenStages.h"
#include "frontend/structures/Structures.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Matchers.h"

namespace einjit::cpu::detail {
namespace {

// Generates the module of a kernel program (laid out as the compiler would) in a context of
// its own, which the module needs alive.
class Schedule : public ::testing::Test {
 protected:
  Schedule() : context_(registry(), mlir::MLIRContext::Threading::DISABLED) { context_.loadAllAvailableDialects(); }

  mlir::OwningOpRef<mlir::ModuleOp> generate(const KernelProgram& program) {
    return generateModule(context_, program, chooseLayout(program, hostTarget()));
  }

  // The generated module as text, laid out as `layout` says.
  std::string moduleText(const KernelProgram& program, const Layout& layout) {
    std::string text;
    llvm::raw_string_ostream stream(text);
    generateModule(context_, program, layout)->print(stream);
    return text;
  }

  // For every register tile (a vector.contract) inside the tallest row tile: the step of the
  // outermost loop of its own nest, the loop just inside the row-tile loop.
  std::vector<int64_t> outerTileLoopSteps(const KernelProgram& program) {
    const Layout layout = chooseLayout(program, hostTarget());
    auto module = generate(program);
    scheduleModule(*module, hostTarget());
    std::vector<int64_t> steps;
    module->walk([&](mlir::vector::ContractionOp contract) {
      llvm::SmallVector<mlir::scf::ForOp> nest;  // innermost first
      for (auto loop = contract->getParentOfType<mlir::scf::ForOp>(); loop; loop = loop->getParentOfType<mlir::scf::ForOp>())
        nest.push_back(loop);
      llvm::APInt rowStep, step;
      if (nest.size() < 2 || !mlir::matchPattern(nest.back().getStep(), mlir::m_ConstantInt(&rowStep)) ||
          rowStep.getSExtValue() != layout.rowTiles.front())
        return;
      if (mlir::matchPattern(nest[nest.size() - 2].getStep(), mlir::m_ConstantInt(&step)))
        steps.push_back(step.getSExtValue());
    });
    return steps;
  }

  // The shape of every register tile's accumulator (each vector.contract's result).
  std::vector<std::vector<int64_t>> registerTileShapes(const KernelProgram& program) {
    auto module = generate(program);
    scheduleModule(*module, hostTarget());
    std::vector<std::vector<int64_t>> shapes;
    module->walk([&](mlir::vector::ContractionOp contract) {
      auto type = llvm::cast<mlir::VectorType>(contract.getResultType());
      shapes.emplace_back(type.getShape().begin(), type.getShape().end());
    });
    return shapes;
  }

  // The host with other vector registers and L2: the layout's row counts depend on both, and
  // the machine running the tests may have either AVX-512 or only AVX2.
  static HostTarget withHost(int vectorBits, int64_t l2Bytes) {
    HostTarget host = hostTarget();
    host.vectorBits = vectorBits;
    host.l2Bytes = l2Bytes;
    return host;
  }

  static int64_t registerRows(const KernelProgram& program) {
    return chooseLayout(program, hostTarget()).registerRows;
  }

 private:
  static mlir::DialectRegistry registry() {
    mlir::DialectRegistry registry;
    registerCodegenDialects(registry);
    return registry;
  }

  mlir::MLIRContext context_;
};

// BTT at d = 1024, rank 1: each core (128 KB) is small enough to be re-read for every block of
// register rows, so those blocks are the outermost loop of both contractions (the second core
// would otherwise re-read its strided input line by line for every batch, ~40% of the forward).
TEST_F(Schedule, RegisterRowBlocksOutermostWhenTheParameterIsSmall) {
  const KernelProgram program = forwardKernel(buildLayer("btt(in=1024, out=1024, rank=1)"), DType::F32);
  const auto steps = outerTileLoopSteps(program);
  ASSERT_EQ(steps.size(), 2u);
  for (int64_t step : steps) EXPECT_EQ(step, registerRows(program));
}

// At rank 4 the second core is 512 KB: it stays the inner operand, each of its tiles swept
// down the rows (the outermost loop walks its batches one by one).
TEST_F(Schedule, LargeParameterTilesAreSweptDownTheRows) {
  const auto steps = outerTileLoopSteps(forwardKernel(buildLayer("btt(in=1024, out=1024, rank=4)"), DType::F32));
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[1], 1);
}

// At d = 4096 the second core (1 MB) is too large to re-read per block of rows; its strided
// row operand t[z, a, c] is instead transposed per row tile so that the reduction a is
// innermost (contiguous broadcasts). At d = 1024 the row blocks go outside and nothing is copied.
TEST_F(Schedule, StridedRowOperandIsTransposedWhenTheParameterIsLarge) {
  for (int64_t d : {1024, 4096}) {
    const std::string spec = "btt(in=" + std::to_string(d) + ", out=" + std::to_string(d) + ", rank=1)";
    auto module = generate(forwardKernel(buildLayer(spec), DType::F32));
    int transposedInputs = 0, blocksOutside = 0;
    module->walk([&](mlir::linalg::GenericOp op) {
      if (!op->hasAttr(kContractionAttr)) return;
      blocksOutside += op->hasAttr(kRowBlocksOutsideAttr) ? 1 : 0;
      for (mlir::Value input : op.getDpsInputs()) {
        auto transpose = input.getDefiningOp<mlir::linalg::TransposeOp>();
        // Parameters packed into panels are transposed too, but once, before the row loops.
        if (transpose && transpose->getParentOfType<mlir::scf::ForOp>()) ++transposedInputs;
      }
    });
    // Three row tiles (tall, register-high, one row), each with both contractions.
    if (d == 1024) {
      EXPECT_EQ(transposedInputs, 0) << spec;
      EXPECT_EQ(blocksOutside, 6) << spec;
    } else {
      EXPECT_EQ(transposedInputs, 3) << spec;
      EXPECT_EQ(blocksOutside, 0) << spec;
    }
  }
}

// Dense at d = 4096 streams its 64 MB weight once per row tile, so its tiles take the most rows;
// the op that writes the output counts as that output (streamed, so free), not as an
// intermediate that must stay in L2 (which held it to 64 rows).
TEST_F(Schedule, StreamedParameterGivesTheTallestRowTiles) {
  for (const KernelProgram& program : {forwardKernel(buildLayer("dense(in=4096, out=4096)"), DType::F32),
                                       backwardKernel(buildLayer("dense(in=4096, out=4096)"), DType::F32)}) {
    const Layout layout = chooseLayout(program, hostTarget());
    ASSERT_FALSE(layout.rowTiles.empty());
    EXPECT_EQ(layout.rowTiles.front(), 256) << program.name;
  }
}

// The intermediates of the tallest row tile fill a quarter of what the parameters and the
// sums over the rows leave of L2, and at least an eighth of L2: BTT rank 1 at d = 1024
// backward keeps t and dt (4 KB per row each) and a quarter of x, dy and dx (3 KB; dx is
// written through a reshape): 11 KB per row, beside 256 KB of cores and 256 KB of gradient
// sums. On a 2 MB L2 that leaves 384 KB (34 rows: 32 in whole register tiles of 8 or 4 rows),
// on a 1 MB one 128 KB (11 rows: 8), on a 512 KB one the floor of 64 KB (5 rows: one register
// tile, 8 rows with AVX-512 and 4 with AVX2).
TEST_F(Schedule, RowTilesFillAQuarterOfWhatParametersAndSumsLeaveOfL2) {
  const KernelProgram program = backwardKernel(buildLayer("btt(in=1024, out=1024, rank=1)"), DType::F32);
  struct Case {
    int vectorBits;
    int64_t l2, rows;
  };
  for (const Case& c : {Case{512, 2 << 20, 32}, Case{512, 1 << 20, 8}, Case{512, 512 << 10, 8},
                        Case{256, 2 << 20, 32}, Case{256, 1 << 20, 8}, Case{256, 512 << 10, 4}}) {
    const Layout layout = chooseLayout(program, withHost(c.vectorBits, c.l2));
    ASSERT_FALSE(layout.rowTiles.empty());
    EXPECT_EQ(layout.rowTiles.front(), c.rows) << c.vectorBits << "-bit vectors, L2 " << c.l2;
  }
}

// Parameters larger than L2 are streamed, and their row tiles take 24 rows, or 64 when 24 rows'
// intermediates overflow L2 anyway, or fewer where the whole tile (inputs and outputs too)
// would not stay in L2: BTT rank 4 at d = 1024 has 1 MB of cores and 32 KB of intermediates
// per row (and a quarter of its inputs' and outputs'), so it is not streamed with a 1 MB L2
// (7 rows fit: one register tile, 8 rows with AVX-512, 4 with AVX2); with a 900 KB one it is,
// and 24 rows' intermediates would fit (768 KB), but with x, dy and dx a row takes 44 KB, so 20
// rows keep the tile in L2 (16 in whole AVX-512 register tiles); with a 512 KB one it spills.
TEST_F(Schedule, ParametersLargerThanL2AreStreamed) {
  const KernelProgram program = backwardKernel(buildLayer("btt(in=1024, out=1024, rank=4)"), DType::F32);
  struct Case {
    int vectorBits;
    int64_t l2, rows;
  };
  for (const Case& c : {Case{512, 1 << 20, 8}, Case{512, 900 << 10, 16}, Case{512, 512 << 10, 64},
                        Case{256, 1 << 20, 4}, Case{256, 900 << 10, 20}, Case{256, 512 << 10, 64}})
    EXPECT_EQ(chooseLayout(program, withHost(c.vectorBits, c.l2)).rowTiles.front(), c.rows)
        << c.vectorBits << "-bit vectors, L2 " << c.l2;
  // Dense at d = 4096 streams its 64 MB of weights too but has no intermediates: nothing limits
  // its tiles, even on a 512 KB L2.
  const KernelProgram dense = backwardKernel(buildLayer("dense(in=4096, out=4096)"), DType::F32);
  EXPECT_EQ(chooseLayout(dense, withHost(256, 512 << 10)).rowTiles.front(), 256);
}

// A training forward's saved intermediate is an output, but the next contraction reads its tile,
// so it counts as an intermediate too: the row tiles are no taller than the plain forward's
// (counted as an output only, BTT rank 4 at d = 4096 took 256-row tiles, 16 MB of
// intermediate each, and ran 80% slower). With a 2 MB L2 its parameters are streamed and 24
// rows of the saved value fit (1.5 MB), but with x and y a row takes 96 KB: 21 rows keep the
// tile in L2, 16 in whole AVX-512 register tiles (counted twice, as an output too, the saved
// value would have left 12).
TEST_F(Schedule, SavedIntermediatesKeepRowTilesInCache) {
  for (const char* spec : {"btt(in=4096, out=4096, rank=4)", "btt(in=1024, out=1024, rank=1)",
                           "monarch(in=1024, out=1024, blocks=32)"}) {
    const ir::LayerProgram layer = buildLayer(spec);
    const TrainingKernels training = trainingKernels(layer, DType::F32);
    ASSERT_EQ(training.savedCount(), 1u) << spec;
    const std::vector<int64_t> saving = chooseLayout(training.forward, hostTarget()).rowTiles;
    const std::vector<int64_t> plain = chooseLayout(forwardKernel(layer, DType::F32), hostTarget()).rowTiles;
    ASSERT_FALSE(saving.empty() || plain.empty());
    EXPECT_LE(saving.front(), plain.front()) << spec;
    EXPECT_GE(saving.front(), plain.front() / 2) << spec;
  }
  const KernelProgram streamed = trainingKernels(buildLayer("btt(in=4096, out=4096, rank=4)"), DType::F32).forward;
  EXPECT_EQ(chooseLayout(streamed, withHost(512, 2 << 20)).rowTiles.front(), 16);
}

// A row-sum GEMM operand that few register tiles read is read in place, unless the row tiles
// spill out of L2: then its rows, a power-of-two stride apart, would evict one another from
// their L1 set on every reduction step while the next ones come from L3. BTT rank 4's backward
// at d = 1024 spills on a 512 KB L2 (64-row tiles), and its dW1 packs t (256 wide) too.
TEST_F(Schedule, SpillingRowSumTilesPackEveryOperand) {
  const KernelProgram backward = backwardKernel(buildLayer("btt(in=1024, out=1024, rank=4)"), DType::F32);
  Layout layout = chooseLayout(backward, withHost(256, 512 << 10));
  EXPECT_TRUE(layout.rowTilesSpill);
  EXPECT_FALSE(chooseLayout(backward, withHost(256, 1 << 20)).rowTilesSpill);
  // Laid out for the readers already, so that the flag changes only the packing.
  const KernelProgram ordered = orderIntermediatesForReaders(backward);
  auto transposes = [&](bool spill) {
    layout.rowTilesSpill = spill;
    const std::string text = moduleText(ordered, layout);
    int count = 0;
    const std::string transpose = "linalg.transpose";
    for (std::size_t at = text.find(transpose); at != std::string::npos; at = text.find(transpose, at + 1)) ++count;
    return count;
  };
  EXPECT_GT(transposes(true), transposes(false));
}

// Only where a row tile's intermediates spill out of L2 are they laid out for their readers:
// BTT rank 4 at d = 4096 (64 KB of t per row) on a 512 KB or 1 MB L2, not on a 2 MB one; BTT
// rank 1 and Monarch at d = 1024 (4 KB per row) never. Laid out so, the plain forward makes t
// in the order the training forward saves it.
TEST_F(Schedule, SpillingIntermediatesAreLaidOutForTheirReaders) {
  const ir::LayerProgram btt4 = buildLayer("btt(in=4096, out=4096, rank=4)");
  const KernelProgram forward = forwardKernel(btt4, DType::F32);
  EXPECT_TRUE(chooseLayout(forward, withHost(256, 512 << 10)).rowTilesSpill);
  EXPECT_TRUE(chooseLayout(forward, withHost(512, 1 << 20)).rowTilesSpill);
  EXPECT_FALSE(chooseLayout(forward, withHost(512, 2 << 20)).rowTilesSpill);
  for (const char* spec : {"btt(in=1024, out=1024, rank=1)", "monarch(in=1024, out=1024, blocks=32)"})
    EXPECT_FALSE(chooseLayout(forwardKernel(buildLayer(spec), DType::F32), withHost(256, 512 << 10))
                     .rowTilesSpill)
        << spec;

  const KernelProgram small = forwardKernel(buildLayer("btt(in=64, out=64, rank=4)"), DType::F32);
  Layout layout = chooseLayout(small, hostTarget());
  layout.rowTilesSpill = true;
  const std::string ordered = moduleText(small, layout);
  layout.rowTilesSpill = false;
  EXPECT_NE(ordered, moduleText(small, layout));
  EXPECT_EQ(ordered, moduleText(orderIntermediatesForReaders(small), layout));
}

// A parameter gradient summed over the rows carries its sum in whole register tiles with the
// N tiles (panels of the wider operand) outside the M tiles: dense d = 1024's dW[i, o] is
// carried as (o / nr, i / mr, mr, nr).
TEST_F(Schedule, RowSumCarriesPanelsOutsideRegisterRows) {
  const KernelProgram program = backwardKernel(buildLayer("dense(in=1024, out=1024)"), DType::F32);
  const Layout layout = chooseLayout(program, hostTarget());
  auto module = generate(program);
  std::vector<llvm::SmallVector<int64_t>> carried;
  module->walk([&](mlir::linalg::GenericOp op) {
    if (op->hasAttr(kRegisterRowsDimAttr))
      carried.emplace_back(llvm::cast<mlir::ShapedType>(op.getDpsInits()[0].getType()).getShape());
  });
  ASSERT_FALSE(carried.empty());
  const int64_t mr = layout.registerRows, nr = layout.packWidth;
  for (const auto& shape : carried)
    EXPECT_EQ(shape, (llvm::SmallVector<int64_t>{1024 / nr, 1024 / mr, mr, nr}));
}

// BTT's input gradient 'zcd,card->zacr' has the rank innermost; at d = 1024 it is computed
// with the parameter's a (32, packed into panels) innermost instead. At d = 1088 a is 34
// wide, which no panel divides: the parameter is then permuted so that a is contiguous (one
// panel of 34), rather than leaving the register tiles one float wide (8 x 1 with AVX-512: the
// backward took 1.6x as long).
TEST_F(Schedule, InputGradientOfOddFactorsIsNotOneFloatWide) {
  const KernelProgram program = backwardKernel(buildLayer("btt(in=1088, out=1088, rank=1)"), DType::F32);
  const int64_t rows = registerRows(program);  // 8 with AVX-512, 4 with AVX2
  const auto shapes = registerTileShapes(program);
  ASSERT_FALSE(shapes.empty());
  for (const auto& shape : shapes) EXPECT_NE(shape, (std::vector<int64_t>{rows, 1}));
}

}  // namespace
}  // namespace einjit::cpu::detail
