#include "compiler/cuda/Nvrtc.h"

#include <dlfcn.h>

#include "compiler/cuda/DynamicSymbol.h"
#include "einjit/error.h"

namespace einjit::cuda {
namespace {

using nvrtcResult = int;
using nvrtcProgram = struct _nvrtcProgram*;
constexpr nvrtcResult kSuccess = 0;

struct NvrtcApi {
  const char* (*nvrtcGetErrorString)(nvrtcResult result);
  nvrtcResult (*nvrtcVersion)(int* major, int* minor);
  nvrtcResult (*nvrtcCreateProgram)(nvrtcProgram* program, const char* source, const char* name,
                                    int numHeaders, const char* const* headers,
                                    const char* const* includeNames);
  nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram* program);
  nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram program, int numOptions,
                                     const char* const* options);
  nvrtcResult (*nvrtcGetPTXSize)(nvrtcProgram program, std::size_t* size);
  nvrtcResult (*nvrtcGetPTX)(nvrtcProgram program, char* ptx);
  nvrtcResult (*nvrtcGetCUBINSize)(nvrtcProgram program, std::size_t* size);
  nvrtcResult (*nvrtcGetCUBIN)(nvrtcProgram program, char* cubin);
  nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram program, std::size_t* size);
  nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram program, char* log);
};

struct LoadedNvrtc {
  NvrtcApi api{};
  std::string version;
  std::string problem;
};

template <class Function>
bool resolve(void* library, const char* symbol, Function& slot, std::string& problem) {
  return detail::resolveSymbol(library, symbol, slot, problem, "NVRTC");
}

LoadedNvrtc loadNvrtc() {
  LoadedNvrtc loaded;
  void* library = nullptr;
  for (const char* name : {"libnvrtc.so.13", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so.13",
                           "/usr/local/cuda/lib64/libnvrtc.so"}) {
    library = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (library != nullptr) break;
  }
  if (library == nullptr) {
    loaded.problem =
        "no NVRTC: libnvrtc.so.13 not found (install the CUDA toolkit or add its lib64 to "
        "LD_LIBRARY_PATH)";
    return loaded;
  }
  NvrtcApi& a = loaded.api;
  std::string& p = loaded.problem;
  const bool complete = resolve(library, "nvrtcGetErrorString", a.nvrtcGetErrorString, p) &&
                        resolve(library, "nvrtcVersion", a.nvrtcVersion, p) &&
                        resolve(library, "nvrtcCreateProgram", a.nvrtcCreateProgram, p) &&
                        resolve(library, "nvrtcDestroyProgram", a.nvrtcDestroyProgram, p) &&
                        resolve(library, "nvrtcCompileProgram", a.nvrtcCompileProgram, p) &&
                        resolve(library, "nvrtcGetPTXSize", a.nvrtcGetPTXSize, p) &&
                        resolve(library, "nvrtcGetPTX", a.nvrtcGetPTX, p) &&
                        resolve(library, "nvrtcGetCUBINSize", a.nvrtcGetCUBINSize, p) &&
                        resolve(library, "nvrtcGetCUBIN", a.nvrtcGetCUBIN, p) &&
                        resolve(library, "nvrtcGetProgramLogSize", a.nvrtcGetProgramLogSize, p) &&
                        resolve(library, "nvrtcGetProgramLog", a.nvrtcGetProgramLog, p);
  if (!complete) return loaded;
  int major = 0, minor = 0;
  if (a.nvrtcVersion(&major, &minor) != kSuccess) {
    loaded.problem = "nvrtcVersion failed";
    return loaded;
  }
  loaded.version = std::to_string(major) + "." + std::to_string(minor);
  return loaded;
}

const LoadedNvrtc& nvrtc() {
  static const LoadedNvrtc loaded = loadNvrtc();
  if (!loaded.problem.empty()) throw UserError(loaded.problem);
  return loaded;
}

// Destroys the program on every exit path.
struct ProgramHandle {
  const NvrtcApi& api;
  nvrtcProgram program = nullptr;
  ~ProgramHandle() {
    if (program != nullptr) api.nvrtcDestroyProgram(&program);
  }
};

}  // namespace

std::string nvrtcUnavailableReason() {
  try {
    nvrtc();
    return "";
  } catch (const UserError& error) {
    return error.what();
  }
}

std::string nvrtcVersion() { return nvrtc().version; }

NvrtcOutput nvrtcCompile(const std::string& source, const std::string& name, const std::string& arch,
                         const std::vector<std::string>& options) {
  const NvrtcApi& api = nvrtc().api;
  auto check = [&](nvrtcResult result, const char* what) {
    if (result != kSuccess)
      throw UserError("NVRTC " + std::string(what) + " failed for '" + name +
                      "': " + api.nvrtcGetErrorString(result));
  };
  ProgramHandle handle{api};
  check(api.nvrtcCreateProgram(&handle.program, source.c_str(), name.c_str(), 0, nullptr, nullptr),
        "nvrtcCreateProgram");
  std::vector<std::string> all = {"--gpu-architecture=" + arch, "--std=c++17"};
  all.insert(all.end(), options.begin(), options.end());
  std::vector<const char*> pointers;
  for (const std::string& option : all) pointers.push_back(option.c_str());
  const nvrtcResult compiled =
      api.nvrtcCompileProgram(handle.program, static_cast<int>(pointers.size()), pointers.data());

  NvrtcOutput output;
  std::size_t size = 0;
  check(api.nvrtcGetProgramLogSize(handle.program, &size), "nvrtcGetProgramLogSize");
  output.log.assign(size, '\0');
  check(api.nvrtcGetProgramLog(handle.program, output.log.data()), "nvrtcGetProgramLog");
  while (!output.log.empty() && output.log.back() == '\0') output.log.pop_back();
  if (compiled != kSuccess)
    throw UserError("NVRTC could not compile '" + name + "' for " + arch + ": " +
                    api.nvrtcGetErrorString(compiled) + "\n" + output.log);

  check(api.nvrtcGetPTXSize(handle.program, &size), "nvrtcGetPTXSize");
  output.ptx.assign(size, '\0');
  check(api.nvrtcGetPTX(handle.program, output.ptx.data()), "nvrtcGetPTX");
  while (!output.ptx.empty() && output.ptx.back() == '\0') output.ptx.pop_back();
  if (arch.rfind("sm_", 0) == 0) {
    check(api.nvrtcGetCUBINSize(handle.program, &size), "nvrtcGetCUBINSize");
    output.cubin.assign(size, '\0');
    check(api.nvrtcGetCUBIN(handle.program, output.cubin.data()), "nvrtcGetCUBIN");
  }
  return output;
}

}  // namespace einjit::cuda
