// KernelProgram -> one func on tensors, in destination-passing style:
//
//   func.func @einjit_body(%in0: memref<?x1024xf32>, ..., %out0: memref<?x1024xf32>, %rows: index)
//     %x = bufferization.to_tensor %in0 restrict
//     ... linalg.generic / tensor.expand_shape / linalg.transpose / tensor.pad ...
//     bufferization.materialize_in_destination %y in restrict writable %out0
//
// Contract -> linalg.generic (ContractionDims gives the loop dims and maps; accumulation into a
// zero linalg.fill), Reshape -> collapse/expand_shape, Permute -> linalg.transpose, Pad ->
// tensor.pad with 0, Truncate -> tensor.extract_slice, Add -> elementwise linalg.generic.
//
// With a Layout (CodegenStages.h), ops whose values carry the row axis run inside scf.for
// loops over row tiles of static heights; contractions that sum over the
// rows (parameter gradients) accumulate into loop-carried tensors, as GEMMs over operands packed
// into panels per row tile where their dims allow; ops on parameters alone run
// before the loops, ops on the summed results after them; parameters that a row-loop
// contraction would walk with a long stride are packed into panels before the loops.
#include <algorithm>
#include <array>
#include <map>
#include <numeric>
#include <optional>

#include "compiler/mlir/CodegenStages.h"
#include "compiler/mlir/ContractionDims.h"
#include "einjit/error.h"
#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"

namespace einjit::cpu::detail {
namespace {

using mlir::Value;

bool hasRows(const Shape& shape) { return !shape.empty() && shape[0] == ir::kRows; }

// Where an op runs relative to the row loop.
enum class Phase { BeforeLoop, InLoop, AfterLoop };

class MLIRGenImpl {
 public:
  MLIRGenImpl(mlir::MLIRContext& context, const KernelProgram& program)
      : context(context), builder(&context), program(program) {}

  mlir::OwningOpRef<mlir::ModuleOp> generate(const Layout& chosen) {
    validate();
    layout = chosen;
    elementType = program.dtype == DType::F64 ? mlir::Type(builder.getF64Type())
                                               : mlir::Type(builder.getF32Type());
    auto module = mlir::ModuleOp::create(mlir::FileLineColLoc::get(&context, program.name, 0, 0));
    builder.setInsertionPointToEnd(module.getBody());

    std::vector<mlir::Type> argTypes;
    for (ir::ValueId id : program.inputs) argTypes.push_back(memrefType(id));
    for (ir::ValueId id : program.outputs) argTypes.push_back(memrefType(id));
    argTypes.push_back(builder.getIndexType());
    auto func = builder.create<mlir::func::FuncOp>(module.getLoc(), kBodySymbol,
                                                   builder.getFunctionType(argTypes, {}));
    mlir::Block* entry = func.addEntryBlock();
    builder.setInsertionPointToStart(entry);
    const std::size_t numInputs = program.inputs.size();
    rowCount = entry->getArgument(static_cast<unsigned>(argTypes.size() - 1));
    tensorOf.assign(program.values.size(), Value());
    for (std::size_t i = 0; i < numInputs; ++i) {
      const ir::ValueId id = program.inputs[i];
      tensorOf[id] = builder.create<mlir::bufferization::ToTensorOp>(
          loc(id), entry->getArgument(static_cast<unsigned>(i)), /*restrict=*/true);
    }
    auto outputArg = [&](std::size_t k) { return entry->getArgument(static_cast<unsigned>(numInputs + k)); };

    std::vector<Phase> phase;
    if (!layout.rowTiles.empty() && planPhases(phase)) {
      generateTiled(phase, layout.rowTiles, outputArg);
    } else {
      for (std::size_t k = 0; k < program.ops.size(); ++k) emitOp(k);
      for (std::size_t k = 0; k < program.outputs.size(); ++k)
        materialize(tensorOf[program.outputs[k]], outputArg(k), program.outputs[k]);
    }
    builder.create<mlir::func::ReturnOp>(module.getLoc());

    if (mlir::failed(mlir::verify(module)))
      throw UserError("cpu codegen: the generated MLIR of '" + program.name + "' does not verify");
    return module;
  }

 private:
  mlir::MLIRContext& context;
  mlir::OpBuilder builder;
  const KernelProgram& program;
  mlir::Type elementType;
  std::vector<Value> tensorOf;  // value id -> its tensor in the current scope
  Value rowCount;               // index: the row extent of the current scope
  int64_t rowHeight = 0;        // that extent when it is static (inside a row tile), else 0
  Layout layout;
  mlir::Operation* firstRowLoop = nullptr;  // packed parameters go right before it
  std::vector<bool> invariant;              // value id -> available before the row loops
  std::map<std::string, Value> packed;      // parameters packed into panels, by use

  [[noreturn]] void fail(const std::string& what) const {
    throw UserError("cpu codegen: kernel program '" + program.name + "': " + what);
  }

  const Shape& shapeOf(ir::ValueId id) const { return program.values[id].shape; }

  // checkKernelProgram covers ids, definition order, shapes and equations; the rest is what
  // this generator cannot express.
  void validate() const {
    checkKernelProgram(program);
    for (const ir::Op& op : program.ops)
      if (op.kind == ir::OpKind::Contract && op.inputs.empty()) fail("a contraction without operands");
  }

  // --- types and locations -------------------------------------------------------------------

  llvm::SmallVector<int64_t> mlirShape(const Shape& shape) const {
    llvm::SmallVector<int64_t> dims;
    for (int64_t d : shape)
      dims.push_back(d != ir::kRows ? d : rowHeight > 0 ? rowHeight : mlir::ShapedType::kDynamic);
    return dims;
  }
  mlir::RankedTensorType tensorType(const Shape& shape) const {
    return mlir::RankedTensorType::get(mlirShape(shape), elementType);
  }
  mlir::MemRefType memrefType(ir::ValueId id) const {
    return mlir::MemRefType::get(mlirShape(shapeOf(id)), elementType);
  }
  // The value's name, inside "<program>:<op number>" (0 for inputs).
  mlir::Location loc(ir::ValueId id, int opNumber = 0) {
    return mlir::NameLoc::get(builder.getStringAttr(program.values[id].name),
                              mlir::FileLineColLoc::get(&context, program.name, opNumber, 1));
  }
  Value emptyTensor(mlir::Location where, const Shape& shape) {
    llvm::SmallVector<Value> dynamic;
    if (hasRows(shape) && rowHeight == 0) dynamic.push_back(rowCount);
    return builder.create<mlir::tensor::EmptyOp>(where, mlirShape(shape), elementType, dynamic);
  }
  Value zeroTensor(mlir::Location where, const Shape& shape) {
    Value zero = builder.create<mlir::arith::ConstantOp>(where, builder.getZeroAttr(elementType));
    return builder.create<mlir::linalg::FillOp>(where, zero, emptyTensor(where, shape)).getResult(0);
  }
  llvm::SmallVector<mlir::OpFoldResult> sizesOf(const Shape& shape) {
    llvm::SmallVector<mlir::OpFoldResult> sizes;
    for (int64_t d : shape)
      sizes.push_back(d != ir::kRows  ? builder.getIndexAttr(d)
                      : rowHeight > 0 ? builder.getIndexAttr(rowHeight)
                                      : mlir::OpFoldResult(rowCount));
    return sizes;
  }
  void materialize(Value tensor, Value destination, ir::ValueId id) {
    auto op = builder.create<mlir::bufferization::MaterializeInDestinationOp>(loc(id), tensor,
                                                                              destination);
    op.setRestrict(true);
    op.setWritable(true);
  }

  // --- the row loop --------------------------------------------------------------------------

  // Phase of every op; false if the program cannot run as one row loop (a value summed over
  // the rows feeding back into per-row work, or a row extent that changes).
  bool planPhases(std::vector<Phase>& phase) const {
    std::vector<Phase> available(program.values.size(), Phase::BeforeLoop);
    for (ir::ValueId id : program.inputs)
      if (hasRows(shapeOf(id))) available[id] = Phase::InLoop;
    bool anyInLoop = false;
    for (const ir::Op& op : program.ops) {
      Phase inputs = Phase::BeforeLoop;
      bool rowInput = false;
      for (ir::ValueId id : op.inputs) {
        inputs = std::max(inputs, available[id]);
        rowInput = rowInput || available[id] == Phase::InLoop;
      }
      const bool rowResult = hasRows(shapeOf(op.result));
      if (inputs == Phase::BeforeLoop) {
        if (rowResult) return false;
        phase.push_back(Phase::BeforeLoop);
        available[op.result] = Phase::BeforeLoop;
      } else if (inputs == Phase::InLoop) {
        if (!rowResult && op.kind != ir::OpKind::Contract) return false;
        phase.push_back(Phase::InLoop);
        available[op.result] = rowResult ? Phase::InLoop : Phase::AfterLoop;
        anyInLoop = true;
      } else {
        if (rowInput || rowResult) return false;
        phase.push_back(Phase::AfterLoop);
        available[op.result] = Phase::AfterLoop;
      }
    }
    return anyInLoop;
  }

  // The row-parallel ops run in loops over row tiles of static heights (say 256, then 8, then
  // 1 row), each loop starting where the previous one ended, so every tile has static shapes
  // and the schedule never needs masks.
  template <class OutputArg>
  void generateTiled(const std::vector<Phase>& phase, const std::vector<int64_t>& tileHeights,
                     OutputArg outputArg) {
    const mlir::Location loopLoc = mlir::NameLoc::get(builder.getStringAttr("row_loop"));
    invariant.assign(program.values.size(), false);
    for (ir::ValueId id : program.inputs) invariant[id] = !hasRows(shapeOf(id));
    for (std::size_t k = 0; k < program.ops.size(); ++k) {
      if (phase[k] != Phase::BeforeLoop) continue;
      emitOp(k);
      invariant[program.ops[k].result] = true;
    }

    // Loop-carried: every row output (written tile by tile into its buffer), then every sum
    // over the rows (starting from zero).
    std::vector<std::size_t> rowOutputs;
    std::vector<std::size_t> accumulatedOps;
    llvm::SmallVector<Value> carried;
    for (std::size_t k = 0; k < program.outputs.size(); ++k) {
      const ir::ValueId id = program.outputs[k];
      if (!hasRows(shapeOf(id))) continue;
      rowOutputs.push_back(k);
      carried.push_back(builder.create<mlir::bufferization::ToTensorOp>(loc(id), outputArg(k),
                                                                        /*restrict=*/true,
                                                                        /*writable=*/true));
    }
    for (std::size_t k = 0; k < program.ops.size(); ++k) {
      const ir::Op& op = program.ops[k];
      if (phase[k] != Phase::InLoop || hasRows(shapeOf(op.result))) continue;
      accumulatedOps.push_back(k);
      std::optional<RowSumGemm> gemm = planRowSumGemm(op);
      const Shape& shape = gemm ? gemm->carriedShape : shapeOf(op.result);
      carried.push_back(zeroTensor(loc(op.result, static_cast<int>(k) + 1), shape));
      if (gemm) rowSums.emplace(k, std::move(*gemm));
    }

    const Value fullRows = rowCount;
    const std::vector<Value> fullTensors = tensorOf;
    Value begin = builder.create<mlir::arith::ConstantIndexOp>(loopLoc, 0);
    for (int64_t height : tileHeights) {
      // This loop covers [begin, end) with end = rows rounded down to a multiple of height.
      Value step = builder.create<mlir::arith::ConstantIndexOp>(loopLoc, height);
      Value end = builder.create<mlir::arith::MulIOp>(
          loopLoc, builder.create<mlir::arith::DivUIOp>(loopLoc, fullRows, step), step);
      auto loop = builder.create<mlir::scf::ForOp>(loopLoc, begin, end, step, carried);
      if (!firstRowLoop) firstRowLoop = loop;
      mlir::OpBuilder::InsertionGuard guard(builder);
      builder.setInsertionPointToStart(loop.getBody());
      emitRowTile(phase, loop, height, fullTensors, rowOutputs, accumulatedOps);
      builder.setInsertionPointAfter(loop);
      carried.assign(loop.getResults().begin(), loop.getResults().end());
      begin = end;
    }

    // After the loops: whole tensors again (planPhases guarantees that nothing after the loops
    // reads a row tile).
    rowCount = fullRows;
    rowHeight = 0;
    tensorOf = fullTensors;
    for (std::size_t a = 0; a < accumulatedOps.size(); ++a) {
      const std::size_t k = accumulatedOps[a];
      const ir::ValueId result = program.ops[k].result;
      const Value sum = carried[rowOutputs.size() + a];
      const auto gemm = rowSums.find(k);
      tensorOf[result] = gemm == rowSums.end()
                             ? sum
                             : unpackRowSum(loc(result, static_cast<int>(k) + 1), gemm->second, sum, shapeOf(result));
    }
    for (std::size_t k = 0; k < program.ops.size(); ++k)
      if (phase[k] == Phase::AfterLoop) emitOp(k);
    for (std::size_t r = 0; r < rowOutputs.size(); ++r) {
      const std::size_t k = rowOutputs[r];
      materialize(carried[r], outputArg(k), program.outputs[k]);
    }
    for (std::size_t k = 0; k < program.outputs.size(); ++k)
      if (!hasRows(shapeOf(program.outputs[k])))
        materialize(tensorOf[program.outputs[k]], outputArg(k), program.outputs[k]);
  }

  // The body of a row loop: the in-loop ops on one tile of `height` rows.
  void emitRowTile(const std::vector<Phase>& phase, mlir::scf::ForOp loop, int64_t height,
                   const std::vector<Value>& fullTensors, const std::vector<std::size_t>& rowOutputs,
                   const std::vector<std::size_t>& accumulatedOps) {
    const Value row0 = loop.getInductionVar();
    rowCount = builder.create<mlir::arith::ConstantIndexOp>(loop.getLoc(), height);
    rowHeight = height;
    tensorOf = fullTensors;
    auto tileOffsets = [&](const Shape& shape) {
      llvm::SmallVector<mlir::OpFoldResult> offsets(shape.size(), builder.getIndexAttr(0));
      offsets[0] = row0;
      return offsets;
    };
    auto unitStrides = [&](const Shape& shape) {
      return llvm::SmallVector<mlir::OpFoldResult>(shape.size(), builder.getIndexAttr(1));
    };
    for (ir::ValueId id : program.inputs) {
      const Shape& shape = shapeOf(id);
      if (!hasRows(shape)) continue;
      tensorOf[id] = builder.create<mlir::tensor::ExtractSliceOp>(
          loc(id), tensorType(shape), fullTensors[id], tileOffsets(shape),
          sizesOf(shape), unitStrides(shape));
    }
    const std::size_t numRowOutputs = rowOutputs.size();
    for (std::size_t k = 0; k < program.ops.size(); ++k) {
      if (phase[k] != Phase::InLoop) continue;
      const auto acc = std::find(accumulatedOps.begin(), accumulatedOps.end(), k);
      emitOp(k, acc == accumulatedOps.end()
                    ? Value()
                    : loop.getRegionIterArg(static_cast<unsigned>(numRowOutputs + (acc - accumulatedOps.begin()))));
    }
    llvm::SmallVector<Value> yields;
    for (std::size_t r = 0; r < numRowOutputs; ++r) {
      const ir::ValueId id = program.outputs[rowOutputs[r]];
      const Shape& shape = shapeOf(id);
      yields.push_back(builder.create<mlir::tensor::InsertSliceOp>(
          loc(id), tensorOf[id], loop.getRegionIterArg(static_cast<unsigned>(r)), tileOffsets(shape),
          sizesOf(shape), unitStrides(shape)));
    }
    for (std::size_t k : accumulatedOps) yields.push_back(tensorOf[program.ops[k].result]);
    builder.create<mlir::scf::YieldOp>(loop.getLoc(), yields);
  }

  // --- ops -----------------------------------------------------------------------------------

  // Emits op k; `accumulator` (a contraction summing over the rows inside the row loop) is the
  // tensor it adds into instead of a fresh zero tensor.
  void emitOp(std::size_t k, Value accumulator = Value()) {
    const ir::Op& op = program.ops[k];
    const mlir::Location where = loc(op.result, static_cast<int>(k) + 1);
    Value result;
    switch (op.kind) {
      case ir::OpKind::Contract:
        if (const auto gemm = rowSums.find(k); accumulator && gemm != rowSums.end())
          result = emitRowSumGemm(op, gemm->second, where, accumulator);
        else
          result = emitContract(op, where, accumulator);
        break;
      case ir::OpKind::Reshape: result = emitReshape(op, where); break;
      case ir::OpKind::Permute: result = emitPermute(op, where); break;
      case ir::OpKind::Pad: result = emitPad(op, where); break;
      case ir::OpKind::Truncate: result = emitTruncate(op, where); break;
      case ir::OpKind::Add: result = emitAdd(op, where); break;
      default: fail(std::string("op kind ") + ir::opKindName(op.kind) + " cannot be compiled");
    }
    tensorOf[op.result] = result;
  }

  // Collapses (or, inverse, expands) `value` along `groups` when they merge dims.
  Value collapse(mlir::Location where, Value value, const OperandAccess& access) {
    if (!access.mergesDims()) return value;
    llvm::SmallVector<mlir::ReassociationIndices> reassociation;
    for (const auto& group : access.groups)
      reassociation.push_back(mlir::ReassociationIndices(group.begin(), group.end()));
    return builder.create<mlir::tensor::CollapseShapeOp>(where, value, reassociation);
  }
  Value expand(mlir::Location where, Value value, const OperandAccess& access, const Shape& shape) {
    if (!access.mergesDims()) return value;
    llvm::SmallVector<mlir::ReassociationIndices> reassociation;
    for (const auto& group : access.groups)
      reassociation.push_back(mlir::ReassociationIndices(group.begin(), group.end()));
    return builder.create<mlir::tensor::ExpandShapeOp>(where, tensorType(shape), value, reassociation,
                                                       sizesOf(shape));
  }

  // A loop dim V split into V/width panels: the parameter operand that V indexes is packed
  // once, before the row loops, so that each panel (every other dim x `width` columns of V)
  // is contiguous; the contraction then runs panel by panel (a new outer loop dim over panels).
  struct PanelSplit {
    int loop = -1;      // V: the innermost output dim
    int operand = -1;   // the input V indexes, available before the row loops
    int64_t width = 0;  // 0: no split
  };

  // Columns of a panel along a dim of `size`: a register tile's width (two vector registers),
  // else one vector register; if neither divides it, the whole dim when it is wider than one
  // register and at most 256 bytes wide (one panel: a permutation making it contiguous, so
  // BTT's input gradient at d = 1088, a = 34 floats, still gets it innermost); else 0. The
  // bound is in bytes, not registers: with AVX2's 8-float registers a bound of two register
  // tiles (32 floats) left a = 34 out, and its register tiles one float wide.
  int64_t panelWidth(int64_t size) const {
    constexpr int64_t kWholePanelBytes = 256;
    for (int64_t width : {layout.packWidth, layout.packWidth / 2})
      if (width > 0 && size % width == 0) return width;
    if (layout.packWidth > 0 && size > layout.packWidth / 2 &&
        size * static_cast<int64_t>(dtypeSize(program.dtype)) <= kWholePanelBytes)
      return size;
    return 0;
  }

  PanelSplit choosePanels(const ir::Op& op, const ContractionDims& dims) const {
    PanelSplit split;
    if (layout.packWidth <= 0 || !firstRowLoop || dims.output.loopDim.empty()) return split;
    const int v = dims.output.loopDim.back();
    const LoopDim& loop = dims.loops[v];
    const int64_t width = loop.dynamic ? 0 : panelWidth(loop.size);
    if (width == 0) return split;
    int operand = -1;
    for (std::size_t i = 0; i < op.inputs.size(); ++i) {
      const auto& loopDims = dims.inputs[i].loopDim;
      if (std::count(loopDims.begin(), loopDims.end(), v) == 0) continue;
      if (operand >= 0 || std::count(loopDims.begin(), loopDims.end(), v) > 1) return split;
      operand = static_cast<int>(i);
    }
    if (operand < 0 || !invariant[op.inputs[operand]]) return split;
    const auto& loopDims = dims.inputs[operand].loopDim;
    if (loopDims.size() < 2) return split;
    // Worth it unless V is contiguous and one panel wide already: a panel walked down the
    // reduction through longer rows takes a few lines per row at a power-of-two stride, which
    // crowd into a few L1 sets (BTT's W1 at d = 4096, rows of 64 floats: +15% forward).
    const bool contiguous = loopDims.back() == v;
    // A whole-dim panel of a contiguous dim would copy the operand unchanged.
    if (contiguous && (loop.size <= layout.packWidth || width == loop.size)) return split;
    return PanelSplit{v, operand, width};
  }

  // operand (collapsed, V at position j) -> (V/width, other dims..., width), before the loops.
  Value packPanels(mlir::Location where, ir::ValueId id, const OperandAccess& access, int j, int64_t width,
                   const std::string& key) {
    if (auto found = packed.find(key); found != packed.end()) return found->second;
    mlir::OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPoint(firstRowLoop);
    Value value = collapse(where, tensorOf[id], access);
    Shape split;
    llvm::SmallVector<mlir::ReassociationIndices> reassociation;
    for (std::size_t k = 0; k < access.collapsedShape.size(); ++k) {
      const int64_t at = static_cast<int64_t>(split.size());
      if (static_cast<int>(k) == j) {
        split.push_back(access.collapsedShape[k] / width);
        split.push_back(width);
        reassociation.push_back({at, at + 1});
      } else {
        split.push_back(access.collapsedShape[k]);
        reassociation.push_back({at});
      }
    }
    value = builder.create<mlir::tensor::ExpandShapeOp>(where, tensorType(split), value, reassociation,
                                                        sizesOf(split));
    llvm::SmallVector<int64_t> perm{j};
    for (int64_t d = 0; d < static_cast<int64_t>(split.size()); ++d)
      if (d != j && d != j + 1) perm.push_back(d);
    perm.push_back(j + 1);
    Shape panels;
    for (int64_t d : perm) panels.push_back(split[d]);
    value = builder.create<mlir::linalg::TransposeOp>(where, value, emptyTensor(where, panels), perm)
                .getResult()[0];
    packed.emplace(key, value);
    return value;
  }

  // --- sums over the rows -------------------------------------------------------------------

  // A contraction that sums over the rows inside the row loop (a parameter gradient,
  // dW[b, m, n] = sum_z A[z, b, m] B[z, b, n], with b the dims both operands index and m, n
  // those only one does) runs as a GEMM with the rows as K. Per row tile both operands are
  // packed into panels, A_p[b, m / mr, z, mr] and B_p[b, n / nr, z, nr], so a register tile of
  // mr x nr walks both contiguously down the rows; the sum is carried from tile to tile in a
  // layout of whole register tiles, (b, n / nr, m / mr, mr, nr), and put into the declared
  // order once, after the loops. Several m (n) dims stay separate dims; the last is split.
  // The N tiles are the outer loop (the schedule walks the carried dims in order): a B panel
  // (nr = 32 wide) then stays in L1 while the narrower A panels (mr = 8) stream past it, and
  // the sum's tiles are still visited in memory order (dense's dW at d = 4096 with 256-row
  // tiles: backward 15% faster than with the M tiles outside).
  struct RowSumGemm {
    ContractionDims dims;
    std::array<int, 2> input{};            // the input supplying M, the one supplying N
    std::vector<int> batch;                // loop dims both inputs index, in output order
    std::array<std::vector<int>, 2> own;   // M, N loop dims (the last one is split)
    std::array<int64_t, 2> tile{};         // mr, nr
    Shape carriedShape;
  };
  std::map<std::size_t, RowSumGemm> rowSums;  // by op index
  static constexpr std::array<int, 2> kCarriedRoleOrder{1, 0};  // N's tiles outside M's

  // The split of an M (role 0) or N (role 1) dim of `size`: register rows, or a panel width.
  int64_t rowSumTile(int role, int64_t size) const {
    const int64_t limit = role == 0 ? layout.registerRows : layout.packWidth;
    return size % limit == 0 ? limit : largestDivisor(size, limit);
  }

  std::optional<RowSumGemm> planRowSumGemm(const ir::Op& op) const {
    if (op.inputs.size() != 2 || layout.packWidth <= 0 || layout.registerRows <= 0) return std::nullopt;
    std::vector<Shape> inputShapes;
    for (ir::ValueId id : op.inputs) inputShapes.push_back(shapeOf(id));
    RowSumGemm plan;
    plan.dims = analyzeContraction(op.equation, inputShapes, shapeOf(op.result));
    const ContractionDims& dims = plan.dims;
    const int rows = dims.rowLoop;
    const std::size_t numLoops = dims.loops.size();
    if (rows < 0 || !dims.loops[rows].reduction) return std::nullopt;
    for (std::size_t d = 0; d < numLoops; ++d)
      if (dims.loops[d].reduction && static_cast<int>(d) != rows) return std::nullopt;
    // No diagonals or broadcasts: every dim of an input is its own loop dim.
    std::array<std::vector<bool>, 2> uses;
    for (std::size_t i = 0; i < 2; ++i) {
      uses[i].assign(numLoops, false);
      for (int loopDim : dims.inputs[i].loopDim) {
        if (loopDim < 0 || uses[i][loopDim]) return std::nullopt;
        uses[i][loopDim] = true;
      }
      if (!uses[i][rows]) return std::nullopt;
    }
    std::array<std::vector<int>, 2> ownOf;  // by input
    for (int loopDim : dims.output.loopDim) {
      if (loopDim < 0) return std::nullopt;
      if (uses[0][loopDim] && uses[1][loopDim])
        plan.batch.push_back(loopDim);
      else
        ownOf[uses[0][loopDim] ? 0 : 1].push_back(loopDim);
    }
    if (ownOf[0].empty() || ownOf[1].empty()) return std::nullopt;

    // The dim of input i to split for `role`: the input's innermost dim when it splits into
    // full tiles (the packing then copies whole vectors), else the one with the largest tile.
    auto splitDim = [&](std::size_t i, int role) {
      const int innermost = dims.inputs[i].loopDim.back();
      const int64_t full = role == 0 ? layout.registerRows : layout.packWidth;
      int best = -1;
      for (int loopDim : ownOf[i]) {
        const int64_t t = rowSumTile(role, dims.loops[loopDim].size);
        if (loopDim == innermost && t == full) return loopDim;
        if (best < 0 || t > rowSumTile(role, dims.loops[best].size)) best = loopDim;
      }
      return best;
    };
    // Input 0 supplies M unless the other way round gives larger register tiles.
    auto tileArea = [&](std::size_t m) {
      return rowSumTile(0, dims.loops[splitDim(m, 0)].size) * rowSumTile(1, dims.loops[splitDim(1 - m, 1)].size);
    };
    const std::size_t m = tileArea(1) > tileArea(0) ? 1 : 0;
    plan.input = {static_cast<int>(m), static_cast<int>(1 - m)};
    for (int role = 0; role < 2; ++role) {
      const std::size_t i = plan.input[role];
      const int split = splitDim(i, role);
      for (int loopDim : ownOf[i])
        if (loopDim != split) plan.own[role].push_back(loopDim);
      plan.own[role].push_back(split);
      plan.tile[role] = rowSumTile(role, dims.loops[split].size);
    }
    for (int loopDim : plan.batch) plan.carriedShape.push_back(dims.loops[loopDim].size);
    for (int role : kCarriedRoleOrder) {
      for (int loopDim : plan.own[role]) plan.carriedShape.push_back(dims.loops[loopDim].size);
      plan.carriedShape.back() /= plan.tile[role];
    }
    plan.carriedShape.push_back(plan.tile[0]);
    plan.carriedShape.push_back(plan.tile[1]);
    return plan;
  }

  // One dim of a tensor in a row-sum GEMM's layouts: a loop dim, or the outer (tile index) or
  // inner (within the tile) part of a split one.
  enum class Part { Whole, Outer, Inner };
  using PartDim = std::pair<int, Part>;

  // `value` (laid out as `from`, of sizes `shape`) transposed into the order `to`.
  Value reorder(mlir::Location where, Value value, const std::vector<PartDim>& from, const Shape& shape,
                const std::vector<PartDim>& to) {
    llvm::SmallVector<int64_t> perm;
    Shape result;
    for (const PartDim& dim : to) {
      const auto at = std::find(from.begin(), from.end(), dim) - from.begin();
      perm.push_back(at);
      result.push_back(shape[at]);
    }
    bool identity = true;
    for (std::size_t k = 0; k < perm.size(); ++k) identity = identity && perm[k] == static_cast<int64_t>(k);
    if (identity) return value;
    return builder.create<mlir::linalg::TransposeOp>(where, value, emptyTensor(where, result), perm)
        .getResult()[0];
  }

  // Input `role` of a row-sum GEMM, one row tile of it, as panels (batch..., own dims..., last
  // own dim / tile, rows, tile), with its dims in `order`. When the split dim is already the
  // innermost one and few register tiles read the operand, the tile is only reshaped (its
  // register rows or panel are contiguous runs of each row, read in place; a transposing copy
  // would cost as much as those few reads).
  Value packRowSumInput(mlir::Location where, const RowSumGemm& plan, int role, Value tile,
                        std::vector<PartDim>& order) {
    const OperandAccess& access = plan.dims.inputs[plan.input[role]];
    const int split = plan.own[role].back();
    const int64_t width = plan.tile[role];
    Shape expanded;
    std::vector<PartDim> from;
    llvm::SmallVector<mlir::ReassociationIndices> reassociation;
    for (std::size_t k = 0; k < access.loopDim.size(); ++k) {
      const int64_t at = static_cast<int64_t>(expanded.size());
      if (access.loopDim[k] == split) {
        expanded.push_back(access.collapsedShape[k] / width);
        expanded.push_back(width);
        from.push_back({split, Part::Outer});
        from.push_back({split, Part::Inner});
        reassociation.push_back({at, at + 1});
      } else {
        expanded.push_back(access.collapsedShape[k]);
        from.push_back({access.loopDim[k], Part::Whole});
        reassociation.push_back({at});
      }
    }
    Value value = builder.create<mlir::tensor::ExpandShapeOp>(where, tensorType(expanded),
                                                               collapse(where, tile, access), reassociation,
                                                               sizesOf(expanded));
    std::vector<PartDim> panels;
    for (int loopDim : plan.batch) panels.push_back({loopDim, Part::Whole});
    for (int loopDim : plan.own[role]) panels.push_back({loopDim, loopDim == split ? Part::Outer : Part::Whole});
    panels.push_back({plan.dims.rowLoop, Part::Whole});
    panels.push_back({split, Part::Inner});
    // Register tiles of the other operand that read each element: packing pays off only when
    // they are many (dense's dW = x^T dy at d = 1024: 32 panels, packed 15% faster; BTT's
    // gradients at 1 to 4, unpacked ~5% faster), or when the row tiles spill out of L2
    // (Layout::rowTilesSpill; Monarch at d = 4096, 4-row tiles that fit, ran ~5% slower packed).
    int64_t reuse = 1;
    for (int loopDim : plan.own[1 - role]) reuse *= plan.dims.loops[loopDim].size;
    reuse /= plan.tile[1 - role];
    constexpr int64_t kFewReaders = 4;
    if (access.loopDim.back() == split && reuse <= kFewReaders && !layout.rowTilesSpill) {
      order = from;
      return value;
    }
    order = panels;
    Shape sizes = expanded;
    for (int64_t& size : sizes)
      if (size == ir::kRows) size = rowHeight;
    return reorder(where, value, from, sizes, panels);
  }

  // The dims of the carried sum, in order.
  static std::vector<PartDim> carriedDims(const RowSumGemm& plan) {
    std::vector<PartDim> dims;
    for (int loopDim : plan.batch) dims.push_back({loopDim, Part::Whole});
    for (int role : kCarriedRoleOrder)
      for (int loopDim : plan.own[role])
        dims.push_back({loopDim, loopDim == plan.own[role].back() ? Part::Outer : Part::Whole});
    dims.push_back({plan.own[0].back(), Part::Inner});
    dims.push_back({plan.own[1].back(), Part::Inner});
    return dims;
  }

  Value emitRowSumGemm(const ir::Op& op, const RowSumGemm& plan, mlir::Location where, Value accumulator) {
    // Generic loop dims: those of the carried sum, then the rows.
    const std::vector<PartDim> carried = carriedDims(plan);
    const unsigned numLoops = static_cast<unsigned>(carried.size()) + 1;
    const unsigned rowsLoop = numLoops - 1;
    auto loopOf = [&](const PartDim& dim) {
      if (dim.first == plan.dims.rowLoop) return rowsLoop;
      return static_cast<unsigned>(std::find(carried.begin(), carried.end(), dim) - carried.begin());
    };
    auto mapOf = [&](const std::vector<PartDim>& dims) {
      llvm::SmallVector<mlir::AffineExpr> results;
      for (const PartDim& dim : dims) results.push_back(builder.getAffineDimExpr(loopOf(dim)));
      return mlir::AffineMap::get(numLoops, 0, results, &context);
    };
    std::array<Value, 2> packedInputs;
    std::array<mlir::AffineMap, 2> inputMaps;
    for (int role = 0; role < 2; ++role) {
      const int i = plan.input[role];
      std::vector<PartDim> order;
      packedInputs[i] = packRowSumInput(where, plan, role, tensorOf[op.inputs[i]], order);
      inputMaps[i] = mapOf(order);
    }
    llvm::SmallVector<mlir::AffineMap> maps{inputMaps[0], inputMaps[1], mapOf(carried)};
    llvm::SmallVector<mlir::utils::IteratorType> iterators(numLoops, mlir::utils::IteratorType::parallel);
    iterators[rowsLoop] = mlir::utils::IteratorType::reduction;
    auto generic = builder.create<mlir::linalg::GenericOp>(
        where, accumulator.getType(), mlir::ValueRange{packedInputs[0], packedInputs[1]},
        mlir::ValueRange{accumulator}, maps, iterators,
        [&](mlir::OpBuilder& b, mlir::Location bodyLoc, mlir::ValueRange args) {
          Value product = b.create<mlir::arith::MulFOp>(bodyLoc, args[0], args[1]);
          b.create<mlir::linalg::YieldOp>(bodyLoc, Value(b.create<mlir::arith::AddFOp>(bodyLoc, args[2], product)));
        });
    generic->setAttr(kContractionAttr, builder.getUnitAttr());
    generic->setAttr(kRegisterRowsDimAttr,
                     builder.getI64IntegerAttr(loopOf({plan.own[0].back(), Part::Inner})));
    return generic.getResult(0);
  }

  // The carried sum of a row-sum GEMM in the declared layout of the op's result.
  Value unpackRowSum(mlir::Location where, const RowSumGemm& plan, Value sum, const Shape& resultShape) {
    std::vector<PartDim> declared;
    llvm::SmallVector<mlir::ReassociationIndices> merge;
    for (int loopDim : plan.dims.output.loopDim) {
      const int64_t at = static_cast<int64_t>(declared.size());
      if (loopDim == plan.own[0].back() || loopDim == plan.own[1].back()) {
        declared.push_back({loopDim, Part::Outer});
        declared.push_back({loopDim, Part::Inner});
        merge.push_back({at, at + 1});
      } else {
        declared.push_back({loopDim, Part::Whole});
        merge.push_back({at});
      }
    }
    Value value = reorder(where, sum, carriedDims(plan), plan.carriedShape, declared);
    value = builder.create<mlir::tensor::CollapseShapeOp>(where, value, merge);
    return expand(where, value, plan.dims.output, resultShape);
  }

  // When the innermost output dim indexes both operands (a batch dim, like Monarch's block
  // index in 'zrl,lsr->zsl'), a register tile along it would gather the parameter element by
  // element; when it is short, the tile would use part of a vector. Returns the order of the output dims to compute in instead (a transpose then
  // restores the declared order): the widest output dim that only the parameter operand has
  // moved last, if that operand has it contiguous or it can be packed into panels. Empty: keep.
  std::vector<int> vectorFriendlyOutputOrder(const ir::Op& op, const ContractionDims& dims) const {
    const std::vector<int>& outputDims = dims.output.loopDim;
    if (op.inputs.size() != 2 || dims.rowLoop < 0 || !firstRowLoop || outputDims.size() < 2) return {};
    auto uses = [&](std::size_t i, int loopDim) {
      const auto& loopDims = dims.inputs[i].loopDim;
      return std::count(loopDims.begin(), loopDims.end(), loopDim);
    };
    // Also when the innermost output dim is shorter than a panel (BTT's rank in the input
    // gradient 'zcd,card->zacr'): a register tile along it fills only part of a vector.
    const int innermost = outputDims.back();
    const bool batchInnermost = uses(0, innermost) > 0 && uses(1, innermost) > 0;
    const bool shortInnermost = innermost >= 0 && dims.loops[innermost].size < layout.packWidth;
    if (!batchInnermost && !shortInnermost) return {};
    int best = -1;
    for (std::size_t k = 0; k + 1 < outputDims.size(); ++k) {
      const int u = outputDims[k];
      if (u < 0 || u == dims.rowLoop) continue;
      for (std::size_t i = 0; i < 2; ++i) {
        if (uses(i, u) != 1 || uses(1 - i, u) != 0 || !invariant[op.inputs[i]]) continue;
        const bool contiguous = dims.inputs[i].loopDim.back() == u;
        const bool panels = panelWidth(dims.loops[u].size) > 0;
        const bool longer = batchInnermost || dims.loops[u].size > dims.loops[innermost].size;
        if ((contiguous || panels) && longer &&
            (best < 0 || dims.loops[u].size > dims.loops[outputDims[best]].size))
          best = static_cast<int>(k);
      }
    }
    if (best < 0) return {};
    std::vector<int> order;
    for (int k = 0; k < static_cast<int>(outputDims.size()); ++k)
      if (k != best) order.push_back(k);
    order.push_back(best);
    return order;
  }

  // How a contraction of one tile of rows (one operand with the rows, the other without)
  // walks its row operand. Swept down the rows once per tile of the other operand, the row
  // operand is re-read from L2 for every batch and V tile, and when its innermost dim is not
  // a reduction each broadcast takes a cache line for one element (BTT's second core reads
  // t[z, a, c] along a, for each c). Two cures:
  // - BlocksOutside: the register tiles' row blocks become the outermost loop, so a block of
  //   rows stays in L1 while the other operand's tiles are walked. That operand is then
  //   re-read once per block, cheap only while it is small (BTT and Monarch at d = 1024:
  //   forward 30%, backward 20% faster). The schedule reads kRowBlocksOutsideAttr.
  // - ReductionInnermost: a larger other operand (1 MB at d = 4096) keeps its tiles outside,
  //   and the row operand's tile is transposed first so that its reductions are innermost
  //   (BTT and Monarch at d = 4096: forward 30%, backward 10% faster). Where both apply,
  //   blocks outside win: they need no copy (the transpose made d = 1024 20% slower).
  enum class RowOperand { AsIs, BlocksOutside, ReductionInnermost };
  static constexpr int64_t kRereadOperandBytes = 256 << 10;

  std::pair<int, RowOperand> rowOperandPlacement(const ir::Op& op, const ContractionDims& dims) const {
    if (op.inputs.size() != 2 || rowHeight == 0 || dims.rowLoop < 0 || dims.loops[dims.rowLoop].reduction)
      return {-1, RowOperand::AsIs};
    auto hasRowLoop = [&](std::size_t i) {
      const auto& loopDims = dims.inputs[i].loopDim;
      return std::find(loopDims.begin(), loopDims.end(), dims.rowLoop) != loopDims.end();
    };
    if (hasRowLoop(0) == hasRowLoop(1)) return {-1, RowOperand::AsIs};
    const int row = hasRowLoop(0) ? 0 : 1;
    const ir::ValueId other = op.inputs[1 - row];
    if (!invariant[other]) return {-1, RowOperand::AsIs};
    if (shapeNumel(shapeOf(other)) * static_cast<int64_t>(dtypeSize(program.dtype)) <= kRereadOperandBytes)
      return {row, RowOperand::BlocksOutside};
    int innermost = -1;  // the innermost loop dim longer than 1
    for (int loopDim : dims.inputs[row].loopDim)
      if (loopDim >= 0 && dims.loops[loopDim].size > 1) innermost = loopDim;
    if (innermost >= 0 && !dims.loops[innermost].reduction) return {row, RowOperand::ReductionInnermost};
    return {row, RowOperand::AsIs};
  }

  // A row operand (collapsed, one tile of rows) whose reduction dims are not its innermost
  // ones, transposed so that they are: `loopDims` follows. The register tiles then broadcast
  // along contiguous runs instead of taking a line per element.
  Value reductionInnermost(mlir::Location where, Value operand, const ContractionDims& dims,
                           std::vector<int>& loopDims) {
    auto reduces = [&](int loopDim) { return loopDim >= 0 && dims.loops[loopDim].reduction; };
    auto longer = [&](int loopDim) { return loopDim >= 0 && dims.loops[loopDim].size > 1; };
    // The order: every other dim as it was, then the reductions as they were.
    llvm::SmallVector<int64_t> perm;
    for (int pass = 0; pass < 2; ++pass)
      for (int k = 0; k < static_cast<int>(loopDims.size()); ++k)
        if (reduces(loopDims[k]) == (pass == 1)) perm.push_back(k);
    // Only dims longer than 1 matter: already in order if they keep their relative places.
    llvm::SmallVector<int64_t> longBefore, longAfter;
    for (int k = 0; k < static_cast<int>(loopDims.size()); ++k)
      if (longer(loopDims[k])) longBefore.push_back(k);
    for (int64_t k : perm)
      if (longer(loopDims[k])) longAfter.push_back(k);
    if (longBefore == longAfter) return operand;
    const auto type = llvm::cast<mlir::RankedTensorType>(operand.getType());
    Shape shape;
    std::vector<int> permuted;
    for (int64_t k : perm) {
      shape.push_back(type.getDimSize(k));
      permuted.push_back(loopDims[k]);
    }
    loopDims = permuted;
    return builder.create<mlir::linalg::TransposeOp>(where, operand, emptyTensor(where, shape), perm).getResult()[0];
  }

  Value emitContract(const ir::Op& op, mlir::Location where, Value accumulator) {
    std::vector<Shape> inputShapes;
    for (ir::ValueId id : op.inputs) inputShapes.push_back(shapeOf(id));
    const Shape& resultShape = shapeOf(op.result);
    ContractionDims dims = analyzeContraction(op.equation, inputShapes, resultShape);
    // The generic computes the collapsed result with its dims in `outputOrder` (identity when
    // empty); the declared access is kept to expand the result back.
    const OperandAccess declaredOutput = dims.output;
    const std::vector<int> outputOrder = accumulator ? std::vector<int>{} : vectorFriendlyOutputOrder(op, dims);
    for (std::size_t k = 0; k < outputOrder.size(); ++k) {
      dims.output.loopDim[k] = declaredOutput.loopDim[outputOrder[k]];
      dims.output.collapsedShape[k] = declaredOutput.collapsedShape[outputOrder[k]];
    }
    const PanelSplit split = choosePanels(op, dims);
    const auto [rowOperand, placement] = accumulator ? std::pair{-1, RowOperand::AsIs} : rowOperandPlacement(op, dims);
    // With panels, loop dim V covers `width` columns and a new last loop dim the panels.
    const int panelLoop = static_cast<int>(dims.loops.size());
    const unsigned numLoops = static_cast<unsigned>(dims.loops.size()) + (split.width > 0 ? 1 : 0);

    auto dimExpr = [&](int loopDim) {
      return loopDim < 0 ? builder.getAffineConstantExpr(0)
                         : builder.getAffineDimExpr(static_cast<unsigned>(loopDim));
    };
    auto mapOf = [&](const std::vector<int>& loopDims) {
      llvm::SmallVector<mlir::AffineExpr> results;
      for (int loopDim : loopDims) results.push_back(dimExpr(loopDim));
      return mlir::AffineMap::get(numLoops, 0, results, &context);
    };
    llvm::SmallVector<Value> inputs;
    llvm::SmallVector<mlir::AffineMap> maps;
    for (std::size_t i = 0; i < op.inputs.size(); ++i) {
      const OperandAccess& access = dims.inputs[i];
      if (static_cast<int>(i) != split.operand) {
        Value input = collapse(where, tensorOf[op.inputs[i]], access);
        std::vector<int> loopDims = access.loopDim;
        if (placement == RowOperand::ReductionInnermost && static_cast<int>(i) == rowOperand)
          input = reductionInnermost(where, input, dims, loopDims);
        inputs.push_back(input);
        maps.push_back(mapOf(loopDims));
        continue;
      }
      const int j = static_cast<int>(std::find(access.loopDim.begin(), access.loopDim.end(), split.loop) -
                                     access.loopDim.begin());
      inputs.push_back(packPanels(where, op.inputs[i], access, j, split.width,
                                  std::to_string(op.inputs[i]) + ":" + op.equation + ":" + std::to_string(i)));
      std::vector<int> loopDims{panelLoop};
      for (int loopDim : access.loopDim)
        if (loopDim != split.loop) loopDims.push_back(loopDim);
      loopDims.push_back(split.loop);
      maps.push_back(mapOf(loopDims));
    }

    // The result as the generic computes it: collapsed, and with V split into (panels, width).
    std::vector<int> outputDims = dims.output.loopDim;
    Shape outputShape = dims.output.collapsedShape;
    llvm::SmallVector<mlir::ReassociationIndices> panelGroups;
    if (split.width > 0) {
      for (int64_t k = 0; k + 1 < static_cast<int64_t>(outputShape.size()); ++k) panelGroups.push_back({k});
      const int64_t last = static_cast<int64_t>(outputShape.size()) - 1;
      panelGroups.push_back({last, last + 1});
      outputShape.back() /= split.width;
      outputShape.push_back(split.width);
      outputDims.back() = panelLoop;
      outputDims.push_back(split.loop);
    }
    maps.push_back(mapOf(outputDims));
    Value init;
    if (!accumulator) {
      init = zeroTensor(where, outputShape);
    } else {
      init = collapse(where, accumulator, dims.output);
      if (split.width > 0)
        init = builder.create<mlir::tensor::ExpandShapeOp>(where, tensorType(outputShape), init, panelGroups,
                                                           sizesOf(outputShape));
    }
    llvm::SmallVector<mlir::utils::IteratorType> iterators;
    for (const LoopDim& loop : dims.loops)
      iterators.push_back(loop.reduction ? mlir::utils::IteratorType::reduction
                                         : mlir::utils::IteratorType::parallel);
    if (split.width > 0) iterators.push_back(mlir::utils::IteratorType::parallel);

    auto generic = builder.create<mlir::linalg::GenericOp>(
        where, init.getType(), inputs, mlir::ValueRange{init}, maps, iterators,
        [&](mlir::OpBuilder& b, mlir::Location bodyLoc, mlir::ValueRange args) {
          const std::size_t n = args.size() - 1;
          Value product = args[0];
          for (std::size_t i = 1; i < n; ++i)
            product = b.create<mlir::arith::MulFOp>(bodyLoc, product, args[i]);
          Value sum = b.create<mlir::arith::AddFOp>(bodyLoc, args[n], product);
          b.create<mlir::linalg::YieldOp>(bodyLoc, sum);
        });
    generic->setAttr(kContractionAttr, builder.getUnitAttr());
    if (dims.rowLoop >= 0) generic->setAttr(kRowDimAttr, builder.getI64IntegerAttr(dims.rowLoop));
    if (placement == RowOperand::BlocksOutside) generic->setAttr(kRowBlocksOutsideAttr, builder.getUnitAttr());
    Value result = generic.getResult(0);
    if (split.width > 0) result = builder.create<mlir::tensor::CollapseShapeOp>(where, result, panelGroups);
    if (!outputOrder.empty()) {
      llvm::SmallVector<int64_t> inverse(outputOrder.size());
      for (std::size_t k = 0; k < outputOrder.size(); ++k) inverse[outputOrder[k]] = static_cast<int64_t>(k);
      result = builder
                   .create<mlir::linalg::TransposeOp>(where, result,
                                                      emptyTensor(where, declaredOutput.collapsedShape), inverse)
                   .getResult()[0];
    }
    return expand(where, result, declaredOutput, resultShape);
  }

  Value emitReshape(const ir::Op& op, mlir::Location where) {
    const Shape& from = shapeOf(op.inputs[0]);
    const Shape& to = op.shape;
    if (to != shapeOf(op.result)) fail("reshape to " + shapeToString(to) + " defines a value of shape " +
                                       shapeToString(shapeOf(op.result)));
    const bool rows = hasRows(from);
    if (rows != hasRows(to)) fail("reshape " + shapeToString(from) + " -> " + shapeToString(to) +
                                  " moves the row axis");
    auto staticNumel = [&](const Shape& shape) {
      return shapeNumel(rows ? Shape(shape.begin() + 1, shape.end()) : shape);
    };
    if (staticNumel(from) != staticNumel(to))
      fail("reshape " + shapeToString(from) + " -> " + shapeToString(to) + " changes the size");
    Value value = tensorOf[op.inputs[0]];
    if (from == to) return value;
    // Through the flat form: (rows, everything else) or (everything).
    const std::size_t lead = rows ? 1 : 0;
    auto flatGroups = [&](std::size_t rank) {
      llvm::SmallVector<mlir::ReassociationIndices> groups;
      if (rows) groups.push_back({0});
      mlir::ReassociationIndices rest;
      for (std::size_t d = lead; d < rank; ++d) rest.push_back(static_cast<int64_t>(d));
      if (rank == lead) {  // no dims besides the rows: the flat form adds a dim of size 1
        if (!groups.empty()) groups.back().push_back(1);
      } else {
        groups.push_back(rest);
      }
      return groups;
    };
    Shape flat = rows ? Shape{ir::kRows, staticNumel(from)} : Shape{staticNumel(from)};
    if (from.size() > lead + 1) {
      value = builder.create<mlir::tensor::CollapseShapeOp>(where, value, flatGroups(from.size()));
    } else if (from.size() == lead) {
      value = builder.create<mlir::tensor::ExpandShapeOp>(where, tensorType(flat), value,
                                                          flatGroups(from.size()), sizesOf(flat));
    }
    if (to.size() > lead + 1) {
      value = builder.create<mlir::tensor::ExpandShapeOp>(where, tensorType(to), value, flatGroups(to.size()),
                                                          sizesOf(to));
    } else if (to.size() == lead) {
      value = builder.create<mlir::tensor::CollapseShapeOp>(where, tensorType(to), value,
                                                            flatGroups(to.size()));
    }
    return value;
  }

  Value emitPermute(const ir::Op& op, mlir::Location where) {
    const Shape& from = shapeOf(op.inputs[0]);
    std::vector<int> sorted = op.perm;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int> identity(from.size());
    std::iota(identity.begin(), identity.end(), 0);
    if (sorted != identity) fail("permutation of the wrong rank or with repeats");
    Shape to;
    for (int axis : op.perm) to.push_back(from[axis]);
    if (to != shapeOf(op.result)) fail("permute result shape mismatch");
    if (hasRows(from) && op.perm[0] != 0) fail("a permutation may not move the row axis");
    const llvm::SmallVector<int64_t> perm(op.perm.begin(), op.perm.end());
    return builder
        .create<mlir::linalg::TransposeOp>(where, tensorOf[op.inputs[0]], emptyTensor(where, to), perm)
        .getResult()[0];
  }

  void checkAxis(const ir::Op& op, const Shape& from) const {
    if (op.axis < 0 || op.axis >= static_cast<int>(from.size())) fail("axis out of range");
    if (op.axis == 0 && hasRows(from)) fail("the row axis cannot be padded or truncated");
    Shape to = from;
    to[op.axis] = op.size;
    if (to != shapeOf(op.result)) fail("pad/truncate result shape mismatch");
  }

  Value emitPad(const ir::Op& op, mlir::Location where) {
    const Shape& from = shapeOf(op.inputs[0]);
    checkAxis(op, from);
    if (op.size < from[op.axis]) fail("padding to a smaller size");
    llvm::SmallVector<mlir::OpFoldResult> low(from.size(), builder.getIndexAttr(0));
    llvm::SmallVector<mlir::OpFoldResult> high = low;
    high[op.axis] = builder.getIndexAttr(op.size - from[op.axis]);
    Value zero = builder.create<mlir::arith::ConstantOp>(where, builder.getZeroAttr(elementType));
    return builder.create<mlir::tensor::PadOp>(where, tensorType(shapeOf(op.result)), tensorOf[op.inputs[0]],
                                               low, high, zero);
  }

  Value emitTruncate(const ir::Op& op, mlir::Location where) {
    const Shape& from = shapeOf(op.inputs[0]);
    checkAxis(op, from);
    if (op.size > from[op.axis]) fail("truncating to a larger size");
    const Shape& to = shapeOf(op.result);
    llvm::SmallVector<mlir::OpFoldResult> offsets(from.size(), builder.getIndexAttr(0));
    llvm::SmallVector<mlir::OpFoldResult> strides(from.size(), builder.getIndexAttr(1));
    return builder.create<mlir::tensor::ExtractSliceOp>(where, tensorType(to), tensorOf[op.inputs[0]],
                                                        offsets, sizesOf(to), strides);
  }

  Value emitAdd(const ir::Op& op, mlir::Location where) {
    const Shape& shape = shapeOf(op.result);
    if (shapeOf(op.inputs[0]) != shape || shapeOf(op.inputs[1]) != shape) fail("add of different shapes");
    const auto identity = builder.getMultiDimIdentityMap(static_cast<unsigned>(shape.size()));
    llvm::SmallVector<mlir::utils::IteratorType> iterators(shape.size(), mlir::utils::IteratorType::parallel);
    return builder
        .create<mlir::linalg::GenericOp>(
            where, tensorType(shape), mlir::ValueRange{tensorOf[op.inputs[0]], tensorOf[op.inputs[1]]},
            mlir::ValueRange{emptyTensor(where, shape)},
            llvm::SmallVector<mlir::AffineMap>(3, identity), iterators,
            [](mlir::OpBuilder& b, mlir::Location bodyLoc, mlir::ValueRange args) {
              b.create<mlir::linalg::YieldOp>(bodyLoc,
                                              Value(b.create<mlir::arith::AddFOp>(bodyLoc, args[0], args[1])));
            })
        .getResult(0);
  }
};

}  // namespace

mlir::OwningOpRef<mlir::ModuleOp> generateModule(mlir::MLIRContext& context, const KernelProgram& program,
                                                 const Layout& layout) {
  if (layout.rowTilesSpill)
    return MLIRGenImpl(context, orderIntermediatesForReaders(program)).generate(layout);
  return MLIRGenImpl(context, program).generate(layout);
}

}  // namespace einjit::cpu::detail
