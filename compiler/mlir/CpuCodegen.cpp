// The driver behind CpuCodegen.h: one MLIR context per compilation, the stages in order, and
// MLIR diagnostics attached to the UserError of a stage that fails.
#include "compiler/mlir/CpuCodegen.h"

#include "compiler/mlir/CodegenStages.h"
#include "einjit/error.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/raw_ostream.h"
#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Affine/IR/ValueBoundsOpInterfaceImpl.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/IR/ValueBoundsOpInterfaceImpl.h"
#include "mlir/Dialect/Arith/Transforms/BufferDeallocationOpInterfaceImpl.h"
#include "mlir/Dialect/Arith/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Bufferization/Transforms/FuncBufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/ControlFlow/Transforms/BufferDeallocationOpInterfaceImpl.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/IR/ValueBoundsOpInterfaceImpl.h"
#include "mlir/Dialect/Linalg/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Linalg/Transforms/SubsetInsertionOpInterfaceImpl.h"
#include "mlir/Dialect/Linalg/Transforms/TilingInterfaceImpl.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/IR/ValueBoundsOpInterfaceImpl.h"
#include "mlir/Dialect/MemRef/Transforms/AllocationOpInterfaceImpl.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/IR/ValueBoundsOpInterfaceImpl.h"
#include "mlir/Dialect/SCF/Transforms/BufferDeallocationOpInterfaceImpl.h"
#include "mlir/Dialect/SCF/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Tensor/IR/TensorInferTypeOpInterfaceImpl.h"
#include "mlir/Dialect/Tensor/IR/ValueBoundsOpInterfaceImpl.h"
#include "mlir/Dialect/Tensor/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Tensor/Transforms/SubsetInsertionOpInterfaceImpl.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Dialect/Vector/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Vector/Transforms/SubsetOpInterfaceImpl.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"

namespace einjit::cpu {

namespace detail {

void registerCodegenDialects(mlir::DialectRegistry& registry) {
  registry.insert<mlir::affine::AffineDialect, mlir::arith::ArithDialect,
                  mlir::bufferization::BufferizationDialect, mlir::cf::ControlFlowDialect,
                  mlir::func::FuncDialect, mlir::linalg::LinalgDialect, mlir::LLVM::LLVMDialect,
                  mlir::memref::MemRefDialect, mlir::scf::SCFDialect, mlir::tensor::TensorDialect,
                  mlir::vector::VectorDialect>();
  // Bufferisation.
  mlir::arith::registerBufferizableOpInterfaceExternalModels(registry);
  mlir::bufferization::func_ext::registerBufferizableOpInterfaceExternalModels(registry);
  mlir::linalg::registerBufferizableOpInterfaceExternalModels(registry);
  mlir::scf::registerBufferizableOpInterfaceExternalModels(registry);
  mlir::tensor::registerBufferizableOpInterfaceExternalModels(registry);
  mlir::vector::registerBufferizableOpInterfaceExternalModels(registry);
  mlir::arith::registerBufferDeallocationOpInterfaceExternalModels(registry);
  mlir::cf::registerBufferDeallocationOpInterfaceExternalModels(registry);
  mlir::scf::registerBufferDeallocationOpInterfaceExternalModels(registry);
  mlir::memref::registerAllocationOpInterfaceExternalModels(registry);
  // Tiling, peeling, hoisting, empty-tensor elimination.
  mlir::linalg::registerTilingInterfaceExternalModels(registry);
  mlir::linalg::registerSubsetOpInterfaceExternalModels(registry);
  mlir::tensor::registerSubsetOpInterfaceExternalModels(registry);
  mlir::vector::registerSubsetOpInterfaceExternalModels(registry);
  mlir::tensor::registerInferTypeOpInterfaceExternalModels(registry);
  mlir::affine::registerValueBoundsOpInterfaceExternalModels(registry);
  mlir::arith::registerValueBoundsOpInterfaceExternalModels(registry);
  mlir::linalg::registerValueBoundsOpInterfaceExternalModels(registry);
  mlir::memref::registerValueBoundsOpInterfaceExternalModels(registry);
  mlir::scf::registerValueBoundsOpInterfaceExternalModels(registry);
  mlir::tensor::registerValueBoundsOpInterfaceExternalModels(registry);
  // Translation to LLVM IR.
  mlir::registerBuiltinDialectTranslation(registry);
  mlir::registerLLVMDialectTranslation(registry);
}

}  // namespace detail

namespace {

constexpr const char* kCodegenVersion = "einjit-cpu-codegen 22";
constexpr std::size_t kMaxDiagnosticChars = 2000;

const mlir::DialectRegistry& codegenRegistry() {
  static const mlir::DialectRegistry registry = [] {
    mlir::DialectRegistry r;
    detail::registerCodegenDialects(r);
    return r;
  }();
  return registry;
}

// One compilation: a single-threaded context whose diagnostics are collected, not printed.
class Compilation {
 public:
  Compilation()
      : context_(codegenRegistry(), mlir::MLIRContext::Threading::DISABLED),
        handler_(&context_, [this](mlir::Diagnostic& diagnostic) {
          if (diagnostics_.size() < kMaxDiagnosticChars) diagnostics_ += diagnostic.str() + "; ";
          return mlir::success();
        }) {
    context_.loadAllAvailableDialects();
  }

  std::string run(const KernelProgram& program, EmitStage stage) {
    try {
      return runStages(program, stage);
    } catch (const UserError& error) {
      if (diagnostics_.empty()) throw;
      throw UserError(std::string(error.what()) + " (" + diagnostics_.substr(0, kMaxDiagnosticChars) + ")");
    }
  }

 private:
  mlir::MLIRContext context_;
  std::string diagnostics_;
  mlir::ScopedDiagnosticHandler handler_;

  std::string runStages(const KernelProgram& program, EmitStage stage) {
    std::string text;
    llvm::raw_string_ostream stream(text);
    if (stage == EmitStage::Mlir) {
      auto module = detail::generateModule(context_, program, detail::Layout{});
      module->print(stream, mlir::OpPrintingFlags().enableDebugInfo(true, /*prettyForm=*/false));
      return text;
    }
    const detail::HostTarget& host = detail::hostTarget();
    auto module = detail::generateModule(context_, program, detail::chooseLayout(program, host));
    // Prints the module if `stage` is `done`, the stage just run.
    auto printedAt = [&](EmitStage done) {
      if (stage == done) module->print(stream);
      return stage == done;
    };
    if (printedAt(EmitStage::TiledMlir)) return text;
    detail::scheduleModule(*module, host);
    if (printedAt(EmitStage::ScheduledMlir)) return text;
    detail::lowerToLLVMDialect(*module);
    if (printedAt(EmitStage::LoweredMlir)) return text;
    llvm::LLVMContext llvmContext;
    auto llvmModule = detail::translateToLLVMIR(*module, llvmContext, program);
    detail::optimizeModule(*llvmModule);
    switch (stage) {
      case EmitStage::Llvm: llvmModule->print(stream, nullptr); return text;
      case EmitStage::Asm: return detail::emitAssembly(*llvmModule);
      default: return detail::emitObject(*llvmModule);
    }
  }
};

}  // namespace

std::string emitStage(const KernelProgram& program, EmitStage stage) {
  return Compilation().run(program, stage);
}

std::string compileToObject(const KernelProgram& program) { return emitStage(program, EmitStage::Obj); }

std::string codegenIdentity() {
  const detail::HostTarget& host = detail::hostTarget();
  return std::string(kCodegenVersion) + "; LLVM " + LLVM_VERSION_STRING + "; " + host.triple + "; " +
         host.cpuName + "; " + host.features + "; L2 " + std::to_string(host.l2Bytes);
}

}  // namespace einjit::cpu
