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
//    block of the right operand is reused across the M blocks; or, when M is the rows and
//    MLIRGen found the other operand small, M first. The tile's other unit dims are
//    dropped: it becomes an (mr x 1) * (1 x nr) product.
// 3. The tiles are vectorised to vector.contract, and the accumulator's read/write pair is
//    hoisted out of the reduction loops so it lives in registers (LowerToLLVM turns the
//    contract into one broadcast + FMA per row of the tile; putRowOperandFirst orders the
//    operands the way that lowering needs).
// 4. Every transpose with static shapes is tiled into blocks between the input's and the
//    output's innermost dims (or contiguous runs) and vectorised (tileTranspose).
// Contractions with a dynamic extent (whole-tensor programs), diagonals, broadcasts and unary
// contractions stay plain loops.
#include <algorithm>

#include "compiler/mlir/CodegenStages.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/Dialect/Tensor/Transforms/Transforms.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Dialect/Vector/Transforms/LoweringPatterns.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/IR/Matchers.h"
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

// Drops the loops of `tileOp` that have tile size 1, except those in `keep`; the result.
mlir::linalg::GenericOp dropTileUnitDims(mlir::IRRewriter& rewriter, mlir::linalg::GenericOp tileOp,
                                         llvm::ArrayRef<int64_t> tileSizes, std::initializer_list<int> keep) {
  mlir::linalg::ControlDropUnitDims control;
  control.rankReductionStrategy = mlir::linalg::ControlDropUnitDims::RankReductionStrategy::ExtractInsertSlice;
  control.controlFn = [&](mlir::Operation*) {
    llvm::SmallVector<unsigned> dims;
    for (int d = 0; d < static_cast<int>(tileSizes.size()); ++d)
      if (tileSizes[d] == 1 && std::find(keep.begin(), keep.end(), d) == keep.end())
        dims.push_back(static_cast<unsigned>(d));
    return dims;
  };
  NewGenericOps created;
  rewriter.setListener(&created);
  rewriter.setInsertionPoint(tileOp);
  if (mlir::succeeded(mlir::linalg::dropUnitDims(rewriter, tileOp, control)) && !created.ops.empty())
    tileOp = created.ops.back();
  rewriter.setListener(nullptr);
  return tileOp;
}

// When the contraction's accumulator starts as a fill (a fresh result, not a sum carried over
// row tiles) and the reduction is not cut into blocks, the fill is fused into the register
// tile: each tile then starts from a splat in registers (ReadOfSplatTile) instead of reading
// back zeros that a whole-tensor memset wrote first (a tenth of a BTT backward). The parallel
// dims are tiled first with the fill fused, then the reductions; null if that fails.
mlir::linalg::GenericOp tileFusingZeroInit(mlir::IRRewriter& rewriter, mlir::linalg::GenericOp op,
                                           llvm::ArrayRef<int64_t> tileSizes, llvm::ArrayRef<int64_t> order) {
  auto fill = op.getDpsInits()[0].getDefiningOp<mlir::linalg::FillOp>();
  if (!fill || !fill->getResult(0).hasOneUse()) return {};
  const auto iterators = op.getIteratorTypesArray();
  llvm::SmallVector<int64_t> parallelSizes(tileSizes.begin(), tileSizes.end());
  llvm::SmallVector<int64_t> reductionSizes(tileSizes.size(), 0);
  for (std::size_t d = 0; d < tileSizes.size(); ++d)
    if (iterators[d] == mlir::utils::IteratorType::reduction) {
      parallelSizes[d] = 0;
      reductionSizes[d] = tileSizes[d];
    }
  mlir::scf::SCFTilingOptions tiling;
  tiling.setTileSizes(mlir::getAsIndexOpFoldResult(op.getContext(), parallelSizes));
  tiling.setInterchange(order);
  tiling.setLoopType(mlir::scf::SCFTilingOptions::LoopType::ForOp);
  mlir::scf::SCFTileAndFuseOptions options;
  options.setTilingOptions(tiling);
  options.setFusionControlFn([&](mlir::tensor::ExtractSliceOp, mlir::OpResult producer, bool) {
    return std::make_tuple(producer.getOwner() == fill.getOperation(), false);
  });
  rewriter.setInsertionPoint(op);
  auto fused = mlir::scf::tileConsumerAndFuseProducersUsingSCF(
      rewriter, llvm::cast<mlir::TilingInterface>(op.getOperation()), options);
  if (mlir::failed(fused) || fused->fusedProducers.size() != 1) return {};
  for (mlir::OpResult result : op->getResults()) rewriter.replaceAllUsesWith(result, fused->replacements.lookup(result));
  rewriter.eraseOp(op);
  if (fill->use_empty()) rewriter.eraseOp(fill);
  auto tiled = llvm::cast<mlir::linalg::GenericOp>(fused->tiledAndFusedOps.front());
  for (mlir::Operation* other : fused->tiledAndFusedOps)
    if (llvm::isa<mlir::linalg::FillOp>(other)) other->setAttr(kVectorizeAttr, rewriter.getUnitAttr());
  return tile(rewriter, tiled, reductionSizes, {});
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
  // A V dim that no whole or half vector register divides (BTT at d = 1088: factors of 34,
  // tiled 17 wide, an odd-width vector that LLVM breaks into scalars) is split into the part
  // that is whole registers and the rest, each tiled on its own (BTT d = 1088 forward 15.3 ->
  // 1.1 ms). In a row-parallel contraction, a V dim of at least two registers whose tiles would
  // be narrower than one (60 and 44 on AVX2: 4 wide) is split too, at a multiple of two
  // registers, so that most of it gets full-width tiles: Monarch with 60 x 60 blocks
  // (d = 3600) ran its forward 69-80 -> 36-48 ms and its dx 77 -> 44 ms on one Zen 3 core. In
  // a row-sum GEMM (parameter gradients) that split made Monarch's dW2 48 -> 85 ms, and a V dim
  // of 24 on AVX-512 (8 wide, split 16 + 8) gained nothing and tripled the backward's compile
  // time; those keep the odd-width rule.
  const bool rowSum = op->hasAttr(kRegisterRowsDimAttr);
  const bool wideRowParallel = !rowSum && ranges[vDim] >= 2 * lanes;  // split at two registers
  const bool oddWidth = tileSizes[vDim] % std::max<int64_t>(1, lanes / 2) != 0;
  const bool narrow = wideRowParallel && tileSizes[vDim] < lanes;
  const int64_t wholeWidth = wideRowParallel ? 2 * lanes : lanes;
  if (ranges[vDim] > lanes && (oddWidth || narrow)) {
    rewriter.setInsertionPoint(op);
    auto [whole, rest] = mlir::linalg::splitOp(rewriter, llvm::cast<mlir::TilingInterface>(op.getOperation()), vDim,
                                               rewriter.getIndexAttr(ranges[vDim] / wholeWidth * wholeWidth));
    if (whole && rest) {
      tileContraction(rewriter, llvm::cast<mlir::linalg::GenericOp>(whole.getOperation()), host);
      tileContraction(rewriter, llvm::cast<mlir::linalg::GenericOp>(rest.getOperation()), host);
      return;
    }
  }

  llvm::SmallVector<int64_t> order;
  auto rowDim = op->getAttrOfType<mlir::IntegerAttr>(kRowDimAttr);
  const bool rowsOutside = op->hasAttr(kRowBlocksOutsideAttr) && rowDim && rowDim.getInt() == mDim;
  if (rowsOutside) order.push_back(mDim);
  for (int d = 0; d < numLoops; ++d)
    if (parallel(d) && d != vDim && d != mDim) order.push_back(d);
  order.push_back(vDim);
  if (mDim >= 0 && !rowsOutside) order.push_back(mDim);
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
  mlir::linalg::GenericOp registerTile =
      block >= kReductionBlock / 4 ? mlir::linalg::GenericOp() : tileFusingZeroInit(rewriter, op, tileSizes, order);
  if (!registerTile) registerTile = tile(rewriter, op, tileSizes, order);
  if (!registerTile) return;

  // Drop the unit dims of the tile, except M, V and one reduction: the tile becomes a plain
  // (mr x k=1) * (k=1 x nr) product, which vectorises to one matmul-shaped vector.contract.
  int keptReduction = -1;
  for (int d = 0; d < numLoops; ++d)
    if (!parallel(d)) keptReduction = d;
  registerTile = dropTileUnitDims(rewriter, registerTile, tileSizes, {mDim, vDim, keptReduction});
  registerTile->setAttr(kVectorizeAttr, rewriter.getUnitAttr());
}

// Groups of consecutive dims of `shape` such that each group has exactly one dim longer than
// 1 (the size-1 dims join a neighbour); empty if there is no such dim.
llvm::SmallVector<mlir::ReassociationIndices> dropUnitDimGroups(llvm::ArrayRef<int64_t> shape) {
  llvm::SmallVector<mlir::ReassociationIndices> groups;
  mlir::ReassociationIndices leading;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (shape[d] != 1) {
      groups.push_back(leading);
      leading.clear();
      groups.back().push_back(d);
    } else if (groups.empty()) {
      leading.push_back(d);
    } else {
      groups.back().push_back(d);
    }
  }
  return groups;
}

// The transpose without its size-1 dims (collapse_shape, transpose, expand_shape): a vector
// transfer moves whole vectors only along a memory dim that is innermost, and a trailing
// size-1 dim would turn the writes of a transposed tile into single elements.
mlir::linalg::TransposeOp dropUnitDimsOfTranspose(mlir::IRRewriter& rewriter, mlir::linalg::TransposeOp op) {
  const auto inputType = llvm::cast<mlir::RankedTensorType>(op.getInput().getType());
  const auto outputType = llvm::cast<mlir::RankedTensorType>(op.getInit().getType());
  const auto inputGroups = dropUnitDimGroups(inputType.getShape());
  const auto outputGroups = dropUnitDimGroups(outputType.getShape());
  if (inputGroups.empty() || inputGroups.size() == static_cast<std::size_t>(inputType.getRank())) return op;
  // The reduced permutation: the kept input dims, numbered in order, as the output takes them.
  llvm::SmallVector<int64_t> keptIndex(inputType.getRank(), -1);
  for (std::size_t g = 0; g < inputGroups.size(); ++g)
    for (int64_t d : inputGroups[g])
      if (inputType.getDimSize(d) != 1) keptIndex[d] = static_cast<int64_t>(g);
  llvm::SmallVector<int64_t> perm;
  for (int64_t j : op.getPermutation())
    if (keptIndex[j] >= 0) perm.push_back(keptIndex[j]);
  const mlir::Location loc = op.getLoc();
  rewriter.setInsertionPoint(op);
  mlir::Value input = rewriter.create<mlir::tensor::CollapseShapeOp>(loc, op.getInput(), inputGroups);
  mlir::Value init = rewriter.create<mlir::tensor::CollapseShapeOp>(loc, op.getInit(), outputGroups);
  auto reduced = rewriter.create<mlir::linalg::TransposeOp>(loc, input, init, perm);
  rewriter.replaceOpWithNewOp<mlir::tensor::ExpandShapeOp>(op, outputType, reduced.getResult()[0], outputGroups);
  return reduced;
}

// A transpose (panels packed, a result put back in its declared order, a permutation) is
// tiled so that a tile moves a block of up to lanes x lanes elements from the input's innermost
// dim to the output's (a vector.transpose that LowerToLLVM turns into shuffles), or, when the
// innermost dim (of size > 1) stays innermost, a contiguous run of it (vector loads and
// stores). Untiled, it would become scalar loops, or gathers and scatters.
void tileTranspose(mlir::IRRewriter& rewriter, mlir::linalg::TransposeOp op, const HostTarget& host) {
  const auto declaredType = llvm::cast<mlir::ShapedType>(op.getInput().getType());
  if (!declaredType.hasStaticShape() || declaredType.getNumElements() == 0) return;
  op = dropUnitDimsOfTranspose(rewriter, op);
  const auto inputType = llvm::cast<mlir::ShapedType>(op.getInput().getType());
  const llvm::ArrayRef<int64_t> sizes = inputType.getShape();
  const llvm::ArrayRef<int64_t> perm = op.getPermutation();  // output dim k = input dim perm[k]
  const int rank = static_cast<int>(perm.size());
  // The loops are the output's dims: input dim j is walked by loop `loopOf(j)`.
  auto loopOf = [&](int64_t j) { return static_cast<int>(std::find(perm.begin(), perm.end(), j) - perm.begin()); };
  int inputInner = -1, outputInner = -1;  // loops of the innermost dims longer than 1
  for (int j = 0; j < rank; ++j)
    if (sizes[j] > 1) inputInner = loopOf(j);
  for (int k = 0; k < rank; ++k)
    if (sizes[perm[k]] > 1) outputInner = k;
  if (inputInner < 0) return;

  const int elementBits = static_cast<int>(inputType.getElementTypeBitWidth());
  const int64_t lanes = std::max(1, host.vectorBits / elementBits);
  llvm::SmallVector<int64_t> tileSizes(rank, 1);
  auto loopSize = [&](int k) { return sizes[perm[k]]; };
  if (inputInner == outputInner) {
    tileSizes[inputInner] = largestDivisor(loopSize(inputInner), 4 * lanes);
  } else {
    tileSizes[inputInner] = largestDivisor(loopSize(inputInner), lanes);
    tileSizes[outputInner] = largestDivisor(loopSize(outputInner), lanes);
  }
  rewriter.setInsertionPoint(op);
  mlir::FailureOr<mlir::linalg::GenericOp> generic = mlir::linalg::generalizeNamedOp(rewriter, op);
  if (mlir::failed(generic)) return;
  mlir::linalg::GenericOp copyTile = tile(rewriter, *generic, tileSizes, {});
  if (!copyTile) return;
  copyTile = dropTileUnitDims(rewriter, copyTile, tileSizes, {inputInner, outputInner});
  // Vectorised right away: canonicalisation would fold a 1-D tile (a plain copy) into slices,
  // which bufferise to a copy in scalar loops.
  rewriter.setInsertionPoint(copyTile);
  (void)mlir::linalg::vectorize(rewriter, copyTile);
}

// The outer-product lowering of vector.contract takes its M dim to be d0 and only handles
// contractions whose left operand has it; otherwise it falls back to a lowering that transposes
// the accumulator on every step (a row-sum GEMM whose M operand is the generic's second input
// ran at ~2 GFLOP/s). The product commutes, so swapping the operands (and their maps) is exact.
void putRowOperandFirst(mlir::IRRewriter& rewriter, mlir::ModuleOp module) {
  module.walk([&](mlir::vector::ContractionOp contract) {
    const auto maps = contract.getIndexingMapsArray();
    if (maps[0].isFunctionOfDim(0) || !maps[1].isFunctionOfDim(0)) return;
    rewriter.modifyOpInPlace(contract, [&] {
      const mlir::Value lhs = contract.getLhs();
      contract->setOperand(0, contract.getRhs());
      contract->setOperand(1, lhs);
      contract.setIndexingMapsAttr(rewriter.getAffineMapArrayAttr({maps[1], maps[0], maps[2]}));
    });
  });
}

// True if `transfer` (a read or a write of a tensor) touches every element of the tensor:
// in bounds, at index 0 everywhere, and every tensor dim longer than 1 taken whole by a
// vector dim.
bool coversWholeTensor(mlir::VectorTransferOpInterface transfer) {
  const auto tensor = llvm::dyn_cast<mlir::RankedTensorType>(transfer.getShapedType());
  if (!tensor || !tensor.hasStaticShape() || transfer.hasOutOfBoundsDim() || transfer.getMask()) return false;
  for (mlir::Value index : transfer.getIndices())
    if (!mlir::isConstantIntValue(index, 0)) return false;
  const mlir::AffineMap map = transfer.getPermutationMap();
  const llvm::ArrayRef<int64_t> vectorShape = transfer.getVectorType().getShape();
  for (int64_t d = 0; d < tensor.getRank(); ++d) {
    if (tensor.getDimSize(d) == 1) continue;
    bool whole = false;
    for (unsigned r = 0; r < map.getNumResults(); ++r)
      whole = whole || (map.getResult(r) == mlir::getAffineDimExpr(static_cast<unsigned>(d), map.getContext()) &&
                        vectorShape[r] == tensor.getDimSize(d));
    if (!whole) return false;
  }
  return true;
}

// The splat a transfer_write writes, if its vector is one.
mlir::Attribute writtenSplat(mlir::vector::TransferWriteOp write) {
  mlir::DenseElementsAttr constant;
  if (!mlir::matchPattern(write.getVector(), mlir::m_Constant(&constant)) || !constant.isSplat()) return {};
  return constant.getSplatValue<mlir::Attribute>();
}

// A register tile's accumulator read from the tile its fused fill just wrote (a splat over the
// whole tile) is that splat: the accumulators start in registers.
struct ReadOfSplatTile : mlir::OpRewritePattern<mlir::vector::TransferReadOp> {
  using OpRewritePattern::OpRewritePattern;
  mlir::LogicalResult matchAndRewrite(mlir::vector::TransferReadOp read, mlir::PatternRewriter& rewriter) const override {
    auto write = read.getSource().getDefiningOp<mlir::vector::TransferWriteOp>();
    if (!write || read.hasOutOfBoundsDim() || read.getMask() || !coversWholeTensor(write)) return mlir::failure();
    const mlir::Attribute splat = writtenSplat(write);
    if (!splat) return mlir::failure();
    rewriter.replaceOpWithNewOp<mlir::arith::ConstantOp>(read, mlir::SplatElementsAttr::get(read.getVectorType(), splat));
    return mlir::success();
  }
};

// A write over the whole tensor makes the write it overwrites dead (the fill's zeros, once the
// accumulator no longer reads them; left in place they also cost store-buffer stalls).
struct WriteOverWholeWrite : mlir::OpRewritePattern<mlir::vector::TransferWriteOp> {
  using OpRewritePattern::OpRewritePattern;
  mlir::LogicalResult matchAndRewrite(mlir::vector::TransferWriteOp write, mlir::PatternRewriter& rewriter) const override {
    auto overwritten = write.getSource().getDefiningOp<mlir::vector::TransferWriteOp>();
    if (!overwritten || !overwritten->hasOneUse() || !coversWholeTensor(write)) return mlir::failure();
    rewriter.modifyOpInPlace(write, [&] { write.getSourceMutable().assign(overwritten.getSource()); });
    return mlir::success();
  }
};

void vectorizeTiles(mlir::IRRewriter& rewriter, mlir::ModuleOp module) {
  llvm::SmallVector<mlir::linalg::LinalgOp> tiles;  // register tiles and their fused fills
  module.walk([&](mlir::linalg::LinalgOp op) {
    if (op->hasAttr(kVectorizeAttr)) tiles.push_back(op);
  });
  for (mlir::linalg::LinalgOp op : tiles) {
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
  mlir::RewritePatternSet zeroStarts(module.getContext());
  zeroStarts.add<ReadOfSplatTile, WriteOverWholeWrite>(module.getContext());
  (void)mlir::applyPatternsAndFoldGreedily(module, std::move(zeroStarts));
  canonicalize(module);
  putRowOperandFirst(rewriter, module);
}

}  // namespace

Layout chooseLayout(const KernelProgram& program, const HostTarget& host) {
  const auto bytesOf = [&](ir::ValueId id) {
    return shapeNumel(program.values[id].shape) * static_cast<int64_t>(dtypeSize(program.dtype));
  };
  int64_t parameterBytes = 0;
  for (ir::ValueId id : program.inputs)
    if (!program.isRowValue(id)) parameterBytes += bytesOf(id);
  // Parameters that do not fit in L2 either are streamed from L3 once per row tile: the tile
  // then needs more rows to reuse each of their cache lines, even if its intermediates spill
  // out of L2's quarter (BTT at d = 4096, 8 MB of cores: 24-row tiles run ~25% faster than 8-row
  // ones), and the inputs and outputs, which stream anyway, do not limit it (dense at d = 4096:
  // 256-row tiles run ~40% faster than 128-row ones).
  const bool streamedParameters = parameterBytes > host.l2Bytes;
  // The sums over the rows (parameter gradients) that each thread carries from row tile to row
  // tile; with parameters that are not streamed they stay in L2 too.
  int64_t sumBytes = 0;
  for (ir::ValueId id : program.outputs)
    if (!program.isRowValue(id)) sumBytes += bytesOf(id);
  // The intermediates of a row tile should stay in a quarter of what the parameters and the
  // sums leave of L2 (the rest holds what the next tile prefetches), and at least an eighth of
  // L2. Inputs and outputs are only walked block by block, so they count a quarter; reshapes
  // and truncations are views. On a 1 MB L2 (AMD Zen 5), a quarter of L2 rather than all of it
  // ran BTT rank 1 at d = 1024 forward+backward in 2.9 instead of 4.1 ms, Monarch in 3.6
  // instead of 5.0 ms and BTT rank 4 in 13.7 instead of 15.4 ms. On a 512 KB L2 (AMD Zen 3),
  // which BTT rank 1's and Monarch's cores and gradient sums at d = 1024 fill (2 x 128 KB
  // each), an eighth ran their training backward ~20% faster than a quarter (8-row instead of
  // 16-row tiles). Dense and the d = 4096 layers (streamed parameters) keep a quarter.
  const int64_t tileBudgetBytes =
      streamedParameters
          ? host.l2Bytes / 4
          : std::max((host.l2Bytes - parameterBytes - sumBytes) / 4, host.l2Bytes / 8);
  constexpr int64_t kMaxRowTile = 256;
  constexpr int64_t kStreamedParameterTileRows = 24;
  constexpr int64_t kSpillingTileRows = 64;
  auto rowBytes = [&](ir::ValueId id) {
    const Shape& shape = program.values[id].shape;
    if (shape.empty() || shape[0] != ir::kRows) return int64_t{0};
    int64_t elements = 1;  // saturates at the budget
    for (std::size_t d = 1; d < shape.size(); ++d)
      elements = std::min(elements * std::min(shape[d], tileBudgetBytes), tileBudgetBytes);
    return elements * static_cast<int64_t>(dtypeSize(program.dtype));
  };
  // Outputs, and the values that become outputs through views (a reshape, a truncation).
  std::vector<bool> output(program.values.size(), false);
  for (ir::ValueId id : program.outputs) output[id] = true;
  for (auto op = program.ops.rbegin(); op != program.ops.rend(); ++op)
    if ((op->kind == ir::OpKind::Reshape || op->kind == ir::OpKind::Truncate) && output[op->result])
      output[op->inputs[0]] = true;
  // An output that a later op computes from (a training forward's saved intermediate) is an
  // intermediate as well: its tile must stay in cache for that op. Counted as an output, it let
  // BTT rank 4 at d = 4096 take 256-row tiles (16 MB of it per tile), 80% slower.
  for (const ir::Op& op : program.ops)
    if (op.kind != ir::OpKind::Reshape && op.kind != ir::OpKind::Truncate)
      for (ir::ValueId id : op.inputs) output[id] = false;
  auto isOutput = [&](ir::ValueId id) { return output[id]; };
  int64_t bytesPerRow = 0;
  if (!streamedParameters) {
    for (ir::ValueId id : program.inputs) bytesPerRow += rowBytes(id) / 4;
    for (ir::ValueId id : program.outputs) bytesPerRow += rowBytes(id) / 4;
  }
  // An op that writes a program output (or a view of one) counts as that output, not as an
  // intermediate (dense's only op: counted whole, it held dense at d = 4096 to 64-row tiles,
  // 15% slower than 256).
  for (const ir::Op& op : program.ops)
    if (op.kind != ir::OpKind::Reshape && op.kind != ir::OpKind::Truncate && !isOutput(op.result))
      bytesPerRow += rowBytes(op.result);
  const int64_t rows = tileRows(host);
  const int64_t tile = bytesPerRow > 0 ? tileBudgetBytes / bytesPerRow : kMaxRowTile;
  // When even kStreamedParameterTileRows rows' intermediates overflow L2, the tile lives in
  // L3 whatever its height, and only the parameters' reuse still grows with it (BTT rank 4 at
  // d = 4096 on a 1 MB L2, 64 KB of intermediates per row: 64-row tiles ran the backward
  // 147 -> 125 ms, the training forward ~15% faster; 48 and 96 rows between the two).
  const bool tileSpills = kStreamedParameterTileRows * bytesPerRow > host.l2Bytes;
  const int64_t fewestRows = !streamedParameters ? rows
                             : tileSpills        ? kSpillingTileRows
                                                 : kStreamedParameterTileRows;
  int64_t large = std::clamp(tile / rows * rows, fewestRows, kMaxRowTile / rows * rows);
  // With streamed parameters whose tile's intermediates do fit, the whole tile (its inputs and
  // outputs too: the intermediates are made from and into them) should still stay in L2, so
  // that only the parameters and the gradient sums come from L3. On a Zen 3's 512 KB L2,
  // Monarch's and BTT rank 1's training backward at d = 4096 (2 MB of cores, 80 KB of row
  // values per row) ran 90-98 -> 64-67 ms and 86 -> 59 ms on one core with 4- or 8-row tiles
  // instead of 24 (12 rows: 77 ms), and BTT rank 4's at d = 1024 37 -> 30 ms with 8. Dense
  // keeps its tall tiles: it has no intermediates.
  if (streamedParameters && !tileSpills && bytesPerRow > 0) {
    int64_t rowValueBytes = bytesPerRow;
    for (ir::ValueId id : program.inputs) rowValueBytes += rowBytes(id);
    for (ir::ValueId id : program.outputs)
      if (isOutput(id)) rowValueBytes += rowBytes(id);  // saved values count as intermediates
    large = std::max(rows, std::min(large, host.l2Bytes / rowValueBytes / rows * rows));
  }
  Layout layout;
  for (int64_t height : {large, rows, int64_t{1}})
    if (layout.rowTiles.empty() || height < layout.rowTiles.back()) layout.rowTiles.push_back(height);
  // A panel is the V tile of the register tile: two vector registers.
  layout.packWidth = 2 * host.vectorBits / (8 * static_cast<int64_t>(dtypeSize(program.dtype)));
  layout.registerRows = rows;
  // BTT rank 4 at d = 4096 (64 KB of intermediates per row): its plain forward read t
  // (N, a, c, r) per c with a 1 KB stride; laid out (N, c, a, r) it ran 161-189 -> 120-137 ms
  // on one Zen 3 core (interleaved runs), and with its gradient GEMMs' operands all packed its
  // training backward 310-322 -> 281-299 ms. Where the tile stays in L2 the strided reads hit
  // it: making t in the reader's order cost BTT rank 1 and Monarch at d = 1024 7-8% of their
  // forward, and BTT's gradients read in place ran ~5% faster than packed.
  layout.rowTilesSpill = streamedParameters && tileSpills;
  return layout;
}

void scheduleModule(mlir::ModuleOp module, const HostTarget& host) {
  mlir::IRRewriter rewriter(module.getContext());
  llvm::SmallVector<mlir::linalg::GenericOp> contractions;
  module.walk([&](mlir::linalg::GenericOp op) {
    if (op->hasAttr(kContractionAttr)) contractions.push_back(op);
  });
  for (mlir::linalg::GenericOp op : contractions) tileContraction(rewriter, op, host);
  llvm::SmallVector<mlir::linalg::TransposeOp> transposes;
  module.walk([&](mlir::linalg::TransposeOp op) { transposes.push_back(op); });
  for (mlir::linalg::TransposeOp op : transposes) tileTranspose(rewriter, op, host);
  canonicalize(module);
  vectorizeTiles(rewriter, module);
}

}  // namespace einjit::cpu::detail
