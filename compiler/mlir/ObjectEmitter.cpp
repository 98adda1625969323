// The host CPU as LLVM sees it, -O3 with the host TargetMachine, and emission of assembly text
// or relocatable object bytes.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "compiler/mlir/CodegenStages.h"
#include "einjit/error.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"

namespace einjit::cpu::detail {

void initializeNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    llvm::InitializeNativeTargetAsmParser();
  });
}

namespace {

// The size of cpu0's level-2 data or unified cache from sysfs ("1024K"), or 0.
int64_t sysfsL2Bytes() {
  namespace fs = std::filesystem;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator("/sys/devices/system/cpu/cpu0/cache", error)) {
    auto read = [&](const char* name) {
      std::ifstream file(entry.path() / name);
      std::string text;
      std::getline(file, text);
      return text;
    };
    if (read("level") != "2" || read("type") == "Instruction") continue;
    const std::string size = read("size");
    std::size_t digits = 0;
    while (digits < size.size() && std::isdigit(static_cast<unsigned char>(size[digits]))) ++digits;
    if (digits == 0 || digits > 12) continue;
    int64_t bytes = std::stoll(size.substr(0, digits));
    const std::string unit = size.substr(digits);
    if (unit == "K") bytes <<= 10;
    else if (unit == "M") bytes <<= 20;
    else if (!unit.empty()) continue;
    if (bytes >= (int64_t{64} << 10)) return bytes;
  }
  return 0;
}

}  // namespace

const HostTarget& hostTarget() {
  static const HostTarget host = [] {
    HostTarget h;
    h.triple = llvm::sys::getProcessTriple();
    h.cpuName = llvm::sys::getHostCPUName().str();
    const auto features = llvm::sys::getHostCPUFeatures();
    std::vector<std::string> enabled;
    for (const auto& feature : features)
      if (feature.second) enabled.push_back((llvm::Twine("+") + feature.first()).str());
    std::sort(enabled.begin(), enabled.end());
    for (const std::string& feature : enabled) {
      if (!h.features.empty()) h.features += ',';
      h.features += feature;
    }
    h.vectorBits = features.lookup("avx512f") ? 512 : features.lookup("avx") ? 256 : 128;
    // glibc reads the cache sizes once at startup (cpuid), so sysconf costs nothing; sysfs
    // (0.2 ms of directory walking) only where it does not know them.
    if (const long l2 = ::sysconf(_SC_LEVEL2_CACHE_SIZE); l2 >= (64 << 10))
      h.l2Bytes = l2;
    else if (const int64_t l2Sysfs = sysfsL2Bytes(); l2Sysfs > 0)
      h.l2Bytes = l2Sysfs;
    return h;
  }();
  return host;
}

namespace {

// A TargetMachine is not safe to share between threads compiling at once: one per use.
std::unique_ptr<llvm::TargetMachine> createHostTargetMachine() {
  initializeNativeTarget();
  const HostTarget& host = hostTarget();
  std::string error;
  const llvm::Target* target = llvm::TargetRegistry::lookupTarget(host.triple, error);
  if (!target) throw UserError("cpu codegen: no LLVM target for " + host.triple + ": " + error);
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      host.triple, host.cpuName, host.features, options, llvm::Reloc::PIC_, llvm::CodeModel::Small,
      llvm::CodeGenOptLevel::Aggressive));
  if (!machine) throw UserError("cpu codegen: cannot create a target machine for " + host.cpuName);
  return machine;
}

std::string emit(llvm::Module& module, llvm::CodeGenFileType type) {
  auto machine = createHostTargetMachine();
  llvm::SmallString<0> bytes;
  llvm::raw_svector_ostream stream(bytes);
  llvm::legacy::PassManager pm;
  if (machine->addPassesToEmitFile(pm, stream, nullptr, type))
    throw UserError("cpu codegen: the target cannot emit this file type");
  pm.run(module);
  return std::string(bytes.str());
}

}  // namespace

void optimizeModule(llvm::Module& module) {
  auto machine = createHostTargetMachine();
  const HostTarget& host = hostTarget();
  module.setDataLayout(machine->createDataLayout());
  module.setTargetTriple(host.triple);
  for (llvm::Function& function : module) {
    if (function.isDeclaration()) continue;
    function.addFnAttr("target-cpu", host.cpuName);
    function.addFnAttr("target-features", host.features);
    // LLVM prefers 256-bit vectors on recent Intel cores; the schedule is made for full zmm.
    if (host.vectorBits >= 512) function.addFnAttr("prefer-vector-width", "512");
  }
  std::string problems;
  llvm::raw_string_ostream problemStream(problems);
  if (llvm::verifyModule(module, &problemStream))
    throw UserError("cpu codegen: invalid LLVM IR: " + problems);

  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager sccs;
  llvm::ModuleAnalysisManager modules;
  llvm::PassBuilder builder(machine.get());
  builder.registerModuleAnalyses(modules);
  builder.registerCGSCCAnalyses(sccs);
  builder.registerFunctionAnalyses(functions);
  builder.registerLoopAnalyses(loops);
  builder.crossRegisterProxies(loops, functions, sccs, modules);
  builder.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3).run(module, modules);
}

std::string emitAssembly(llvm::Module& module) { return emit(module, llvm::CodeGenFileType::AssemblyFile); }
std::string emitObject(llvm::Module& module) { return emit(module, llvm::CodeGenFileType::ObjectFile); }

}  // namespace einjit::cpu::detail
