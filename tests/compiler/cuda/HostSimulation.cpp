#include "tests/compiler/cuda/HostSimulation.h"

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "tests/compiler/cuda/CudaTestSupport.h"

namespace einjit::cuda::testing {
namespace {

using PackedKernel = void (*)(long long rows, long long chunks, void* const* buffers, unsigned grid,
                              unsigned block, unsigned char* shared);

Shape concreteShape(Shape shape, int64_t rows) {
  for (int64_t& extent : shape)
    if (extent == ir::kRows) extent = rows;
  return shape;
}

// A host buffer holding `count` elements of the device storage type.
std::vector<unsigned char> toStorage(const Tensor& tensor, Precision precision) {
  std::vector<unsigned char> bytes(tensor.numel() * storageBytes(precision));
  for (int64_t i = 0; i < tensor.numel(); ++i) {
    const double value = tensor.get(i);
    if (precision == Precision::F64) {
      std::memcpy(bytes.data() + 8 * i, &value, 8);
    } else {
      const float f = precision == Precision::BF16 ? roundToBf16(static_cast<float>(value))
                                                   : static_cast<float>(value);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      if (precision == Precision::F32) {
        std::memcpy(bytes.data() + 4 * i, &bits, 4);
      } else {
        const uint16_t high = static_cast<uint16_t>(bits >> 16);
        std::memcpy(bytes.data() + 2 * i, &high, 2);
      }
    }
  }
  return bytes;
}

Tensor fromStorage(const std::vector<unsigned char>& bytes, const Shape& shape, Precision precision) {
  Tensor tensor(DType::F64, shape);
  for (int64_t i = 0; i < tensor.numel(); ++i) {
    if (precision == Precision::F64) {
      double value;
      std::memcpy(&value, bytes.data() + 8 * i, 8);
      tensor.set(i, value);
    } else {
      uint32_t bits = 0;
      if (precision == Precision::F32) {
        std::memcpy(&bits, bytes.data() + 4 * i, 4);
      } else {
        uint16_t high;
        std::memcpy(&high, bytes.data() + 2 * i, 2);
        bits = uint32_t{high} << 16;
      }
      float f;
      std::memcpy(&f, &bits, 4);
      tensor.set(i, f);
    }
  }
  return tensor;
}

std::string compileLibrary(const std::string& source) {
  static std::atomic<int> counter{0};
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("einjit-cuda-sim-" + std::to_string(::getpid()) + "-" +
                                     std::to_string(counter++));
  std::filesystem::create_directories(dir);
  const std::string cpp = (dir / "kernels.cpp").string(), so = (dir / "kernels.so").string();
  std::ofstream(cpp) << source;
  const std::string command = "c++ -std=c++17 -O1 -shared -fPIC -w -o " + so + " " + cpp;
  if (std::system(command.c_str()) != 0)
    throw std::runtime_error("the host simulation does not compile: " + cpp);
  return so;
}

}  // namespace

std::vector<Tensor> simulateOnHost(const KernelProgram& program, const EmitOptions& options,
                                   int64_t rows, const std::vector<const Tensor*>& inputs) {
  const CudaProgram device = emitCuda(program, options);
  const HostLibrary library(emitHostSimulation(program, options));

  std::vector<std::vector<unsigned char>> buffers;
  for (const Tensor* input : inputs) buffers.push_back(toStorage(*input, options.precision));
  std::vector<Shape> outputShapes;
  for (ir::ValueId id : program.outputs) {
    outputShapes.push_back(concreteShape(program.values[id].shape, rows));
    buffers.emplace_back(shapeNumel(outputShapes.back()) * storageBytes(options.precision), 0xff);
  }
  for (const ScratchBuffer& scratch : device.scratch)
    buffers.emplace_back(scratch.bytes(rows), 0xff);
  std::vector<void*> pointers;
  for (auto& buffer : buffers) pointers.push_back(buffer.data());

  forEachLaunch(device, rows, [&](std::size_t k, unsigned grid, long long chunks) {
    const KernelLaunch& launch = device.launches[k];
    auto kernel = reinterpret_cast<PackedKernel>(library.symbol(launch.kernel + "_packed"));
    std::vector<unsigned char> shared(launch.sharedBytes, 0xff);
    kernel(rows, chunks, pointers.data(), grid, static_cast<unsigned>(launch.threads), shared.data());
    if (const char* problem = library.problem()) throw std::runtime_error(launch.kernel + ": " + problem);
  });

  std::vector<Tensor> outputs;
  for (std::size_t k = 0; k < outputShapes.size(); ++k)
    outputs.push_back(fromStorage(buffers[inputs.size() + k], outputShapes[k], options.precision));
  return outputs;
}

std::string compileHostLibrary(const std::string& source) { return compileLibrary(source); }

HostLibrary::HostLibrary(const std::string& source) {
  const std::string library = compileLibrary(source);
  handle_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  std::filesystem::remove_all(std::filesystem::path(library).parent_path());
  if (handle_ == nullptr) throw std::runtime_error(std::string("dlopen: ") + dlerror());
  problem_ = reinterpret_cast<const char* (*)()>(dlsym(handle_, "einjit_sim_problem"));
  if (problem_ == nullptr) {
    dlclose(handle_);
    throw std::runtime_error("the host simulation lacks einjit_sim_problem");
  }
}

HostLibrary::~HostLibrary() { dlclose(handle_); }

void* HostLibrary::symbol(const std::string& name) const {
  void* address = dlsym(handle_, name.c_str());
  if (address == nullptr) throw std::runtime_error("the host simulation has no " + name);
  return address;
}

}  // namespace einjit::cuda::testing
