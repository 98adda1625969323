#include "tests/runtime/cuda/HostOpDevice.h"

#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <vector>

#include "runtime/cuda/OpKernels.h"
#include "tests/compiler/cuda/HostSimulation.h"

namespace einjit::cuda::testing {
namespace {

using Launcher = void (*)(void** args, unsigned gridX, unsigned gridY, unsigned block, unsigned char* shared);
using PackedKernel = void (*)(long long rows, long long chunks, void* const* buffers, unsigned grid,
                              unsigned block, unsigned char* shared);

// The host flavour of a kernel program (emitHostSimulation), compiled into its own library.
class HostDeviceProgram final : public DeviceProgram {
 public:
  HostDeviceProgram(const KernelProgram& program, const EmitOptions& options)
      : DeviceProgram(emitCuda(program, options)), library_(emitHostSimulation(program, options)) {
    for (const KernelLaunch& launch : rendering().launches)
      kernels_.push_back(reinterpret_cast<PackedKernel>(library_.symbol(launch.kernel + "_packed")));
  }

  void launch(std::size_t k, unsigned grid, long long rows, long long chunks,
              const std::vector<uint64_t>& buffers) override {
    const KernelLaunch& launch = rendering().launches.at(k);
    std::vector<void*> pointers;
    for (uint64_t address : buffers) pointers.push_back(reinterpret_cast<void*>(address));
    std::vector<unsigned char> shared(static_cast<std::size_t>(launch.sharedBytes) + 16, 0xff);
    kernels_[k](rows, chunks, pointers.data(), grid, static_cast<unsigned>(launch.threads), shared.data());
    if (const char* problem = library_.problem()) throw std::runtime_error(launch.kernel + ": " + problem);
  }

 private:
  HostLibrary library_;
  std::vector<PackedKernel> kernels_;
};

class HostOpDevice final : public OpDevice {
 public:
  HostOpDevice() : library_(opKernelHostSource()) {}

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
    auto launcher = reinterpret_cast<Launcher>(library_.symbol(kernel + "_launch"));
    std::vector<unsigned char> shared(static_cast<std::size_t>(shape.sharedBytes) + 16, 0xff);
    launcher(args, shape.gridX, shape.gridY, shape.threads, shared.data());
    if (const char* problem = library_.problem()) throw std::runtime_error(kernel + ": " + problem);
  }
  // The H100's opt-in limit; few multiprocessors, so grid-stride loops take several turns.
  int64_t sharedBytesPerBlock() const override { return 227 * 1024; }
  int64_t multiprocessors() const override { return 1; }

  std::shared_ptr<DeviceProgram> loadProgram(const KernelProgram& program, Precision precision) override {
    const std::string key = program.fingerprint() + precisionName(precision);
    if (auto found = programs_.find(key); found != programs_.end()) return found->second;
    EmitOptions options;
    options.precision = precision;
    options.sharedBytesBudget = sharedBytesPerBlock();
    auto loaded = std::make_shared<HostDeviceProgram>(program, options);
    programs_.emplace(key, loaded);
    return loaded;
  }

 private:
  HostLibrary library_;
  std::map<std::string, std::shared_ptr<DeviceProgram>> programs_;
};

}  // namespace

OpDevice& hostOpDevice() {
  static HostOpDevice* device = new HostOpDevice;
  return *device;
}

}  // namespace einjit::cuda::testing
