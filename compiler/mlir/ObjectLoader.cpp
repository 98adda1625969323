// Loads a kernel object in memory with LLVM ORC (one session for the process, JITLink): the
// object is checked first (an ELF relocatable object for this host that defines the entry
// point), then linked into a JITDylib of its own against the running process (memcpy, memset,
// libm) and the kernel scratch allocator (KernelScratch.h), and its entry point called.
#include <atomic>
#include <memory>

#include "compiler/mlir/CodegenStages.h"
#include "compiler/mlir/CpuCodegen.h"
#include "compiler/mlir/KernelScratch.h"
#include "einjit/error.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/Core.h"
#include "llvm/ExecutionEngine/Orc/ExecutorProcessControl.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"
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

// Link errors (say, a missing symbol) reach the session's error reporter, not the error the
// lookup returns; linking runs on the thread that looks the entry point up, so each load
// collects them in a string of its own thread.
thread_local std::string* linkErrors = nullptr;

// One JIT session for the process: an ORC ExecutionSession running in this process with a
// JITLink object linking layer, nothing more (no LLJIT: it builds a host TargetMachine and an IR
// platform a kernel object does not need, which cost 0.5-0.7 ms of the first load). Each kernel
// is linked into a JITDylib of its own (every kernel defines the same entry symbol), which links
// against one JITDylib of what kernels call: the process's symbols and the kernel scratch
// allocator (KernelScratch.h). An LLJIT per kernel cost 0.85 ms of the 1.4 ms a kernel took to
// load from the disk cache, a process-symbol generator per kernel another 0.1-0.5 ms. Never
// destroyed: kernels held in static caches may outlive any other static.
struct ProcessJit {
  llvm::orc::ExecutionSession* session = nullptr;
  llvm::orc::ObjectLinkingLayer* linker = nullptr;
  llvm::orc::JITDylib* runtime = nullptr;  // what every kernel links against
};

const ProcessJit& processJit() {
  static const ProcessJit instance = [] {
    auto control = llvm::orc::SelfExecutorProcessControl::Create();
    if (!control) reject(llvm::toString(control.takeError()));
    ProcessJit made;
    made.session = new llvm::orc::ExecutionSession(std::move(*control));
    llvm::orc::ExecutionSession& session = *made.session;
    made.linker = new llvm::orc::ObjectLinkingLayer(session);
    session.setErrorReporter([](llvm::Error error) {
      const std::string text = llvm::toString(std::move(error));
      if (linkErrors != nullptr) *linkErrors += text + "; ";
    });
    made.runtime = &session.createBareJITDylib("einjit_runtime");
    // ELF symbols carry no global prefix.
    auto process = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess('\0');
    if (!process) reject(llvm::toString(process.takeError()));
    made.runtime->addGenerator(std::move(*process));
    llvm::orc::SymbolMap scratch;
    const auto callable = llvm::JITSymbolFlags::Exported | llvm::JITSymbolFlags::Callable;
    auto bind = [&](const char* name, auto* function) {
      scratch[session.intern(name)] = {llvm::orc::ExecutorAddr::fromPtr(function), callable};
    };
    bind(detail::kScratchAllocSymbol, &detail::scratchAlloc);
    bind(detail::kScratchAlignedAllocSymbol, &detail::scratchAlignedAlloc);
    bind(detail::kScratchFreeSymbol, &detail::scratchFree);
    if (llvm::Error error = made.runtime->define(llvm::orc::absoluteSymbols(std::move(scratch))))
      reject(llvm::toString(std::move(error)));
    return made;
  }();
  return instance;
}

void unloadDylib(llvm::orc::JITDylib& dylib) {
  // Frees the kernel's code; nothing can be done about a failure here but to drop it.
  llvm::consumeError(processJit().session->removeJITDylib(dylib));
}

class OrcKernel final : public LoadedKernel {
 public:
  OrcKernel(llvm::orc::JITDylib& dylib, EntryFunction entry, std::size_t numBuffers)
      : dylib_(dylib), entry_(entry), numBuffers_(numBuffers) {}
  ~OrcKernel() override { unloadDylib(dylib_); }
  OrcKernel(const OrcKernel&) = delete;
  OrcKernel& operator=(const OrcKernel&) = delete;

  void call(int64_t rows, const std::vector<void*>& buffers) const override {
    if (buffers.size() != numBuffers_)
      throw UserError("kernel called with " + std::to_string(buffers.size()) + " buffers, expected " +
                      std::to_string(numBuffers_));
    if (rows < 0) throw UserError("kernel called with a negative row count");
    entry_(buffers.data(), rows);
  }

 private:
  llvm::orc::JITDylib& dylib_;  // holds the code entry_ points into
  EntryFunction entry_;
  std::size_t numBuffers_;
};

}  // namespace

std::unique_ptr<LoadedKernel> loadObject(const std::string& objectBytes, const KernelProgram& program) {
  auto buffer = llvm::MemoryBuffer::getMemBufferCopy(objectBytes, program.name + ".o");
  checkObject(*buffer);

  const ProcessJit& process = processJit();
  static std::atomic<uint64_t> loaded{0};
  llvm::orc::JITDylib& dylib = process.session->createBareJITDylib("einjit_kernel_" + std::to_string(loaded++));
  // On any failure below the kernel's JITDylib goes away with it.
  struct Unload {
    llvm::orc::JITDylib* dylib;
    ~Unload() {
      if (dylib != nullptr) unloadDylib(*dylib);
    }
  } unload{&dylib};
  dylib.addToLinkOrder(*process.runtime);
  if (llvm::Error error = process.linker->add(dylib, std::move(buffer))) reject(llvm::toString(std::move(error)));
  std::string errors;
  linkErrors = &errors;
  auto entry = process.session->lookup({&dylib}, process.session->intern(kEntrySymbol));
  linkErrors = nullptr;
  if (!entry) reject(errors + llvm::toString(entry.takeError()));
  unload.dylib = nullptr;
  return std::make_unique<OrcKernel>(dylib, entry->getAddress().toPtr<EntryFunction>(),
                                     program.inputs.size() + program.outputs.size());
}

}  // namespace einjit::cpu
