#include "tests/runtime/cuda/HostOpDevice.h"

#include <dlfcn.h>

#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "runtime/cuda/OpKernels.h"
#include "tests/compiler/cuda/HostSimulation.h"

namespace einjit::cuda::testing {
namespace {

using Launcher = void (*)(void** args, unsigned gridX, unsigned gridY, unsigned block, unsigned char* shared);
using Problem = const char* (*)();

class HostOpDevice final : public OpDevice {
 public:
  HostOpDevice() {
    const std::string library = compileHostLibrary(opKernelHostSource());
    handle_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) throw std::runtime_error(std::string("dlopen: ") + dlerror());
    std::filesystem::remove_all(std::filesystem::path(library).parent_path());
    problem_ = reinterpret_cast<Problem>(dlsym(handle_, "einjit_sim_problem"));
    if (problem_ == nullptr) throw std::runtime_error("the host flavour lacks einjit_sim_problem");
  }

  std::string name() const override { return "host simulation"; }

  std::shared_ptr<DeviceMemory> allocate(std::size_t bytes) override {
    auto* block = new unsigned char[std::max<std::size_t>(bytes, 1)];
    std::memset(block, 0xff, bytes);
    return std::make_shared<DeviceMemory>(reinterpret_cast<uint64_t>(block), bytes, [block] { delete[] block; });
  }
  void copyToDevice(uint64_t destination, const void* source, std::size_t bytes) override {
    if (bytes > 0) std::memcpy(reinterpret_cast<void*>(destination), source, bytes);
  }
  void copyToHost(void* destination, uint64_t source, std::size_t bytes) override {
    if (bytes > 0) std::memcpy(destination, reinterpret_cast<const void*>(source), bytes);
  }
  void fillZero(uint64_t destination, std::size_t bytes) override {
    if (bytes > 0) std::memset(reinterpret_cast<void*>(destination), 0, bytes);
  }
  void launch(const std::string& kernel, const LaunchShape& shape, void** args) override {
    if (shape.sharedBytes > sharedBytesPerBlock())
      throw std::runtime_error(kernel + ": " + std::to_string(shape.sharedBytes) + " bytes of shared memory");
    auto launcher = reinterpret_cast<Launcher>(dlsym(handle_, (kernel + "_launch").c_str()));
    if (launcher == nullptr) throw std::runtime_error("no kernel " + kernel + " in the op kernel source");
    std::vector<unsigned char> shared(static_cast<std::size_t>(shape.sharedBytes) + 16, 0xff);
    launcher(args, shape.gridX, shape.gridY, shape.threads, shared.data());
    if (const char* problem = problem_()) throw std::runtime_error(kernel + ": " + problem);
  }
  // The H100's opt-in limit; few multiprocessors, so grid-stride loops take several turns.
  int64_t sharedBytesPerBlock() const override { return 227 * 1024; }
  int64_t multiprocessors() const override { return 1; }

 private:
  void* handle_ = nullptr;
  Problem problem_ = nullptr;
};

}  // namespace

OpDevice& hostOpDevice() {
  static HostOpDevice* device = new HostOpDevice;
  return *device;
}

}  // namespace einjit::cuda::testing
