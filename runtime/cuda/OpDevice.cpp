#include "runtime/cuda/OpDevice.h"

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "compiler/cuda/CudaAllocator.h"
#include "compiler/cuda/CudaBackend.h"
#include "compiler/cuda/CudaDriver.h"
#include "compiler/cuda/Nvrtc.h"
#include "einjit/error.h"
#include "runtime/cuda/OpKernels.h"

namespace einjit::cuda {
namespace {

// Dynamic shared memory a kernel may use without opting in.
constexpr int64_t kDefaultDynamicSharedLimit = 48 * 1024;
// The disk entry's "plan": the op kernels have no launch plan; a fixed text keeps the entry
// format of the layer kernels.
constexpr const char* kCubinPlan = "einjit op kernels";

class GpuDeviceProgram final : public DeviceProgram {
 public:
  explicit GpuDeviceProgram(std::shared_ptr<const LoadedCudaProgram> loaded)
      : DeviceProgram(loaded->program), loaded_(std::move(loaded)) {}

  void launch(std::size_t k, unsigned grid, long long rows, long long chunks,
              const std::vector<uint64_t>& buffers) override {
    launchCudaKernel(*loaded_, k, grid, rows, chunks, std::vector<CUdeviceptr>(buffers.begin(), buffers.end()));
  }


 private:
  std::shared_ptr<const LoadedCudaProgram> loaded_;
};

class GpuOpDevice final : public OpDevice {
 public:
  GpuOpDevice() {
    const DriverApi& api = driver();
    cubin_ = opKernelCubin(deviceInfo().arch);
    check(api.cuModuleLoadData(&module_, cubin_.data()), "cuModuleLoadData (op kernels)");
  }

  std::string name() const override { return deviceInfo().name; }

  std::shared_ptr<DeviceMemory> allocate(std::size_t bytes) override {
    std::size_t sizeClass = 0;
    const CUdeviceptr pointer = allocateDevice(std::max<std::size_t>(bytes, 1), sizeClass);
    return std::make_shared<DeviceMemory>(pointer, bytes,
                                          [pointer, sizeClass] { releaseDevice(pointer, sizeClass); });
  }

  void copyToDevice(uint64_t destination, const void* source, std::size_t bytes) override {
    if (bytes > 0) check(driver().cuMemcpyHtoD(destination, source, bytes), "cuMemcpyHtoD");
  }

  void copyToHost(void* destination, uint64_t source, std::size_t bytes) override {
    check(driver().cuCtxSynchronize(), "a GPU op kernel");
    if (bytes > 0) check(driver().cuMemcpyDtoH(destination, source, bytes), "cuMemcpyDtoH");
  }

  void fillZero(uint64_t destination, std::size_t bytes) override {
    if (bytes > 0) check(driver().cuMemsetD8(destination, 0, bytes), "cuMemsetD8");
  }

  void launch(const std::string& kernel, const LaunchShape& shape, void** args) override {
    if (shape.sharedBytes > sharedBytesPerBlock())
      throw UserError(kernel + " needs " + std::to_string(shape.sharedBytes) +
                      " bytes of shared memory per block; the GPU allows " +
                      std::to_string(sharedBytesPerBlock()));
    const DriverApi& api = driver();
    check(api.cuLaunchKernel(function(kernel), shape.gridX, shape.gridY, 1, shape.threads, 1, 1,
                             static_cast<unsigned>(shape.sharedBytes), nullptr, args, nullptr),
          kernel.c_str());
  }

  int64_t sharedBytesPerBlock() const override { return deviceInfo().sharedBytesPerBlockOptin; }
  int64_t multiprocessors() const override { return deviceInfo().multiprocessors; }

  // loadCudaProgram compiles and loads each program once per process (memory and disk caches).
  std::shared_ptr<DeviceProgram> loadProgram(const KernelProgram& program, Precision precision) override {
    return std::make_shared<GpuDeviceProgram>(loadCudaProgram(program, precision));
  }

 private:
  // The kernel's handle, looked up once; kernels may use all the opt-in shared memory.
  CUfunction function(const std::string& kernel) {
    std::lock_guard lock(mutex_);
    if (auto found = functions_.find(kernel); found != functions_.end()) return found->second;
    const DriverApi& api = driver();
    CUfunction handle = nullptr;
    check(api.cuModuleGetFunction(&handle, module_, kernel.c_str()), kernel.c_str());
    if (sharedBytesPerBlock() > kDefaultDynamicSharedLimit)
      check(api.cuFuncSetAttribute(handle, kFunctionAttributeMaxDynamicSharedBytes,
                                   static_cast<int>(sharedBytesPerBlock())),
            "cuFuncSetAttribute");
    functions_.emplace(kernel, handle);
    return handle;
  }

  std::string cubin_;
  CUmodule module_ = nullptr;
  std::mutex mutex_;
  std::unordered_map<std::string, CUfunction> functions_;
};

}  // namespace

OpDevice& gpuOpDevice() {
  // Never destroyed (the driver outlives every static that frees device memory). A failed
  // construction throws and is retried by the next call.
  static GpuOpDevice* device = new GpuOpDevice;
  return *device;
}

std::string opKernelCacheKeyText(const std::string& arch, const std::string& nvrtcVersionText) {
  return "einjit cuda op kernels\narch " + arch + "\nnvrtc " + nvrtcVersionText + "\nsource " +
         cpu::toHex(cpu::sha256(opKernelSource())) + "\n";
}

std::string opKernelCubin(const std::string& arch, const cpu::CacheOptions& cache) {
  return cachedCubin(opKernelCacheKeyText(arch, nvrtcVersion()), kCubinPlan, cache, [&] {
           return nvrtcCompile(opKernelSource(), "einjit_op_kernels.cu", arch).cubin;
         })
      .cubin;
}

}  // namespace einjit::cuda
