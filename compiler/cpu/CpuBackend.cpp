#include "compiler/cpu/CpuBackend.h"

#include <cstddef>
#include <string>
#include <utility>

#include "compiler/cpu/KernelCache.h"
#include "compiler/cpu/ThreadPool.h"
#include "compiler/mlir/KernelScratch.h"
#include "einjit/error.h"
#include "runtime/reference/WeightNorm.h"

namespace einjit::cpu {
namespace {

// Row chunks are multiples of this many rows (where rows allow), so that no chunk boundary
// splits a vector or register tile of the generated code.
constexpr int64_t kRowAlignment = 8;

Shape concreteShape(const Shape& declared, int64_t rows) {
  Shape shape = declared;
  for (int64_t& extent : shape)
    if (extent == ir::kRows) extent = rows;
  return shape;
}

// One buffer of a kernel call as the row split sees it.
struct Binding {
  std::byte* base = nullptr;
  int64_t rowBytes = 0;  // bytes per row of a leading-row buffer; 0 otherwise
  bool leadingRow = false;
  bool output = false;
};

Binding bindTensor(const KernelProgram& program, ir::ValueId id, const Tensor* tensor,
                   int64_t rows, const std::string& role, bool output) {
  if (tensor == nullptr) throw UserError(program.name + ": " + role + " is missing");
  const Shape& declared = program.values.at(id).shape;
  const Shape expected = concreteShape(declared, rows);
  if (tensor->dtype() != program.dtype || tensor->shape() != expected)
    throw UserError(program.name + ": " + role + " '" + program.values[id].name + "' is " +
                    dtypeName(tensor->dtype()) + " " + shapeToString(tensor->shape()) +
                    ", expected " + dtypeName(program.dtype) + " " + shapeToString(expected));
  Binding binding;
  binding.base = static_cast<std::byte*>(const_cast<void*>(tensor->raw()));
  binding.leadingRow = program.isRowValue(id);
  if (binding.leadingRow)
    binding.rowBytes = shapeNumel(Shape(declared.begin() + 1, declared.end())) *
                       static_cast<int64_t>(dtypeSize(program.dtype));
  binding.output = output;
  return binding;
}

// The partial sum of one row chunk: kernel scratch (KernelScratch.h), so that a parameter
// gradient's partial (64 MB for dense at d = 4096) reuses pages already touched by an earlier
// call instead of faulting in fresh ones. The kernel writes every element.
class PartialSum {
 public:
  explicit PartialSum(std::size_t bytes) : data_(detail::scratchAlloc(bytes)) {
    if (data_ == nullptr) throw UserError("out of memory for a partial sum of " + std::to_string(bytes) + " bytes");
  }
  PartialSum(PartialSum&& other) noexcept : data_(std::exchange(other.data_, nullptr)) {}
  PartialSum(const PartialSum&) = delete;
  PartialSum& operator=(const PartialSum&) = delete;
  PartialSum& operator=(PartialSum&&) = delete;
  ~PartialSum() { detail::scratchFree(data_); }
  void* data() const { return data_; }

 private:
  void* data_;
};

// sum += part, the elements split among the pool's threads.
template <class T>
void addInto(ThreadPool& pool, Tensor& sum, const PartialSum& part) {
  T* out = sum.data<T>();
  const T* in = static_cast<const T*>(part.data());
  const int64_t count = sum.numel();
  const int64_t pieces = pool.size();
  pool.parallelFor(pieces, [&](int64_t piece) {
    const int64_t end = count * (piece + 1) / pieces;
    for (int64_t i = count * piece / pieces; i < end; ++i) out[i] += in[i];
  });
}

// ---- layers: the same checks and dtype rule as the reference executor (parameters are
// checked by kernelParameterTensors) ----

// `tensor` in `dtype`: itself when it already is, else a converted copy kept in `storage`.
const Tensor& inDType(const Tensor& tensor, DType dtype, Tensor& storage) {
  if (tensor.dtype() == dtype) return tensor;
  storage = tensor.to(dtype);
  return storage;
}

// A tensor for output k of `program` with `rows` rows, not zero-filled: compiled kernels write
// every element of their outputs (sums over rows included, which start from zero in the
// kernel), and zero-filling y, the saved values and dx cost BTT at d = 1024 ~1 ms a call.
Tensor outputTensor(const KernelProgram& program, std::size_t k, int64_t rows) {
  return Tensor::uninitialised(program.dtype, concreteShape(program.values.at(program.outputs.at(k)).shape, rows));
}

std::vector<const Tensor*> pointersTo(const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> pointers;
  for (const Tensor& tensor : tensors) pointers.push_back(&tensor);
  return pointers;
}

}  // namespace

std::shared_ptr<const LoadedKernel> compileKernel(const KernelProgram& program,
                                                  const CacheOptions& cache, CompileStats* stats) {
  return processKernelCache().get(program, cache, stats);
}

void runKernel(const KernelProgram& program, const LoadedKernel& kernel, int64_t rows,
               const std::vector<const Tensor*>& inputs, const std::vector<Tensor*>& outputs) {
  if (rows < 0) throw UserError(program.name + ": negative row count " + std::to_string(rows));
  if (inputs.size() != program.inputs.size() || outputs.size() != program.outputs.size())
    throw UserError(program.name + " takes " + std::to_string(program.inputs.size()) +
                    " inputs and " + std::to_string(program.outputs.size()) + " outputs, got " +
                    std::to_string(inputs.size()) + " and " + std::to_string(outputs.size()));
  std::vector<Binding> bindings;
  for (std::size_t k = 0; k < inputs.size(); ++k)
    bindings.push_back(bindTensor(program, program.inputs[k], inputs[k], rows,
                                  "input " + std::to_string(k), false));
  for (std::size_t k = 0; k < outputs.size(); ++k)
    bindings.push_back(bindTensor(program, program.outputs[k], outputs[k], rows,
                                  "output " + std::to_string(k), true));

  // Kernel programs have the row axis only in front (checkKernelProgram), so every buffer with
  // rows can be cut into row ranges. Programs without rows (classic einsums) run in one piece.
  bool anyRows = false;
  for (const Binding& binding : bindings) anyRows = anyRows || binding.leadingRow;
  ThreadPool& pool = defaultThreadPool();
  const std::vector<RowRange> chunks = anyRows ? splitRows(rows, pool.size(), kRowAlignment)
                                               : std::vector<RowRange>{{0, rows}};

  // Outputs without rows are sums over rows (parameter gradients): chunk 0 writes the output
  // itself, every later chunk a partial buffer, added in chunk order below.
  const std::size_t numChunks = chunks.size();
  std::vector<std::vector<PartialSum>> partials(numChunks);
  for (std::size_t c = 1; c < numChunks; ++c)
    for (std::size_t k = 0; k < outputs.size(); ++k)
      if (!bindings[inputs.size() + k].leadingRow)
        partials[c].emplace_back(outputs[k]->nbytes());

  pool.parallelFor(static_cast<int64_t>(numChunks), [&](int64_t c) {
    const RowRange range = chunks[c];
    std::vector<void*> buffers;
    std::size_t partial = 0;
    for (const Binding& binding : bindings) {
      if (binding.leadingRow)
        buffers.push_back(binding.base + range.begin * binding.rowBytes);
      else if (binding.output && c > 0)
        buffers.push_back(partials[c][partial++].data());
      else
        buffers.push_back(binding.base);
    }
    kernel.call(range.end - range.begin, buffers);
  });

  for (std::size_t c = 1; c < numChunks; ++c) {
    std::size_t partial = 0;
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      if (bindings[inputs.size() + k].leadingRow) continue;
      const PartialSum& part = partials[c][partial++];
      if (program.dtype == DType::F32)
        addInto<float>(pool, *outputs[k], part);
      else
        addInto<double>(pool, *outputs[k], part);
    }
  }
}

std::vector<Tensor> runTrainingForward(const KernelProgram& forward, const LoadedKernel& kernel, int64_t rows,
                                       const std::vector<const Tensor*>& inputs, Tensor& y) {
  std::vector<Tensor> saved;
  for (std::size_t k = 1; k < forward.outputs.size(); ++k) saved.push_back(outputTensor(forward, k, rows));
  std::vector<Tensor*> outputs = {&y};
  for (Tensor& value : saved) outputs.push_back(&value);
  runKernel(forward, kernel, rows, inputs, outputs);
  return saved;
}

Tensor cpuLayerForward(const ir::LayerProgram& layer, const TensorMap& params, const Tensor& x) {
  const int64_t rows = checkLayerInput(layer, x);
  const DType dtype = layerResultDType(params, x, nullptr);
  const std::vector<Tensor> weights = kernelParameterTensors(layer, params, dtype);
  Tensor xStorage;
  std::vector<const Tensor*> inputs = {&inDType(x, dtype, xStorage)};
  for (const Tensor& weight : weights) inputs.push_back(&weight);

  const KernelProgram program = forwardKernel(layer, dtype);
  const std::shared_ptr<const LoadedKernel> kernel = compileKernel(program);
  Tensor y = outputTensor(program, 0, rows);
  runKernel(program, *kernel, rows, inputs, {&y});
  return y;
}

LayerGradients cpuLayerBackward(const ir::LayerProgram& layer, const TensorMap& params,
                                const Tensor& x, const Tensor& dy) {
  const int64_t rows = checkLayerInput(layer, x);
  const DType dtype = layerResultDType(params, x, &dy);
  const std::vector<Tensor> weights = kernelParameterTensors(layer, params, dtype);
  const Shape outputShape = {rows, layer.dOut};
  if (dy.shape() != outputShape)
    throw UserError("dy has shape " + shapeToString(dy.shape()) + ", expected " +
                    shapeToString(outputShape) + " for " + layer.spec);
  Tensor xStorage, dyStorage;
  std::vector<const Tensor*> inputs = {&inDType(x, dtype, xStorage)};
  for (const Tensor& weight : weights) inputs.push_back(&weight);

  // The forward kernel also returns what the backward needs of it (trainingKernels), so the
  // backward kernel does not recompute it.
  const TrainingKernels kernels = trainingKernels(layer, dtype);
  const std::shared_ptr<const LoadedKernel> forwardCode = compileKernel(kernels.forward);
  const std::shared_ptr<const LoadedKernel> backwardCode = compileKernel(kernels.backward);

  LayerGradients result;
  result.y = outputTensor(kernels.forward, 0, rows);
  const std::vector<Tensor> saved = runTrainingForward(kernels.forward, *forwardCode, rows, inputs, result.y);

  inputs.push_back(&inDType(dy, dtype, dyStorage));
  for (const Tensor& value : saved) inputs.push_back(&value);
  const KernelProgram& backward = kernels.backward;
  std::vector<Tensor> gradients;  // dx, then one per kernel parameter input
  for (std::size_t k = 0; k < backward.outputs.size(); ++k)
    gradients.push_back(outputTensor(backward, k, rows));
  std::vector<Tensor*> outputs;
  for (Tensor& gradient : gradients) outputs.push_back(&gradient);
  runKernel(backward, *backwardCode, rows, inputs, outputs);

  result.dx = std::move(gradients.front());
  gradients.erase(gradients.begin());
  result.dparams = layerParameterGradients(layer, params, pointersTo(gradients), dtype);
  return result;
}

Tensor cpuEinsum(const BoundEinsum& einsum, const ContractionPlan& plan,
                 const std::vector<const Tensor*>& operands, DType dtype) {
  if (operands.size() != einsum.inputShapes.size())
    throw UserError("einsum " + einsum.canonical() + " takes " +
                    std::to_string(einsum.inputShapes.size()) + " operands, got " +
                    std::to_string(operands.size()));
  std::vector<Tensor> converted(operands.size());
  std::vector<const Tensor*> inputs;
  for (std::size_t k = 0; k < operands.size(); ++k) {
    if (operands[k] == nullptr)
      throw UserError("einsum " + einsum.canonical() + ": missing operand");
    if (operands[k]->shape() != einsum.inputShapes[k])
      throw UserError("einsum " + einsum.canonical() + ": operand " + std::to_string(k) +
                      " has shape " + shapeToString(operands[k]->shape()) + ", expected " +
                      shapeToString(einsum.inputShapes[k]));
    inputs.push_back(&inDType(*operands[k], dtype, converted[k]));
  }
  const KernelProgram program = einsumKernel(einsum, plan, dtype);
  const std::shared_ptr<const LoadedKernel> kernel = compileKernel(program);
  Tensor result(dtype, einsum.outputShape);
  runKernel(program, *kernel, 0, inputs, {&result});
  return result;
}

}  // namespace einjit::cpu
