// The schedule, on tensors (before bufferisation). MLIRGen already split the rows into tiles
// of static heights (and packed long-strided parameters into panels), so every contraction
// inside a row loop has static shapes. Then, for every two-operand contraction:
//
// 1. A reduction longer than 2 * kReductionBlock gets an outer loop over blocks of it (cache
//    blocking: both operands' slices for a block stay in cache while the register tiles walk
//    them).
// 2. It is tiled for registers: an mr x nr block of the output (mr rows of the M dim, nr
//    elements of the innermost output dim V: a few vector registers), 1 along every other dim,
//    reductions innermost with tile 1. Loop order: other parallel dims, V, M, reductions, so a
//    block of the right operand is reused across the M blocks. The tile's other unit dims are
//    dropped: it becomes an (mr x 1) * (1 x nr) product.
// 3. The tiles are vectorised to vector.contract, and the accumulator's read/write pair is
//    hoisted out of the reduction loops so it lives in registers (LowerToLLVM turns the
//    contract into one broadcast + FMA per row of the tile).
// Contractions with a dynamic extent (whole-tensor programs), diagonals, broadcasts and unary
// contractions stay plain loops.
#include <algorithm>

#include "compiler/mlir/CodegenStages.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/Dialect/Tensor/Transforms/Transforms.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Dialect/Vector/Transforms/LoweringPatterns.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/LoopInvariantCodeMotionUtils.h"

namespace einjit::cpu::detail {
namespace {

// Marks a register tile for vectorisation.
constexpr const char* kVectorizeAttr = "einjit.vectorize";
// Vector registers the accumulators of one register tile may take: half the register file,
// leaving room for the right-hand vectors and the broadcast.
int64_t accumulatorRegisters(const HostTarget& host) { return host.vectorBits >= 512 ? 16 : 8; }
// Length of the blocks a long reduction is cut into (cache blocking).
constexpr int64_t kReductionBlock = 256;
// Rows of a register tile (with two vectors per row).
int64_t tileRows(const HostTarget& host) { return accumulatorRegisters(host) / 2; }

// Collects the linalg.generic ops a rewrite creates.
struct NewGenericOps : mlir::RewriterBase::Listener {
  llvm::SmallVector<mlir::linalg::GenericOp> ops;
  void notifyOperationInserted(mlir::Operation* op, mlir::OpBuilder::InsertPoint) override {
    if (auto generic = llvm::dyn_cast<mlir::linalg::GenericOp>(op)) ops.push_back(generic);
  }
};

void canonicalize(mlir::ModuleOp module) {
  mlir::MLIRContext* context = module.getContext();
  mlir::RewritePatternSet patterns(context);
  for (mlir::Dialect* dialect : context->getLoadedDialects()) dialect->getCanonicalizationPatterns(patterns);
  for (mlir::RegisteredOperationName op : context->getRegisteredOperations())
    op.getCanonicalizationPatterns(patterns, context);
  mlir::linalg::populateLinalgTilingCanonicalizationPatterns(patterns);
  (void)mlir::applyPatternsAndFoldGreedily(module, std::move(patterns));
}

// The V tile: the most whole vector registers, up to `vectors`, that divide the dim; else half
// or a quarter of one; else the whole dim if it is short, else a plain divisor.
int64_t vectorTile(int64_t size, int64_t lanes, int64_t vectors) {
  for (int64_t count = vectors; count >= 1; --count)
    if (size % (count * lanes) == 0) return count * lanes;
  for (int64_t part : {lanes / 2, lanes / 4})
    if (part > 0 && size % part == 0) return part;
  if (size <= vectors * lanes) return size;
  return largestDivisor(size, vectors * lanes);
}

// Tiles `op` (tile size 0: not tiled) with loops in `order` (empty: dim order); the tile.
mlir::linalg::GenericOp tile(mlir::IRRewriter& rewriter, mlir::linalg::GenericOp op,
                             llvm::ArrayRef<int64_t> tileSizes, llvm::ArrayRef<int64_t> order) {
  mlir::scf::SCFTilingOptions options;
  options.setTileSizes(mlir::getAsIndexOpFoldResult(op.getContext(), tileSizes));
  options.setInterchange(order);
  options.setLoopType(mlir::scf::SCFTilingOptions::LoopType::ForOp);
  rewriter.setInsertionPoint(op);
  auto tiled = mlir::scf::tileUsingSCF(rewriter, llvm::cast<mlir::TilingInterface>(op.getOperation()), options);
  if (mlir::failed(tiled)) return {};
  rewriter.replaceOp(op, tiled->replacements);
  return llvm::cast<mlir::linalg::GenericOp>(tiled->tiledOps.back());
}

void tileContraction(mlir::IRRewriter& rewriter, mlir::linalg::GenericOp op, const HostTarget& host) {
  if (op.getNumDpsInputs() != 2) return;  // a unary contraction (trace, sum) stays plain loops
  const auto maps = op.getIndexingMapsArray();
  if (!llvm::all_of(maps, [](mlir::AffineMap map) { return map.isProjectedPermutation(); })) return;
  const llvm::SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  if (llvm::any_of(ranges, [](int64_t r) { return r == 0 || mlir::ShapedType::isDynamic(r); })) return;
  const auto iterators = op.getIteratorTypesArray();
  const int numLoops = static_cast<int>(ranges.size());
  auto parallel = [&](int d) { return iterators[d] == mlir::utils::IteratorType::parallel; };

  const mlir::AffineMap outputMap = maps.back();
  if (outputMap.getNumResults() == 0) return;
  const int vDim = static_cast<int>(outputMap.getDimPosition(outputMap.getNumResults() - 1));
  int mDim = -1;  // the dim MLIRGen named for the tile's rows, else the row dim
  for (const char* attr : {kRegisterRowsDimAttr, kRowDimAttr}) {
    auto named = op->getAttrOfType<mlir::IntegerAttr>(attr);
    const int d = named ? static_cast<int>(named.getInt()) : -1;
    if (mDim < 0 && d >= 0 && d != vDim && parallel(d)) mDim = d;
  }
  if (mDim < 0) {  // else the longest other parallel dim
    for (int d = 0; d < numLoops; ++d)
      if (d != vDim && parallel(d) && ranges[d] > 1 && (mDim < 0 || ranges[d] > ranges[mDim])) mDim = d;
  }

  const int elementBits = static_cast<int>(
      mlir::getElementTypeOrSelf(op.getDpsInits()[0].getType()).getIntOrFloatBitWidth());
  const int64_t lanes = std::max(1, host.vectorBits / elementBits);
  llvm::SmallVector<int64_t> tileSizes(numLoops, 1);
  const int64_t mr = mDim >= 0 ? largestDivisor(ranges[mDim], tileRows(host)) : 1;
  if (mDim >= 0) tileSizes[mDim] = mr;
  tileSizes[vDim] = vectorTile(ranges[vDim], lanes, std::max<int64_t>(2, accumulatorRegisters(host) / mr));

  llvm::SmallVector<int64_t> order;
  for (int d = 0; d < numLoops; ++d)
    if (parallel(d) && d != vDim && d != mDim) order.push_back(d);
  order.push_back(vDim);
  if (mDim >= 0) order.push_back(mDim);
  for (int d = 0; d < numLoops; ++d)
    if (!parallel(d)) order.push_back(d);

  int kDim = -1;  // the longest reduction, if long enough to block
  for (int d = 0; d < numLoops; ++d)
    if (!parallel(d) && ranges[d] > 2 * kReductionBlock && (kDim < 0 || ranges[d] > ranges[kDim])) kDim = d;
  const int64_t block = kDim >= 0 ? largestDivisor(ranges[kDim], kReductionBlock) : 0;
  if (block >= kReductionBlock / 4) {
    llvm::SmallVector<int64_t> blockSizes(numLoops, 0);
    blockSizes[kDim] = block;
    op = tile(rewriter, op, blockSizes, {});
    if (!op) return;
  }
  mlir::linalg::GenericOp registerTile = tile(rewriter, op, tileSizes, order);
  if (!registerTile) return;

  // Drop the unit dims of the tile, except M, V and one reduction: the tile becomes a plain
  // (mr x k=1) * (k=1 x nr) product, which vectorises to one matmul-shaped vector.contract.
  int keptReduction = -1;
  for (int d = 0; d < numLoops; ++d)
    if (!parallel(d)) keptReduction = d;
  mlir::linalg::ControlDropUnitDims control;
  control.rankReductionStrategy = mlir::linalg::ControlDropUnitDims::RankReductionStrategy::ExtractInsertSlice;
  control.controlFn = [&](mlir::Operation*) {
    llvm::SmallVector<unsigned> dims;
    for (int d = 0; d < numLoops; ++d)
      if (tileSizes[d] == 1 && d != mDim && d != vDim && d != keptReduction) dims.push_back(static_cast<unsigned>(d));
    return dims;
  };
  NewGenericOps created;
  rewriter.setListener(&created);
  rewriter.setInsertionPoint(registerTile);
  if (mlir::succeeded(mlir::linalg::dropUnitDims(rewriter, registerTile, control)) && !created.ops.empty())
    registerTile = created.ops.back();
  rewriter.setListener(nullptr);
  registerTile->setAttr(kVectorizeAttr, rewriter.getUnitAttr());
}

void vectorizeTiles(mlir::IRRewriter& rewriter, mlir::ModuleOp module) {
  llvm::SmallVector<mlir::linalg::GenericOp> tiles;
  module.walk([&](mlir::linalg::GenericOp op) {
    if (op->hasAttr(kVectorizeAttr)) tiles.push_back(op);
  });
  for (mlir::linalg::GenericOp op : tiles) {
    op->removeAttr(kVectorizeAttr);
    rewriter.setInsertionPoint(op);
    // On failure the tile stays a linalg op and becomes plain loops.
    (void)mlir::linalg::vectorize(rewriter, op);
  }

  // First the broadcasts of the operands fold into the contraction's maps (the transfer
  // permutation patterns expose them); then the tiles' slices fold into the transfers, so the
  // accumulator's read and write address the loop-carried tensor alike.
  mlir::RewritePatternSet contractions(module.getContext());
  mlir::vector::populateVectorReductionToContractPatterns(contractions);
  mlir::vector::populateVectorTransferPermutationMapLoweringPatterns(contractions);
  (void)mlir::applyPatternsAndFoldGreedily(module, std::move(contractions));
  mlir::RewritePatternSet slices(module.getContext());
  mlir::tensor::populateFoldTensorSubsetIntoVectorTransferPatterns(slices);
  (void)mlir::applyPatternsAndFoldGreedily(module, std::move(slices));
  canonicalize(module);

  // Keep accumulators in registers: the read/write pair of an accumulator inside a reduction
  // loop becomes a loop-carried vector. Inner loops first, so pairs climb the whole nest.
  llvm::SmallVector<mlir::LoopLikeOpInterface> loops;
  module.walk([&](mlir::scf::ForOp loop) { loops.push_back(loop); });
  for (mlir::LoopLikeOpInterface loop : loops) (void)mlir::hoistLoopInvariantSubsets(rewriter, loop);
  canonicalize(module);
}

}  // namespace

Layout chooseLayout(const KernelProgram& program, const HostTarget& host) {
  // The intermediates of a row tile should stay in (half of) L2. Inputs and outputs are only
  // walked block by block, so they count a quarter; reshapes and truncations are views.
  constexpr int64_t kTileBudgetBytes = 1 << 20;
  constexpr int64_t kMaxRowTile = 256;
  constexpr int64_t kStreamedParameterTileRows = 24;
  auto rowBytes = [&](ir::ValueId id) {
    const Shape& shape = program.values[id].shape;
    if (shape.empty() || shape[0] != ir::kRows) return int64_t{0};
    int64_t elements = 1;  // saturates at the budget
    for (std::size_t d = 1; d < shape.size(); ++d)
      elements = std::min(elements * std::min(shape[d], kTileBudgetBytes), kTileBudgetBytes);
    return elements * static_cast<int64_t>(dtypeSize(program.dtype));
  };
  int64_t bytesPerRow = 0;
  int64_t parameterBytes = 0;
  for (ir::ValueId id : program.inputs) {
    bytesPerRow += rowBytes(id) / 4;
    if (!program.isRowValue(id))
      parameterBytes += shapeNumel(program.values[id].shape) * static_cast<int64_t>(dtypeSize(program.dtype));
  }
  for (ir::ValueId id : program.outputs) bytesPerRow += rowBytes(id) / 4;
  for (const ir::Op& op : program.ops)
    if (op.kind != ir::OpKind::Reshape && op.kind != ir::OpKind::Truncate) bytesPerRow += rowBytes(op.result);
  const int64_t rows = tileRows(host);
  const int64_t tile = bytesPerRow > 0 ? kTileBudgetBytes / bytesPerRow : kMaxRowTile;
  // Parameters that do not fit in L2 either are streamed from L3 once per row tile: the tile
  // then needs more rows to reuse each of their cache lines, even if its intermediates spill
  // out of half of L2 (BTT at d = 4096, 8 MB of cores: 24-row tiles run ~25% faster than 8-row ones).
  const int64_t fewestRows = parameterBytes > 2 * kTileBudgetBytes ? kStreamedParameterTileRows : rows;
  const int64_t large = std::clamp(tile / rows * rows, fewestRows, kMaxRowTile / rows * rows);
  Layout layout;
  for (int64_t height : {large, rows, int64_t{1}})
    if (layout.rowTiles.empty() || height < layout.rowTiles.back()) layout.rowTiles.push_back(height);
  // A panel is the V tile of the register tile: two vector registers.
  layout.packWidth = 2 * host.vectorBits / (8 * static_cast<int64_t>(dtypeSize(program.dtype)));
  layout.registerRows = rows;
  return layout;
}

void scheduleModule(mlir::ModuleOp module, const HostTarget& host) {
  mlir::IRRewriter rewriter(module.getContext());
  llvm::SmallVector<mlir::linalg::GenericOp> contractions;
  module.walk([&](mlir::linalg::GenericOp op) {
    if (op->hasAttr(kContractionAttr)) contractions.push_back(op);
  });
  for (mlir::linalg::GenericOp op : contractions) tileContraction(rewriter, op, host);
  canonicalize(module);
  vectorizeTiles(rewriter, module);
}

}  // namespace einjit::cpu::detail
