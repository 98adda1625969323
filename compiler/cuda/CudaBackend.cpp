#include "compiler/cuda/CudaBackend.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "compiler/cuda/CudaAllocator.h"
#include "compiler/cuda/CudaDriver.h"
#include "compiler/cuda/Nvrtc.h"
#include "einjit/error.h"
#include "runtime/io/Npy.h"
#include "runtime/reference/WeightNorm.h"

namespace einjit::cuda {
namespace {

constexpr const char* kBackendVersion = "einjit-cuda-backend 1";
constexpr int64_t kDefaultDynamicSharedLimit = 48 * 1024;  // usable without opting in

void warnDiskOnce(const std::string& problem) {
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::cerr << "einjit: warning: CUDA kernel disk cache unavailable (" << problem
              << "); compiling in memory\n";
}

// The whole file, or nullopt when it does not exist or cannot be read (then the entry is rebuilt).
std::optional<std::string> readFileIfPresent(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return std::nullopt;
  return bytes;
}

// ---- host <-> device conversion ----

uint16_t toBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

std::unique_ptr<DeviceBuffer> upload(const Tensor& tensor, Precision precision) {
  std::string bytes(tensor.numel() * storageBytes(precision), '\0');
  for (int64_t i = 0; i < tensor.numel(); ++i) {
    const double value = tensor.get(i);
    if (precision == Precision::F64) {
      std::memcpy(&bytes[8 * i], &value, 8);
    } else if (precision == Precision::F32) {
      const float f = static_cast<float>(value);
      std::memcpy(&bytes[4 * i], &f, 4);
    } else {
      const uint16_t b = toBf16(static_cast<float>(value));
      std::memcpy(&bytes[2 * i], &b, 2);
    }
  }
  auto buffer = std::make_unique<DeviceBuffer>(bytes.size());
  if (!bytes.empty()) check(driver().cuMemcpyHtoD(buffer->pointer(), bytes.data(), bytes.size()), "cuMemcpyHtoD");
  return buffer;
}

Tensor download(const DeviceBuffer& buffer, const Shape& shape, Precision precision, DType dtype) {
  Tensor tensor(dtype, shape);
  std::string bytes(tensor.numel() * storageBytes(precision), '\0');
  if (!bytes.empty()) check(driver().cuMemcpyDtoH(bytes.data(), buffer.pointer(), bytes.size()), "cuMemcpyDtoH");
  for (int64_t i = 0; i < tensor.numel(); ++i) {
    if (precision == Precision::F64) {
      double value;
      std::memcpy(&value, &bytes[8 * i], 8);
      tensor.set(i, value);
    } else {
      uint32_t bits = 0;
      if (precision == Precision::F32) {
        std::memcpy(&bits, &bytes[4 * i], 4);
      } else {
        uint16_t high;
        std::memcpy(&high, &bytes[2 * i], 2);
        bits = uint32_t{high} << 16;
      }
      float f;
      std::memcpy(&f, &bits, 4);
      tensor.set(i, f);
    }
  }
  return tensor;
}

// ---- compiled programs ----

EmitOptions deviceEmitOptions(Precision precision) {
  EmitOptions options;
  options.precision = precision;
  options.sharedBytesBudget = deviceInfo().sharedBytesPerBlockOptin;
  return options;
}

// Launches every kernel of `compiled` on device buffers (inputs, then outputs).
void launch(const LoadedCudaProgram& compiled, int64_t rows, const std::vector<CUdeviceptr>& buffers) {
  std::vector<std::unique_ptr<DeviceBuffer>> scratch;
  std::vector<CUdeviceptr> pointers = buffers;
  for (const ScratchBuffer& buffer : compiled.program.scratch) {
    scratch.push_back(std::make_unique<DeviceBuffer>(buffer.bytes(rows)));
    pointers.push_back(scratch.back()->pointer());
  }
  forEachLaunch(compiled.program, rows, [&](std::size_t k, unsigned grid, long long chunks) {
    launchCudaKernel(compiled, k, grid, rows, chunks, pointers);
  });
  check(driver().cuCtxSynchronize(), "cuCtxSynchronize");
}

Shape concreteShape(Shape shape, int64_t rows) {
  for (int64_t& extent : shape)
    if (extent == ir::kRows) extent = rows;
  return shape;
}

// Runs `program` on host tensors; returns the outputs in `dtype`.
std::vector<Tensor> runOnDevice(const KernelProgram& program, Precision precision, int64_t rows,
                                const std::vector<const Tensor*>& inputs, DType dtype,
                                const cpu::CacheOptions& cache) {
  const std::shared_ptr<const LoadedCudaProgram> compiled = loadCudaProgram(program, precision, cache);
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const Shape expected = concreteShape(program.values[program.inputs[k]].shape, rows);
    if (inputs[k]->shape() != expected)
      throw UserError(program.name + ": input " + std::to_string(k) + " has shape " +
                      shapeToString(inputs[k]->shape()) + ", expected " + shapeToString(expected));
    buffers.push_back(upload(*inputs[k], precision));
  }
  std::vector<Shape> outputShapes;
  for (ir::ValueId id : program.outputs) {
    outputShapes.push_back(concreteShape(program.values[id].shape, rows));
    buffers.push_back(std::make_unique<DeviceBuffer>(shapeNumel(outputShapes.back()) * storageBytes(precision)));
  }
  std::vector<CUdeviceptr> pointers;
  for (const auto& buffer : buffers) pointers.push_back(buffer->pointer());
  launch(*compiled, rows, pointers);
  std::vector<Tensor> outputs;
  for (std::size_t k = 0; k < outputShapes.size(); ++k)
    outputs.push_back(download(*buffers[inputs.size() + k], outputShapes[k], precision, dtype));
  return outputs;
}

Precision precisionFor(const CudaOptions& options, DType dtype) {
  if (options.precision) return *options.precision;
  return dtype == DType::F64 ? Precision::F64 : Precision::F32;
}

}  // namespace

std::string cudaCacheKeyText(const KernelProgram& program, const EmitOptions& options,
                             const std::string& arch, const std::string& nvrtcVersionText) {
  return std::string("einjit cuda kernel\n") + kBackendVersion + "\narch " + arch + "\nnvrtc " +
         nvrtcVersionText + "\nprecision " + precisionName(options.precision) + "\nshared " +
         std::to_string(options.sharedBytesBudget) + "\nthreads " + std::to_string(options.threadsPerBlock) +
         "\n" + program.fingerprint();
}

std::string encodeCubinPayload(const std::string& plan, const std::string& cubin) {
  return plan + '\0' + cubin;
}

std::optional<std::string> decodeCubinPayload(const std::string& payload, const std::string& plan) {
  const std::size_t end = payload.find('\0');
  if (end == std::string::npos || payload.compare(0, end, plan) != 0 || end + 1 == payload.size())
    return std::nullopt;
  return payload.substr(end + 1);
}

CubinLookup cachedCubin(const std::string& keyText, const std::string& plan,
                        const cpu::CacheOptions& cache, const std::function<std::string()>& compile) {
  std::string path;
  const cpu::CacheKey key{keyText, cpu::toHex(cpu::sha256(keyText))};
  if (cache.useDisk) {
    try {
      const std::string directory = cpu::cacheDirectory(cache);
      std::error_code error;
      std::filesystem::create_directories(directory, error);
      if (error)
        warnDiskOnce("cannot create '" + directory + "': " + error.message());
      else
        path = cpu::cacheEntryPath(directory, key);
    } catch (const UserError& error) {
      warnDiskOnce(error.what());
    }
  }
  if (!path.empty()) {
    if (std::optional<std::string> bytes = readFileIfPresent(path)) {
      if (std::optional<std::string> payload = cpu::decodeCacheEntry(*bytes, keyText))
        if (std::optional<std::string> cubin = decodeCubinPayload(*payload, plan))
          return {std::move(*cubin), true};
    }
  }
  CubinLookup lookup{compile(), false};
  if (!path.empty()) {
    try {
      writeFileAtomically(path, cpu::encodeCacheEntry(keyText, encodeCubinPayload(plan, lookup.cubin)));
    } catch (const UserError& error) {
      warnDiskOnce(error.what());
    }
  }
  return lookup;
}

std::shared_ptr<const LoadedCudaProgram> loadCudaProgram(const KernelProgram& kernel, Precision precision,
                                                         const cpu::CacheOptions& cache) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::shared_ptr<const LoadedCudaProgram>> memory;
  const EmitOptions options = deviceEmitOptions(precision);
  const std::string arch = deviceInfo().arch;
  const std::string key = cudaCacheKeyText(kernel, options, arch, nvrtcVersion());
  {
    std::lock_guard lock(mutex);
    if (auto found = memory.find(key); found != memory.end()) return found->second;
  }
  auto compiled = std::make_shared<LoadedCudaProgram>();
  compiled->program = emitCuda(kernel, options);
  const CubinLookup cubin = cachedCubin(key, compiled->program.launchPlan(), cache, [&] {
    return nvrtcCompile(compiled->program.source, kernel.name + ".cu", arch).cubin;
  });
  const DriverApi& api = driver();
  check(api.cuModuleLoadData(&compiled->module, cubin.cubin.data()), "cuModuleLoadData");
  for (const KernelLaunch& launch : compiled->program.launches) {
    CUfunction function = nullptr;
    check(api.cuModuleGetFunction(&function, compiled->module, launch.kernel.c_str()), "cuModuleGetFunction");
    if (launch.sharedBytes > kDefaultDynamicSharedLimit)
      check(api.cuFuncSetAttribute(function, kFunctionAttributeMaxDynamicSharedBytes,
                                   static_cast<int>(launch.sharedBytes)),
            "cuFuncSetAttribute");
    compiled->functions.push_back(function);
  }
  std::lock_guard lock(mutex);
  return memory.try_emplace(key, std::move(compiled)).first->second;
}

void launchCudaKernel(const LoadedCudaProgram& loaded, std::size_t k, unsigned grid, long long rows,
                      long long chunks, const std::vector<CUdeviceptr>& buffers) {
  const KernelLaunch& launch = loaded.program.launches.at(k);
  std::vector<CUdeviceptr> pointers = buffers;
  std::vector<void*> args = {&rows, &chunks};
  for (CUdeviceptr& pointer : pointers) args.push_back(&pointer);
  check(driver().cuLaunchKernel(loaded.functions[k], grid, 1, 1, static_cast<unsigned>(launch.threads), 1, 1,
                                static_cast<unsigned>(launch.sharedBytes), nullptr, args.data(), nullptr),
        launch.kernel.c_str());
}

Tensor cudaLayerForward(const ir::LayerProgram& layer, const TensorMap& params, const Tensor& x,
                        const CudaOptions& options) {
  const int64_t rows = checkLayerInput(layer, x);
  const DType dtype = layerResultDType(params, x, nullptr);
  const std::vector<Tensor> weights = kernelParameterTensors(layer, params, dtype);
  std::vector<const Tensor*> inputs = {&x};
  for (const Tensor& weight : weights) inputs.push_back(&weight);
  return runOnDevice(forwardKernel(layer, dtype), precisionFor(options, dtype), rows, inputs, dtype,
                     options.cache)
      .front();
}

LayerGradients cudaLayerBackward(const ir::LayerProgram& layer, const TensorMap& params,
                                 const Tensor& x, const Tensor& dy, const CudaOptions& options) {
  const int64_t rows = checkLayerInput(layer, x);
  const DType dtype = layerResultDType(params, x, &dy);
  const Shape outputShape = {rows, layer.dOut};
  if (dy.shape() != outputShape)
    throw UserError("dy has shape " + shapeToString(dy.shape()) + ", expected " +
                    shapeToString(outputShape) + " for " + layer.spec);
  const std::vector<Tensor> weights = kernelParameterTensors(layer, params, dtype);
  const Precision precision = precisionFor(options, dtype);
  std::vector<const Tensor*> inputs = {&x};
  for (const Tensor& weight : weights) inputs.push_back(&weight);

  LayerGradients result;
  result.y = runOnDevice(forwardKernel(layer, dtype), precision, rows, inputs, dtype, options.cache).front();
  inputs.push_back(&dy);
  std::vector<Tensor> gradients =
      runOnDevice(backwardKernel(layer, dtype), precision, rows, inputs, dtype, options.cache);
  result.dx = std::move(gradients.front());
  std::vector<const Tensor*> parameterGradients;
  for (std::size_t k = 1; k < gradients.size(); ++k) parameterGradients.push_back(&gradients[k]);
  result.dparams = layerParameterGradients(layer, params, parameterGradients, dtype);
  return result;
}

Tensor cudaEinsum(const BoundEinsum& einsum, const ContractionPlan& plan,
                  const std::vector<const Tensor*>& operands, DType dtype, const CudaOptions& options) {
  if (operands.size() != einsum.inputShapes.size())
    throw UserError("einsum " + einsum.canonical() + " takes " + std::to_string(einsum.inputShapes.size()) +
                    " operands, got " + std::to_string(operands.size()));
  for (const Tensor* operand : operands)
    if (operand == nullptr) throw UserError("einsum " + einsum.canonical() + ": missing operand");
  return runOnDevice(einsumKernel(einsum, plan, dtype), precisionFor(options, dtype), 0, operands, dtype,
                     options.cache)
      .front();
}

CudaLayerTiming cudaTimeLayer(const ir::LayerProgram& layer, int64_t rows, Precision precision,
                              bool backward, int repeats) {
  if (rows <= 0 || repeats <= 0) throw UserError("timing needs positive rows and repeats");
  const TensorMap params = initLayerParams(layer, 1, DType::F32);
  const std::vector<Tensor> weights = kernelParameterTensors(layer, params, DType::F32);
  const KernelProgram forward = forwardKernel(layer, DType::F32);
  const KernelProgram backwardProgram = backwardKernel(layer, DType::F32);
  const cpu::CacheOptions cache;
  const auto forwardCode = loadCudaProgram(forward, precision, cache);
  const auto backwardCode = backward ? loadCudaProgram(backwardProgram, precision, cache) : nullptr;

  // x and dy: a fixed pseudo-random pattern in [-1, 1).
  Tensor x(DType::F32, {rows, layer.dIn}), dy(DType::F32, {rows, layer.dOut});
  for (Tensor* t : {&x, &dy})
    for (int64_t i = 0; i < t->numel(); ++i) t->set(i, static_cast<double>((i * 2654435761u) % 2001) / 1000.0 - 1.0);
  std::vector<std::unique_ptr<DeviceBuffer>> owned;
  auto deviceCopy = [&](const Tensor& tensor) {
    owned.push_back(upload(tensor, precision));
    return owned.back()->pointer();
  };
  auto deviceOutput = [&](const KernelProgram& program, std::size_t k) {
    owned.push_back(std::make_unique<DeviceBuffer>(
        shapeNumel(concreteShape(program.values[program.outputs[k]].shape, rows)) * storageBytes(precision)));
    return owned.back()->pointer();
  };
  std::vector<CUdeviceptr> forwardBuffers = {deviceCopy(x)};
  for (const Tensor& weight : weights) forwardBuffers.push_back(deviceCopy(weight));
  std::vector<CUdeviceptr> backwardBuffers = forwardBuffers;
  backwardBuffers.push_back(deviceCopy(dy));
  forwardBuffers.push_back(deviceOutput(forward, 0));
  for (std::size_t k = 0; k < backwardProgram.outputs.size(); ++k)
    backwardBuffers.push_back(deviceOutput(backwardProgram, k));

  auto pass = [&] {
    launch(*forwardCode, rows, forwardBuffers);
    if (backward) launch(*backwardCode, rows, backwardBuffers);
  };
  const DriverApi& api = driver();
  pass();  // warm-up (and allocator fill)
  CUevent start = nullptr, stop = nullptr;
  check(api.cuEventCreate(&start, 0), "cuEventCreate");
  check(api.cuEventCreate(&stop, 0), "cuEventCreate");
  std::vector<double> times;
  for (int k = 0; k < repeats; ++k) {
    check(api.cuEventRecord(start, nullptr), "cuEventRecord");
    pass();
    check(api.cuEventRecord(stop, nullptr), "cuEventRecord");
    check(api.cuEventSynchronize(stop), "cuEventSynchronize");
    float milliseconds = 0;
    check(api.cuEventElapsedTime(&milliseconds, start, stop), "cuEventElapsedTime");
    times.push_back(milliseconds);
  }
  api.cuEventDestroy(start);
  api.cuEventDestroy(stop);
  std::sort(times.begin(), times.end());
  CudaLayerTiming timing;
  timing.milliseconds = times[times.size() / 2];
  timing.device = deviceInfo().name;
  timing.launchPlan = forwardCode->program.launchPlan();
  if (backward) timing.launchPlan += backwardCode->program.launchPlan();
  return timing;
}

}  // namespace einjit::cuda
