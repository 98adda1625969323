#include "compiler/cuda/CudaDriver.h"

#include <dlfcn.h>

#include <mutex>

#include "compiler/cuda/DynamicSymbol.h"
#include "einjit/error.h"

namespace einjit::cuda {
namespace {

constexpr CUresult kSuccess = 0;

struct LoadedDriver {
  DriverApi api{};
  DeviceInfo info;
  CUcontext context = nullptr;
  std::string problem;  // non-empty: unusable, and why
};

template <class Function>
bool resolve(void* library, const char* symbol, Function& slot, std::string& problem) {
  return detail::resolveSymbol(library, symbol, slot, problem, "the CUDA driver", " (driver too old?)");
}

std::string errorText(const DriverApi& api, CUresult result) {
  const char* text = nullptr;
  if (api.cuGetErrorString != nullptr && api.cuGetErrorString(result, &text) == kSuccess && text)
    return text;
  return "CUDA error " + std::to_string(result);
}

LoadedDriver loadDriver() {
  LoadedDriver loaded;
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    loaded.problem =
        "no CUDA driver: libcuda.so.1 not found (this machine has no NVIDIA GPU); use --target cpu";
    return loaded;
  }
  DriverApi& a = loaded.api;
  std::string& p = loaded.problem;
  const bool complete =
      resolve(library, "cuInit", a.cuInit, p) &&
      resolve(library, "cuDriverGetVersion", a.cuDriverGetVersion, p) &&
      resolve(library, "cuDeviceGetCount", a.cuDeviceGetCount, p) &&
      resolve(library, "cuDeviceGet", a.cuDeviceGet, p) &&
      resolve(library, "cuDeviceGetName", a.cuDeviceGetName, p) &&
      resolve(library, "cuDeviceGetAttribute", a.cuDeviceGetAttribute, p) &&
      resolve(library, "cuDevicePrimaryCtxRetain", a.cuDevicePrimaryCtxRetain, p) &&
      resolve(library, "cuCtxSetCurrent", a.cuCtxSetCurrent, p) &&
      resolve(library, "cuCtxSynchronize", a.cuCtxSynchronize, p) &&
      resolve(library, "cuModuleLoadData", a.cuModuleLoadData, p) &&
      resolve(library, "cuModuleGetFunction", a.cuModuleGetFunction, p) &&
      resolve(library, "cuFuncSetAttribute", a.cuFuncSetAttribute, p) &&
      resolve(library, "cuLaunchKernel", a.cuLaunchKernel, p) &&
      resolve(library, "cuMemAlloc_v2", a.cuMemAlloc, p) &&
      resolve(library, "cuMemFree_v2", a.cuMemFree, p) &&
      resolve(library, "cuMemcpyHtoD_v2", a.cuMemcpyHtoD, p) &&
      resolve(library, "cuMemcpyDtoH_v2", a.cuMemcpyDtoH, p) &&
      resolve(library, "cuMemsetD8_v2", a.cuMemsetD8, p) &&
      resolve(library, "cuEventCreate", a.cuEventCreate, p) &&
      resolve(library, "cuEventRecord", a.cuEventRecord, p) &&
      resolve(library, "cuEventSynchronize", a.cuEventSynchronize, p) &&
      resolve(library, "cuEventElapsedTime", a.cuEventElapsedTime, p) &&
      resolve(library, "cuEventDestroy_v2", a.cuEventDestroy, p) &&
      resolve(library, "cuGetErrorString", a.cuGetErrorString, p);
  if (!complete) return loaded;

  auto fail = [&](CUresult result, const char* what) {
    loaded.problem = std::string("CUDA driver present but unusable: ") + what + ": " +
                     errorText(a, result) + "; use --target cpu";
    return loaded;
  };
  if (CUresult r = a.cuInit(0); r != kSuccess) return fail(r, "cuInit");
  int count = 0;
  if (CUresult r = a.cuDeviceGetCount(&count); r != kSuccess)
    return fail(r, "cuDeviceGetCount");
  if (count == 0) {
    loaded.problem = "no CUDA device: the driver reports no GPU; use --target cpu";
    return loaded;
  }
  CUdevice device = 0;
  if (CUresult r = a.cuDeviceGet(&device, 0); r != kSuccess) return fail(r, "cuDeviceGet");
  char name[256] = {};
  DeviceInfo& info = loaded.info;
  const struct {
    int attribute;
    int* value;
  } queries[] = {{kAttributeComputeCapabilityMajor, &info.computeMajor},
                 {kAttributeComputeCapabilityMinor, &info.computeMinor},
                 {kAttributeMultiprocessorCount, &info.multiprocessors},
                 {kAttributeMaxSharedMemoryPerBlockOptin, &info.sharedBytesPerBlockOptin}};
  for (const auto& query : queries)
    if (CUresult r = a.cuDeviceGetAttribute(query.value, query.attribute, device); r != kSuccess)
      return fail(r, "cuDeviceGetAttribute");
  if (CUresult r = a.cuDeviceGetName(name, sizeof name - 1, device); r != kSuccess)
    return fail(r, "cuDeviceGetName");
  info.name = name;
  info.arch = archForComputeCapability(info.computeMajor, info.computeMinor);
  a.cuDriverGetVersion(&info.driverVersion);
  if (CUresult r = a.cuDevicePrimaryCtxRetain(&loaded.context, device); r != kSuccess)
    return fail(r, "cuDevicePrimaryCtxRetain");
  return loaded;
}

// Loaded once; never unloaded (the driver must outlive every static that frees device memory).
const LoadedDriver& loadedDriver() {
  static const LoadedDriver* loaded = new LoadedDriver(loadDriver());
  return *loaded;
}

}  // namespace

std::string cudaUnavailableReason() { return loadedDriver().problem; }

bool cudaAvailable() { return loadedDriver().problem.empty(); }

const DriverApi& driver() {
  const LoadedDriver& loaded = loadedDriver();
  if (!loaded.problem.empty()) throw UserError(loaded.problem);
  thread_local bool current = false;
  if (!current) {
    check(loaded.api.cuCtxSetCurrent(loaded.context), "cuCtxSetCurrent");
    current = true;
  }
  return loaded.api;
}

const DeviceInfo& deviceInfo() {
  driver();
  return loadedDriver().info;
}

void check(CUresult result, const char* what) {
  if (result == kSuccess) return;
  throw UserError(std::string(what) + " failed: " + errorText(loadedDriver().api, result));
}

std::string archForComputeCapability(int major, int minor) {
  std::string arch = "sm_" + std::to_string(major) + std::to_string(minor);
  // The "a" variants unlock architecture-specific instructions (wgmma, setmaxnreg on Hopper).
  if ((major == 9 || major == 10) && minor == 0) arch += "a";
  return arch;
}

}  // namespace einjit::cuda
