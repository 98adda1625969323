#include "compiler/cuda/CudaAllocator.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

namespace einjit::cuda {
namespace {

class CachingAllocator {
 public:
  CUdeviceptr allocate(std::size_t bytes, std::size_t& sizeClass) {
    sizeClass = 256;
    while (sizeClass < bytes) sizeClass *= 2;
    {
      std::lock_guard lock(mutex_);
      std::vector<CUdeviceptr>& list = free_[sizeClass];
      if (!list.empty()) {
        const CUdeviceptr pointer = list.back();
        list.pop_back();
        return pointer;
      }
    }
    CUdeviceptr pointer = 0;
    check(driver().cuMemAlloc(&pointer, sizeClass), "cuMemAlloc");
    return pointer;
  }
  void release(CUdeviceptr pointer, std::size_t sizeClass) {
    std::lock_guard lock(mutex_);
    free_[sizeClass].push_back(pointer);
  }

 private:
  std::mutex mutex_;
  std::map<std::size_t, std::vector<CUdeviceptr>> free_;
};

// Never destroyed: buffers cached at exit are reclaimed with the process.
CachingAllocator& allocator() {
  static CachingAllocator* instance = new CachingAllocator;
  return *instance;
}

}  // namespace

CUdeviceptr allocateDevice(std::size_t bytes, std::size_t& sizeClass) {
  return allocator().allocate(bytes, sizeClass);
}

void releaseDevice(CUdeviceptr pointer, std::size_t sizeClass) {
  allocator().release(pointer, sizeClass);
}

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  pointer_ = allocateDevice(std::max<std::size_t>(bytes, 1), sizeClass_);
}

DeviceBuffer::~DeviceBuffer() { releaseDevice(pointer_, sizeClass_); }

}  // namespace einjit::cuda
