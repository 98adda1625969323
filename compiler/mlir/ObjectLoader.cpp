// Loads a kernel object in memory with LLVM ORC (LLJIT, JITLink): the object is checked first
// (an ELF relocatable object for this host that defines the entry point), then linked against
// the running process (memcpy, memset, libm) and the kernel scratch allocator (KernelScratch.h),
// and its entry point called.
#include <memory>

#include "compiler/mlir/CodegenStages.h"
#include "compiler/mlir/CpuCodegen.h"
#include "compiler/mlir/KernelScratch.h"
#include "einjit/error.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/Object/ObjectFile.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/TargetParser/Triple.h"

namespace einjit::cpu {
namespace {

using EntryFunction = void (*)(void* const* buffers, int64_t rows);

[[noreturn]] void reject(const std::string& what) {
  throw UserError("cannot load kernel object: " + what);
}

void checkObject(const llvm::MemoryBuffer& buffer) {
  auto object = llvm::object::ObjectFile::createObjectFile(buffer.getMemBufferRef());
  if (!object) reject(llvm::toString(object.takeError()));
  const llvm::object::ObjectFile& file = **object;
  if (!file.isELF() || !file.isRelocatableObject()) reject("not an ELF relocatable object");
  if (file.getArch() != llvm::Triple(detail::hostTarget().triple).getArch())
    reject("made for another architecture");
  for (const llvm::object::SymbolRef& symbol : file.symbols()) {
    auto name = symbol.getName();
    if (!name) reject(llvm::toString(name.takeError()));
    if (*name != kEntrySymbol) continue;
    auto flags = symbol.getFlags();
    if (!flags) reject(llvm::toString(flags.takeError()));
    if (!(*flags & llvm::object::SymbolRef::SF_Undefined)) return;
  }
  reject(std::string("the entry point ") + kEntrySymbol + " is not defined");
}

class OrcKernel final : public LoadedKernel {
 public:
  OrcKernel(std::unique_ptr<llvm::orc::LLJIT> jit, EntryFunction entry, std::size_t numBuffers)
      : jit_(std::move(jit)), entry_(entry), numBuffers_(numBuffers) {}

  void call(int64_t rows, const std::vector<void*>& buffers) const override {
    if (buffers.size() != numBuffers_)
      throw UserError("kernel called with " + std::to_string(buffers.size()) + " buffers, expected " +
                      std::to_string(numBuffers_));
    if (rows < 0) throw UserError("kernel called with a negative row count");
    entry_(buffers.data(), rows);
  }

 private:
  std::unique_ptr<llvm::orc::LLJIT> jit_;  // owns the code entry_ points into
  EntryFunction entry_;
  std::size_t numBuffers_;
};

}  // namespace

std::unique_ptr<LoadedKernel> loadObject(const std::string& objectBytes, const KernelProgram& program) {
  detail::initializeNativeTarget();
  auto buffer = llvm::MemoryBuffer::getMemBufferCopy(objectBytes, program.name + ".o");
  checkObject(*buffer);

  auto jit = llvm::orc::LLJITBuilder().create();
  if (!jit) reject(llvm::toString(jit.takeError()));
  // Link errors (say, a missing symbol) are reported here, not in the error lookup returns.
  auto linkErrors = std::make_shared<std::string>();
  (*jit)->getExecutionSession().setErrorReporter([linkErrors](llvm::Error error) {
    *linkErrors += llvm::toString(std::move(error)) + "; ";
  });
  auto process = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      (*jit)->getDataLayout().getGlobalPrefix());
  if (!process) reject(llvm::toString(process.takeError()));
  (*jit)->getMainJITDylib().addGenerator(std::move(*process));
  // The kernel's own buffers come from KernelScratch.h.
  llvm::orc::SymbolMap scratch;
  const auto callable = llvm::JITSymbolFlags::Exported | llvm::JITSymbolFlags::Callable;
  auto bind = [&](const char* name, auto* function) {
    scratch[(*jit)->mangleAndIntern(name)] = {llvm::orc::ExecutorAddr::fromPtr(function), callable};
  };
  bind(detail::kScratchAllocSymbol, &detail::scratchAlloc);
  bind(detail::kScratchAlignedAllocSymbol, &detail::scratchAlignedAlloc);
  bind(detail::kScratchFreeSymbol, &detail::scratchFree);
  if (llvm::Error error = (*jit)->getMainJITDylib().define(llvm::orc::absoluteSymbols(std::move(scratch))))
    reject(llvm::toString(std::move(error)));
  if (llvm::Error error = (*jit)->addObjectFile(std::move(buffer))) reject(llvm::toString(std::move(error)));
  auto entry = (*jit)->lookup(kEntrySymbol);
  if (!entry) reject(*linkErrors + llvm::toString(entry.takeError()));
  return std::make_unique<OrcKernel>(std::move(*jit), entry->toPtr<EntryFunction>(),
                                     program.inputs.size() + program.outputs.size());
}

}  // namespace einjit::cpu
