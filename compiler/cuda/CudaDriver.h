// The CUDA driver API, loaded at run time with dlopen("libcuda.so.1"): einjit has no link-time
// dependency on libcuda, so the same binary runs on machines without a GPU and says so plainly.
// Only the entry points einjit uses are declared, with the driver's own types written out here
// (no cuda.h needed to build).
#pragma once

#include <cstdint>
#include <string>

namespace einjit::cuda {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUstream = struct CUstream_st*;
using CUevent = struct CUevent_st*;

// The driver entry points, resolved once per process.
struct DriverApi {
  CUresult (*cuInit)(unsigned flags);
  CUresult (*cuDriverGetVersion)(int* version);
  CUresult (*cuDeviceGetCount)(int* count);
  CUresult (*cuDeviceGet)(CUdevice* device, int ordinal);
  CUresult (*cuDeviceGetName)(char* name, int length, CUdevice device);
  CUresult (*cuDeviceGetAttribute)(int* value, int attribute, CUdevice device);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext* context, CUdevice device);
  CUresult (*cuCtxSetCurrent)(CUcontext context);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuModuleLoadData)(CUmodule* module, const void* image);
  CUresult (*cuModuleGetFunction)(CUfunction* function, CUmodule module, const char* name);
  CUresult (*cuFuncSetAttribute)(CUfunction function, int attribute, int value);
  CUresult (*cuLaunchKernel)(CUfunction function, unsigned gridX, unsigned gridY, unsigned gridZ,
                             unsigned blockX, unsigned blockY, unsigned blockZ,
                             unsigned sharedBytes, CUstream stream, void** params, void** extra);
  CUresult (*cuMemAlloc)(CUdeviceptr* pointer, std::size_t bytes);
  CUresult (*cuMemFree)(CUdeviceptr pointer);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr destination, const void* source, std::size_t bytes);
  CUresult (*cuMemcpyDtoH)(void* destination, CUdeviceptr source, std::size_t bytes);
  CUresult (*cuMemsetD8)(CUdeviceptr destination, unsigned char value, std::size_t bytes);
  CUresult (*cuEventCreate)(CUevent* event, unsigned flags);
  CUresult (*cuEventRecord)(CUevent event, CUstream stream);
  CUresult (*cuEventSynchronize)(CUevent event);
  CUresult (*cuEventElapsedTime)(float* milliseconds, CUevent start, CUevent end);
  CUresult (*cuEventDestroy)(CUevent event);
  CUresult (*cuGetErrorString)(CUresult error, const char** text);
};

// Attribute numbers of the driver API (cuda.h) that einjit queries or sets.
inline constexpr int kAttributeMultiprocessorCount = 16;
inline constexpr int kAttributeComputeCapabilityMajor = 75;
inline constexpr int kAttributeComputeCapabilityMinor = 76;
inline constexpr int kAttributeMaxSharedMemoryPerBlockOptin = 97;
inline constexpr int kFunctionAttributeMaxDynamicSharedBytes = 8;

struct DeviceInfo {
  std::string name;           // e.g. "NVIDIA H100 80GB HBM3"
  int computeMajor = 0, computeMinor = 0;
  std::string arch;           // the NVRTC target: "sm_90a" on Hopper, else "sm_XY"
  int multiprocessors = 0;
  int sharedBytesPerBlockOptin = 0;
  int driverVersion = 0;      // e.g. 13000
};

// Why this process cannot use a GPU, or "" when it can: no libcuda.so.1 ("no CUDA driver:
// libcuda.so.1 not found (this machine has no NVIDIA GPU); use --target cpu"), a missing entry
// point, cuInit failing, or no device.
std::string cudaUnavailableReason();
bool cudaAvailable();

// The driver with device 0's primary context current on the calling thread. Throws UserError
// with cudaUnavailableReason() when there is no usable GPU.
const DriverApi& driver();
const DeviceInfo& deviceInfo();

// Throws UserError("<what>: <driver error text>") unless result is CUDA_SUCCESS.
void check(CUresult result, const char* what);

// The NVRTC architecture name for a compute capability: sm_90a for 9.0 (Hopper instructions
// allowed), sm_100a for 10.0, else sm_<major><minor>.
std::string archForComputeCapability(int major, int minor);

}  // namespace einjit::cuda
