// The stages of the CPU code generator, one file each (internal to compiler/mlir). A stage that
// fails throws UserError; the driver adds the MLIR diagnostics collected meanwhile.
//   ContractionDims   a Contract's equation -> loop dims and operand maps (no MLIR)
//   MLIRGen.cpp       KernelProgram -> func on tensors (linalg, tensor ops), row tiles, panels
//   Schedule.cpp      reduction blocking, register tiling, vectorisation, accumulator hoisting
//   LowerToLLVM.cpp   bufferisation, vector lowering, LLVM dialect, LLVM IR + entry wrapper
//   ObjectEmitter.cpp host TargetMachine, -O3, assembly / object emission
//   ObjectLoader.cpp  in-memory linking (ORC) of an object and the call
//   CpuCodegen.cpp    the driver behind CpuCodegen.h
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compiler/kernel/KernelProgram.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace llvm {
class LLVMContext;
class Module;
}  // namespace llvm

namespace mlir {
class DialectRegistry;
}

namespace einjit::cpu::detail {

// Attributes MLIRGen leaves for the scheduler.
inline constexpr const char* kContractionAttr = "einjit.contraction";  // unit: a mul-add generic
inline constexpr const char* kRowDimAttr = "einjit.row_dim";           // i64: its row loop dim
// i64: the loop dim whose elements the register tile's rows take (overrides the row dim).
inline constexpr const char* kRegisterRowsDimAttr = "einjit.register_rows_dim";
// unit: the register tiles' row blocks are the outermost loop (the other operand is small
// enough to be re-read for each block; see MLIRGen's rowOperandPlacement).
inline constexpr const char* kRowBlocksOutsideAttr = "einjit.row_blocks_outside";
// The function MLIRGen emits; the entry point (kEntrySymbol) wraps it.
inline constexpr const char* kBodySymbol = "einjit_body";

// Largest divisor of `size` that is at most `limit` (at least 1).
inline int64_t largestDivisor(int64_t size, int64_t limit) {
  for (int64_t d = size < limit ? size : limit; d > 1; --d)
    if (size % d == 0) return d;
  return 1;
}

// The host CPU as the code generator targets it.
struct HostTarget {
  std::string triple;
  std::string cpuName;
  std::string features;  // "+avx2,+avx512f,..." (sorted; disabled features omitted)
  int vectorBits = 128;  // widest vector register the schedule should fill
  // One core's L2 (data or unified), which the row tiles are sized for: from Linux's
  // /sys/devices/system/cpu/cpu0/cache, else 1 MB. Part of the codegen identity (cache keys).
  int64_t l2Bytes = int64_t{1} << 20;
};
const HostTarget& hostTarget();

// Dialects and interface models every stage needs, registered once per context.
void registerCodegenDialects(mlir::DialectRegistry& registry);

// How MLIRGen lays the program out for the schedule.
struct Layout {
  // Heights of the row tiles (descending, the last 1): the row-parallel part of the program
  // runs in loops over row tiles of these static heights, one after the other (so the
  // intermediates of a tile stay in cache and every shape in a tile is static). Empty: whole
  // tensors, as written (EmitStage::Mlir shows this form).
  std::vector<int64_t> rowTiles;
  // Parameters that a row-loop contraction walks with a long stride are packed, before the
  // loops, into panels this many columns wide (0: never).
  int64_t packWidth = 0;
  // Rows of a register tile (elements of its M dim); sums over the rows are computed in
  // register tiles of registerRows x packWidth (0: not at all).
  int64_t registerRows = 0;
  // The row tiles' intermediates spill out of L2 (the parameters stream from L3 too), so the
  // tiles are tall and their rows come from L3. Then the row intermediates are laid out for
  // their readers (orderIntermediatesForReaders: a reader that walks one with a stride would
  // fetch each cache line from L3 again for every part of it that it reads), and every operand
  // of a row-sum GEMM is packed (rows read in place lie a power-of-two stride apart, all in one
  // L1 set, and evict one another on every reduction step).
  bool rowTilesSpill = false;
};

// MLIRGen. Throws UserError on unsupported programs.
mlir::OwningOpRef<mlir::ModuleOp> generateModule(mlir::MLIRContext& context,
                                                 const KernelProgram& program, const Layout& layout);

// Schedule: the layout its tiles are made for (row tiles from the bytes of row values per
// row, panels as wide as a register tile).
Layout chooseLayout(const KernelProgram& program, const HostTarget& host);
// Tiles and vectorises the contractions of a generated module (still on tensors).
void scheduleModule(mlir::ModuleOp module, const HostTarget& host);

// LowerToLLVM: bufferises and lowers a scheduled module to the LLVM dialect.
void lowerToLLVMDialect(mlir::ModuleOp module);
// Translates the lowered module to LLVM IR and adds the entry point (see CpuCodegen.h).
std::unique_ptr<llvm::Module> translateToLLVMIR(mlir::ModuleOp module, llvm::LLVMContext& context,
                                                const KernelProgram& program);

// ObjectEmitter: LLVM's native target, initialised once (the loader needs it too).
void initializeNativeTarget();
// -O3 for the host, then text assembly or object bytes.
void optimizeModule(llvm::Module& module);
std::string emitAssembly(llvm::Module& module);
std::string emitObject(llvm::Module& module);

}  // namespace einjit::cpu::detail
