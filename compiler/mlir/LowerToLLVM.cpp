// From the scheduled module (tensors, vectors, loops) to LLVM IR: empty-tensor elimination,
// one-shot bufferisation (in place into the argument buffers), alloc hoisting and deallocation,
// copies as loops, vector lowering (contract -> outer products -> FMAs, transposes -> shuffles,
// masks, transfers), the standard conversions to the LLVM dialect, and translation.
// The translated body is wrapped in the entry point of CpuCodegen.h.
#include "compiler/mlir/CodegenStages.h"
#include "compiler/mlir/CpuCodegen.h"
#include "einjit/error.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/Module.h"
#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVMPass.h"
#include "mlir/Conversion/VectorToSCF/VectorToSCF.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/Pipelines/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/OneShotAnalysis.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/Vector/Transforms/LoweringPatterns.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/Passes.h"

namespace einjit::cpu::detail {
namespace {

void runPasses(mlir::ModuleOp module, mlir::PassManager& pm, const char* what) {
  if (mlir::failed(pm.run(module))) throw UserError(std::string("cpu codegen: ") + what + " failed");
}

// Vector ops the LLVM conversion does not take directly: contractions become outer products
// and then FMAs on 1-D vectors (one per row of the register tile), masks and n-D transfers
// become 1-D ones. Two rounds: the broadcast lowering of the second and the canonicalisations
// of the first undo each other.
void lowerVectorOps(mlir::ModuleOp module) {
  mlir::MLIRContext* context = module.getContext();
  // A bound instead of a hang should a pattern set ever cycle; whatever is left unlowered
  // makes the conversion to the LLVM dialect fail.
  mlir::GreedyRewriteConfig config;
  config.maxNumRewrites = 1'000'000;

  mlir::RewritePatternSet contractions(context);
  mlir::vector::VectorTransformsOptions options;
  options.setVectorTransformsOptions(mlir::vector::VectorContractLowering::OuterProduct);
  // Transposes of 16x16 floats (AVX-512) as four stages of 16 two-register shuffles;
  // other 2-D shapes as one shuffle of the flattened vector, which LLVM splits into permutes.
  options.setVectorTransposeLowering(mlir::vector::VectorTransposeLowering::Shuffle16x16);
  mlir::vector::populateCastAwayVectorLeadingOneDimPatterns(contractions);
  mlir::vector::populateVectorContractLoweringPatterns(contractions, options);
  mlir::vector::populateVectorTransposeLoweringPatterns(contractions, options);
  auto* vector = context->getLoadedDialect<mlir::vector::VectorDialect>();
  vector->getCanonicalizationPatterns(contractions);
  for (mlir::RegisteredOperationName op : context->getRegisteredOperations())
    if (&op.getDialect() == vector) op.getCanonicalizationPatterns(contractions, context);
  (void)mlir::applyPatternsAndFoldGreedily(module, std::move(contractions), config);

  mlir::RewritePatternSet rest(context);
  mlir::vector::populateVectorMaskLoweringPatternsForSideEffectingOps(rest);
  mlir::vector::populateVectorTransferLoweringPatterns(rest, /*maxTransferRank=*/1);
  mlir::vector::populateVectorOuterProductLoweringPatterns(rest);
  mlir::vector::populateVectorBroadcastLoweringPatterns(rest);
  mlir::vector::populateVectorMaskOpLoweringPatterns(rest);
  mlir::vector::populateVectorShapeCastLoweringPatterns(rest);
  (void)mlir::applyPatternsAndFoldGreedily(module, std::move(rest), config);
}

// True if `type` is static and its innermost dim is contiguous (a vector transfer along it
// is a plain load or store).
bool unitInnermostStride(mlir::MemRefType type) {
  if (!type.hasStaticShape() || type.getRank() == 0) return false;
  llvm::SmallVector<int64_t> strides;
  int64_t offset = 0;
  return mlir::succeeded(mlir::getStridesAndOffset(type, strides, offset)) && strides.back() == 1;
}

// memref.copy of strided views lowers to a call into MLIR's runtime library, which a kernel
// object cannot rely on. A small static copy along contiguous rows (the packing of a row-sum
// GEMM's panels copies runs of 8 or 32 floats) becomes vector transfers: as a linalg.copy,
// LLVM left it as scalar loads and stores, a sixth of a BTT backward. Others become loops
// (linalg.copy), which LLVM vectorises when they are long.
void replaceMemrefCopies(mlir::ModuleOp module) {
  // The vector copy unrolls into one transfer per contiguous run: larger copies, or more runs,
  // would be much code (a pad's copy of 1024 runs of 3 floats took LLVM two minutes to compile).
  constexpr int64_t kMaxVectorCopyElements = 4096;
  constexpr int64_t kMaxVectorCopyRuns = 64;
  llvm::SmallVector<mlir::memref::CopyOp> copies;
  module.walk([&](mlir::memref::CopyOp copy) { copies.push_back(copy); });
  mlir::IRRewriter rewriter(module.getContext());
  for (mlir::memref::CopyOp copy : copies) {
    rewriter.setInsertionPoint(copy);
    const auto source = llvm::cast<mlir::MemRefType>(copy.getSource().getType());
    const auto target = llvm::cast<mlir::MemRefType>(copy.getTarget().getType());
    if (unitInnermostStride(source) && unitInnermostStride(target) &&
        source.getNumElements() <= kMaxVectorCopyElements &&
        source.getNumElements() / std::max<int64_t>(source.getShape().back(), 1) <= kMaxVectorCopyRuns &&
        mlir::succeeded(mlir::linalg::vectorizeCopy(rewriter, copy)))
      continue;
    rewriter.replaceOpWithNewOp<mlir::linalg::CopyOp>(copy, copy.getSource(), copy.getTarget());
  }
}

// A row tile's result is computed in a fresh tensor and inserted into the output at the end of
// the tile: insert_slice(reshape(op(... tensor.empty ...))). One-shot bufferisation computes
// into the output in place only when the empty tensor has the inserted type, so through the
// reshapes it allocated a buffer and copied the tile out (a tenth of a BTT backward). Here the
// empty tensor becomes the reshaped slice of the destination itself. The chain back from the
// insert is followed through reshapes, the inits of destination-style ops (fill, generic,
// transpose) and loops' iter_args; every value on it must have no other use.
void computeRowTilesInPlace(mlir::ModuleOp module) {
  llvm::SmallVector<mlir::tensor::InsertSliceOp> inserts;
  module.walk([&](mlir::tensor::InsertSliceOp insert) { inserts.push_back(insert); });
  mlir::IRRewriter rewriter(module.getContext());
  for (mlir::tensor::InsertSliceOp insert : inserts) {
    llvm::SmallVector<mlir::Operation*> reshapes;  // from the insert back to the empty tensor
    mlir::Value value = insert.getSource();
    mlir::tensor::EmptyOp empty;
    // The tile's result itself (up to the first op that computes it) may have other readers:
    // a saved intermediate of a training forward is both an output and the next op's operand,
    // which then reads it from the output buffer. Further back, a second use would need the
    // value before it is overwritten in place.
    bool pastResult = false;
    while (!empty) {
      if (pastResult && !value.hasOneUse()) break;
      mlir::Operation* def = value.getDefiningOp();
      if (!def) break;
      if (auto found = llvm::dyn_cast<mlir::tensor::EmptyOp>(def)) {
        empty = found;
      } else if (llvm::isa<mlir::tensor::CollapseShapeOp, mlir::tensor::ExpandShapeOp>(def)) {
        reshapes.push_back(def);
        value = def->getOperand(0);
      } else if (auto dps = llvm::dyn_cast<mlir::DestinationStyleOpInterface>(def)) {
        value = dps.getTiedOpOperand(llvm::cast<mlir::OpResult>(value))->get();
        pastResult = true;
      } else if (auto loop = llvm::dyn_cast<mlir::scf::ForOp>(def)) {
        value = loop.getTiedLoopInit(llvm::cast<mlir::OpResult>(value))->get();
        pastResult = true;
      } else {
        break;
      }
    }
    if (!empty || empty->getBlock() != insert->getBlock()) continue;
    // The destination and the offsets must be available where the empty tensor is.
    auto availableAt = [&](mlir::Value v) {
      mlir::Operation* def = v.getDefiningOp();
      return def ? def->getBlock() != empty->getBlock() || def->isBeforeInBlock(empty)
                 : v.getParentBlock() == empty->getBlock() ||
                       v.getParentBlock()->getParentOp()->isProperAncestor(empty);
    };
    if (!availableAt(insert.getDest()) || !llvm::all_of(insert.getOffsets(), availableAt)) continue;
    rewriter.setInsertionPoint(empty);
    mlir::Value slice = rewriter.create<mlir::tensor::ExtractSliceOp>(
        insert.getLoc(), insert.getSourceType(), insert.getDest(), insert.getMixedOffsets(),
        insert.getMixedSizes(), insert.getMixedStrides());
    // Undo the reshapes, the last one (next to the insert) first.
    for (mlir::Operation* reshape : reshapes) {
      if (auto collapse = llvm::dyn_cast<mlir::tensor::CollapseShapeOp>(reshape))
        slice = rewriter.create<mlir::tensor::ExpandShapeOp>(insert.getLoc(), collapse.getSrcType(), slice,
                                                             collapse.getReassociationIndices());
      else {
        auto expand = llvm::cast<mlir::tensor::ExpandShapeOp>(reshape);
        slice = rewriter.create<mlir::tensor::CollapseShapeOp>(insert.getLoc(), expand.getSrcType(), slice,
                                                               expand.getReassociationIndices());
      }
    }
    rewriter.replaceOp(empty, slice);
  }
}

// `value` as the next iteration of `loop` computes it: the memory-free ops of the loop body it
// depends on are cloned at the insertion point, with `next` mapping the induction variable to
// its next value; null if it depends on anything else the body defines.
mlir::Value atNextIteration(mlir::RewriterBase& rewriter, mlir::scf::ForOp loop, mlir::Value value,
                            mlir::IRMapping& next) {
  if (mlir::Value mapped = next.lookupOrNull(value)) return mapped;
  if (loop.isDefinedOutsideOfLoop(value)) return value;
  mlir::Operation* def = value.getDefiningOp();
  if (!def || def->getNumRegions() != 0 || !mlir::isMemoryEffectFree(def)) return {};
  for (mlir::Value operand : def->getOperands())
    if (!atNextIteration(rewriter, loop, operand, next)) return {};
  rewriter.clone(*def, next);
  return next.lookup(value);
}

// Prefetches for writing, at the insertion point, every line of the tile `write` stores when
// it addresses `source` at `tileIndices`.
void prefetchTileLines(mlir::RewriterBase& rewriter, mlir::vector::TransferWriteOp write, mlir::Value source,
                       llvm::ArrayRef<mlir::Value> tileIndices) {
  const auto memref = llvm::cast<mlir::MemRefType>(source.getType());
  const mlir::VectorType vector = write.getVectorType();
  const mlir::AffineMap map = write.getPermutationMap();
  const unsigned rowDim = map.getDimPosition(0), columnDim = map.getDimPosition(1);
  const int64_t lineElements = 64 * 8 / memref.getElementTypeBitWidth();
  const mlir::Location loc = write.getLoc();
  for (int64_t r = 0; r < vector.getDimSize(0); ++r)
    for (int64_t c = 0; c < vector.getDimSize(1); c += lineElements) {
      llvm::SmallVector<mlir::Value> indices(tileIndices.begin(), tileIndices.end());
      auto offset = [&](unsigned d, int64_t by) {
        if (by == 0) return;
        mlir::Value step = rewriter.create<mlir::arith::ConstantIndexOp>(loc, by);
        indices[d] = rewriter.create<mlir::arith::AddIOp>(loc, indices[d], step);
      };
      offset(rowDim, r);
      offset(columnDim, c);
      rewriter.create<mlir::memref::PrefetchOp>(loc, source, indices, /*isWrite=*/true,
                                                /*localityHint=*/3, /*isDataCache=*/true);
    }
}

// Output tiles of register tiles are prefetched for writing, in two cases:
// - A tile that accumulates into its output reads it before its reduction loop, and once the
//   output is larger than L2 (dense at d = 4096: a 4 MB row tile of y, re-read for every block
//   of the reduction; a 64 MB sum of dW carried over row tiles) those reads wait on L3. So the
//   tile that the enclosing loop's next iteration reads is prefetched before this tile's
//   reduction loop, a whole tile of FMAs early (dense at d = 4096 on a Xeon: forward and
//   backward 7-8% faster).
// - A tile that starts from zeros in registers never reads its output, so its final stores
//   miss L1 and wait in the store buffer, where the next tile's loads of rows at the same
//   offset modulo 4 KiB (BTT's rows are 4 KiB apart) stall behind them. Its own output lines
//   are prefetched before its reduction loop. (Prefetching the next tile's too made BTT at
//   d = 1024, whose tiles reduce over only 32 elements, slower.)
void prefetchAccumulatorTiles(mlir::ModuleOp module) {
  llvm::SmallVector<mlir::vector::TransferWriteOp> writes;
  module.walk([&](mlir::vector::TransferWriteOp write) { writes.push_back(write); });
  mlir::IRRewriter rewriter(module.getContext());
  for (mlir::vector::TransferWriteOp write : writes) {
    auto result = llvm::dyn_cast<mlir::OpResult>(write.getVector());
    auto loop = result ? llvm::dyn_cast<mlir::scf::ForOp>(result.getOwner()) : mlir::scf::ForOp();
    const auto memref = llvm::dyn_cast<mlir::MemRefType>(write.getSource().getType());
    if (!loop || !memref || write.getVectorType().getRank() != 2 || loop->getBlock() != write->getBlock()) continue;
    const mlir::AffineMap map = write.getPermutationMap();
    if (!map.isProjectedPermutation() || map.getNumResults() != 2) continue;
    auto available = [&](mlir::Value v) {
      mlir::Operation* def = v.getDefiningOp();
      return !def || def->getBlock() != loop->getBlock() || def->isBeforeInBlock(loop);
    };
    if (!available(write.getSource()) || !llvm::all_of(write.getIndices(), available)) continue;
    const mlir::Value init = loop.getInitArgs()[result.getResultNumber()];
    const bool readsOutput = init.getDefiningOp<mlir::vector::TransferReadOp>() != nullptr;
    const mlir::Location loc = write.getLoc();
    rewriter.setInsertionPoint(loop);
    const llvm::SmallVector<mlir::Value> indices(write.getIndices().begin(), write.getIndices().end());
    if (!readsOutput) {
      prefetchTileLines(rewriter, write, write.getSource(), indices);
      continue;
    }
    auto outer = llvm::dyn_cast<mlir::scf::ForOp>(loop->getParentOp());
    if (!outer) continue;
    // The next iteration's tile, if there is one: the prefetch of an address past the output
    // would not fault, but it is not a valid memref access either.
    auto nextIv = rewriter.create<mlir::arith::AddIOp>(loc, outer.getInductionVar(), outer.getStep());
    auto hasNext = rewriter.create<mlir::arith::CmpIOp>(loc, mlir::arith::CmpIPredicate::slt, nextIv,
                                                        outer.getUpperBound());
    auto guard = rewriter.create<mlir::scf::IfOp>(loc, hasNext, /*withElseRegion=*/false);
    rewriter.setInsertionPointToStart(guard.thenBlock());
    mlir::IRMapping next;
    next.map(outer.getInductionVar(), nextIv);
    mlir::Value source = atNextIteration(rewriter, outer, write.getSource(), next);
    llvm::SmallVector<mlir::Value> nextIndices;
    for (mlir::Value index : indices) nextIndices.push_back(source ? atNextIteration(rewriter, outer, index, next) : nullptr);
    if (!source || llvm::is_contained(nextIndices, nullptr)) {
      rewriter.eraseOp(guard);  // with whatever it cloned
      rewriter.eraseOp(hasNext);
      rewriter.eraseOp(nextIv);
      continue;
    }
    prefetchTileLines(rewriter, write, source, nextIndices);
  }
}

}  // namespace

void lowerToLLVMDialect(mlir::ModuleOp module) {
  mlir::MLIRContext* context = module.getContext();
  computeRowTilesInPlace(module);
  {
    mlir::PassManager pm(context);
    pm.addPass(mlir::bufferization::createEmptyTensorEliminationPass());
    mlir::bufferization::OneShotBufferizationOptions options;
    options.allowReturnAllocsFromLoops = true;
    pm.addPass(mlir::bufferization::createOneShotBufferizePass(options));
    pm.addPass(mlir::createCanonicalizerPass());
    pm.addPass(mlir::createCSEPass());
    pm.addNestedPass<mlir::func::FuncOp>(mlir::bufferization::createBufferLoopHoistingPass());
    mlir::bufferization::BufferDeallocationPipelineOptions deallocation;
    mlir::bufferization::buildBufferDeallocationPipeline(pm, deallocation);
    pm.addPass(mlir::createCanonicalizerPass());
    runPasses(module, pm, "bufferization");
  }
  replaceMemrefCopies(module);
  prefetchAccumulatorTiles(module);
  lowerVectorOps(module);
  {
    mlir::PassManager pm(context);
    pm.addPass(mlir::createCanonicalizerPass());
    pm.addPass(mlir::createCSEPass());
    mlir::VectorTransferToSCFOptions toScf;
    toScf.enableFullUnroll(true);
    pm.addPass(mlir::createConvertVectorToSCFPass(toScf));
    pm.addPass(mlir::createConvertLinalgToLoopsPass());
    pm.addPass(mlir::memref::createExpandStridedMetadataPass());
    pm.addPass(mlir::createLowerAffinePass());
    pm.addPass(mlir::createConvertSCFToCFPass());
    pm.addPass(mlir::createConvertVectorToLLVMPass());
    mlir::FinalizeMemRefToLLVMConversionPassOptions memrefs;
    memrefs.useGenericFunctions = true;  // the kernel's buffers come from KernelScratch.h
    pm.addPass(mlir::createFinalizeMemRefToLLVMConversionPass(memrefs));
    pm.addPass(mlir::createArithToLLVMConversionPass());
    pm.addPass(mlir::createConvertIndexToLLVMPass());
    pm.addPass(mlir::createConvertControlFlowToLLVMPass());
    pm.addPass(mlir::createConvertFuncToLLVMPass());
    pm.addPass(mlir::createReconcileUnrealizedCastsPass());
    pm.addPass(mlir::createCanonicalizerPass());
    runPasses(module, pm, "lowering to the LLVM dialect");
  }
}

std::unique_ptr<llvm::Module> translateToLLVMIR(mlir::ModuleOp module, llvm::LLVMContext& context,
                                                const KernelProgram& program) {
  std::unique_ptr<llvm::Module> llvmModule = mlir::translateModuleToLLVMIR(module, context, program.name);
  if (!llvmModule) throw UserError("cpu codegen: translation to LLVM IR failed");
  llvm::Function* body = llvmModule->getFunction(kBodySymbol);
  if (!body) throw UserError("cpu codegen: the kernel body is missing after lowering");

  // The body takes each memref expanded (allocated and aligned pointer, offset, sizes, strides)
  // and the row count; the entry point rebuilds those from one pointer per buffer.
  body->setLinkage(llvm::GlobalValue::InternalLinkage);
  body->addFnAttr(llvm::Attribute::AlwaysInline);
  llvm::Type* ptrType = llvm::PointerType::getUnqual(context);
  llvm::Type* i64 = llvm::Type::getInt64Ty(context);
  auto* entry = llvm::Function::Create(
      llvm::FunctionType::get(llvm::Type::getVoidTy(context), {ptrType, i64}, false),
      llvm::GlobalValue::ExternalLinkage, kEntrySymbol, llvmModule.get());
  llvm::Argument* buffers = entry->getArg(0);
  llvm::Argument* rows = entry->getArg(1);
  buffers->setName("buffers");
  rows->setName("rows");
  llvm::IRBuilder<> b(llvm::BasicBlock::Create(context, "entry", entry));

  std::vector<ir::ValueId> ids = program.inputs;
  ids.insert(ids.end(), program.outputs.begin(), program.outputs.end());
  std::vector<llvm::Value*> args;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const Shape& shape = program.values[ids[i]].shape;
    llvm::Value* slot = b.CreateConstGEP1_64(ptrType, buffers, i);
    llvm::Value* pointer = b.CreateLoad(ptrType, slot);
    // Buffers do not overlap (CpuCodegen.h): tell LLVM through the aligned pointer.
    body->addParamAttr(static_cast<unsigned>(args.size() + 1), llvm::Attribute::NoAlias);
    args.push_back(pointer);
    args.push_back(pointer);
    args.push_back(b.getInt64(0));
    for (int64_t d : shape) args.push_back(d == ir::kRows ? static_cast<llvm::Value*>(rows) : b.getInt64(d));
    std::vector<int64_t> strides(shape.size(), 1);
    for (std::size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
    for (int64_t stride : strides) args.push_back(b.getInt64(stride));
  }
  args.push_back(rows);
  if (args.size() != body->arg_size())
    throw UserError("cpu codegen: the kernel body has an unexpected signature");
  b.CreateCall(body, args);
  b.CreateRetVoid();
  return llvmModule;
}

}  // namespace einjit::cpu::detail
