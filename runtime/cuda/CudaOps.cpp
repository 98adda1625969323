#include "runtime/cuda/CudaOps.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "einjit/error.h"
#include "runtime/cuda/OpKernels.h"

namespace einjit::cuda {
namespace {

// Grid-stride kernels get at most this many blocks per multiprocessor.
constexpr int64_t kBlocksPerMultiprocessor = 16;
constexpr int64_t kWarpsPerBlock = kOpThreads / 32;
constexpr int64_t kMaxGridY = 65535;

std::string kernelName(const char* op, Precision precision) {
  return std::string("einjit_") + op + (precision == Precision::BF16 ? "_bf16" : "_f32");
}

void checkStoragePrecision(Precision precision) {
  if (precision != Precision::F32 && precision != Precision::BF16)
    throw UserError(std::string("GPU op tensors are stored as f32 or bf16, not ") +
                    precisionName(precision));
}

void checkDefined(const char* op, const DeviceTensor& t, const char* what) {
  if (!t.defined()) throw UserError(std::string(op) + ": " + what + " is an undefined device tensor");
}

void checkRank2(const char* op, const DeviceTensor& t, const char* what) {
  checkDefined(op, t, what);
  if (t.shape().size() != 2)
    throw UserError(std::string(op) + ": " + what + " must be 2-D (rows, features), got shape " +
                    shapeToString(t.shape()));
}

// b lives on a's device and is stored in a's precision.
void checkCompatible(const char* op, const DeviceTensor& a, const char* aName, const DeviceTensor& b,
                     const char* bName) {
  checkDefined(op, a, aName);
  checkDefined(op, b, bName);
  if (&a.device() != &b.device())
    throw UserError(std::string(op) + ": " + aName + " and " + bName + " live on different devices");
  if (a.precision() != b.precision())
    throw UserError(std::string(op) + ": " + aName + " is " + precisionName(a.precision()) + " but " + bName +
                    " is " + precisionName(b.precision()) + "; both must have the same precision");
}

void checkSameShape(const char* op, const DeviceTensor& a, const char* aName, const DeviceTensor& b,
                    const char* bName) {
  checkCompatible(op, a, aName, b, bName);
  if (a.shape() != b.shape())
    throw UserError(std::string(op) + ": " + aName + " has shape " + shapeToString(a.shape()) + " but " + bName +
                    " has shape " + shapeToString(b.shape()) + "; expected equal shapes");
}

void checkFinite(const char* op, const char* what, double value) {
  if (!std::isfinite(value))
    throw UserError(std::string(op) + ": " + what + " must be finite, got " + std::to_string(value));
}

unsigned gridFor(OpDevice& device, int64_t blocks) {
  return static_cast<unsigned>(
      std::clamp<int64_t>(blocks, 1, std::max<int64_t>(1, device.multiprocessors()) * kBlocksPerMultiprocessor));
}
// Grid-stride over `count` elements, one per thread.
LaunchShape elementLaunch(OpDevice& device, int64_t count) {
  LaunchShape shape;
  shape.gridX = gridFor(device, (count + kOpThreads - 1) / kOpThreads);
  shape.threads = kOpThreads;
  return shape;
}
// Grid-stride over `count` rows, one warp per row.
LaunchShape warpPerRowLaunch(OpDevice& device, int64_t count) {
  LaunchShape shape;
  shape.gridX = gridFor(device, (count + kWarpsPerBlock - 1) / kWarpsPerBlock);
  shape.threads = kOpThreads;
  return shape;
}
// Grid-stride over `count` items, one block each.
LaunchShape blockPerItemLaunch(OpDevice& device, int64_t count) {
  LaunchShape shape;
  shape.gridX = gridFor(device, count);
  shape.threads = kOpThreads;
  return shape;
}

// Launches with the arguments in order: device addresses as uint64_t, sizes as int64_t, scalars
// as float (the kernels' 8-byte long long / pointer and 4-byte float parameters).
template <class... Args>
void launchKernel(OpDevice& device, const std::string& kernel, const LaunchShape& shape, Args... values) {
  static_assert(((sizeof(Args) == 8 || std::is_same_v<Args, float>) && ...));
  void* args[] = {static_cast<void*>(&values)...};
  device.launch(kernel, shape, args);
}

uint64_t addressOrNull(const DeviceTensor* t) { return t ? t->address() : 0; }

// bfloat16 bits of x, round to nearest even; NaN stays NaN.
uint16_t toBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

std::shared_ptr<DeviceMemory> uploadBytes(OpDevice& device, const void* data, std::size_t bytes) {
  auto memory = device.allocate(bytes);
  device.copyToDevice(memory->address(), data, bytes);
  return memory;
}

}  // namespace

// ---- DeviceTensor ----

DeviceTensor DeviceTensor::empty(OpDevice& device, const Shape& shape, Precision precision) {
  checkStoragePrecision(precision);
  for (int64_t extent : shape)
    if (extent < 0) throw UserError("a device tensor cannot have shape " + shapeToString(shape));
  DeviceTensor t;
  t.device_ = &device;
  t.shape_ = shape;
  t.precision_ = precision;
  t.memory_ = device.allocate(static_cast<std::size_t>(shapeNumel(shape)) * storageBytes(precision));
  return t;
}

DeviceTensor DeviceTensor::zeros(OpDevice& device, const Shape& shape, Precision precision) {
  DeviceTensor t = empty(device, shape, precision);
  device.fillZero(t.address(), static_cast<std::size_t>(t.numel()) * storageBytes(precision));
  return t;
}

DeviceTensor DeviceTensor::upload(OpDevice& device, const Tensor& tensor, Precision precision) {
  DeviceTensor t = empty(device, tensor.shape(), precision);
  const int64_t count = tensor.numel();
  if (precision == Precision::F32) {
    std::vector<float> values(static_cast<std::size_t>(count));
    for (int64_t i = 0; i < count; ++i) values[i] = static_cast<float>(tensor.get(i));
    device.copyToDevice(t.address(), values.data(), values.size() * sizeof(float));
  } else {
    std::vector<uint16_t> values(static_cast<std::size_t>(count));
    for (int64_t i = 0; i < count; ++i) values[i] = toBf16(static_cast<float>(tensor.get(i)));
    device.copyToDevice(t.address(), values.data(), values.size() * sizeof(uint16_t));
  }
  return t;
}

Tensor DeviceTensor::download(DType dtype) const {
  if (!defined()) throw UserError("download: the device tensor is undefined");
  Tensor tensor(dtype, shape_);
  const int64_t count = numel();
  if (precision_ == Precision::F32) {
    std::vector<float> values(static_cast<std::size_t>(count));
    device_->copyToHost(values.data(), address(), values.size() * sizeof(float));
    for (int64_t i = 0; i < count; ++i) tensor.set(i, values[i]);
  } else {
    std::vector<uint16_t> values(static_cast<std::size_t>(count));
    device_->copyToHost(values.data(), address(), values.size() * sizeof(uint16_t));
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t bits = uint32_t{values[i]} << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      tensor.set(i, f);
    }
  }
  return tensor;
}

DeviceTensor DeviceTensor::reshaped(const Shape& shape) const {
  if (!defined()) throw UserError("reshape: the device tensor is undefined");
  for (int64_t extent : shape)
    if (extent < 0) throw UserError("reshape: a device tensor cannot have shape " + shapeToString(shape));
  if (shapeNumel(shape) != numel())
    throw UserError("reshape: a device tensor of shape " + shapeToString(shape_) + " cannot be viewed as " +
                    shapeToString(shape) + " (" + std::to_string(numel()) + " elements against " +
                    std::to_string(shapeNumel(shape)) + ")");
  DeviceTensor view = *this;
  view.shape_ = shape;
  return view;
}

// ---- DeviceIds ----

DeviceIds::DeviceIds(OpDevice& device, const std::vector<int32_t>& ids, int64_t classes, const char* what)
    : count_(static_cast<int64_t>(ids.size())), classes_(classes) {
  if (ids.empty()) throw UserError(std::string(what) + ": no ids given (expected at least one)");
  if (classes < 1)
    throw UserError(std::string(what) + ": the number of classes must be >= 1, got " + std::to_string(classes));
  for (std::size_t r = 0; r < ids.size(); ++r)
    if (ids[r] < 0 || ids[r] >= classes)
      throw UserError(std::string(what) + ": id " + std::to_string(ids[r]) + " at position " + std::to_string(r) +
                      " is out of range, expected [0, " + std::to_string(classes) + ")");
  // Rows grouped by id (counting sort, rows ascending within an id).
  std::vector<int64_t> start(static_cast<std::size_t>(classes) + 1, 0);
  for (int32_t id : ids) ++start[static_cast<std::size_t>(id) + 1];
  for (int64_t c = 0; c < classes; ++c) start[c + 1] += start[c];
  std::vector<int64_t> order(ids.size()), next(start.begin(), start.end() - 1);
  for (std::size_t r = 0; r < ids.size(); ++r) order[next[ids[r]]++] = static_cast<int64_t>(r);
  ids_ = uploadBytes(device, ids.data(), ids.size() * sizeof(int32_t));
  start_ = uploadBytes(device, start.data(), start.size() * sizeof(int64_t));
  order_ = uploadBytes(device, order.data(), order.size() * sizeof(int64_t));
}

// ---- embedding ----

DeviceTensor embedding(const DeviceIds& ids, const DeviceTensor& table) {
  checkRank2("embedding", table, "the table");
  const int64_t width = table.shape()[1];
  if (table.shape()[0] != ids.classes())
    throw UserError("embedding: the table has " + std::to_string(table.shape()[0]) + " rows but the ids were " +
                    "checked against " + std::to_string(ids.classes()) + " classes");
  OpDevice& device = table.device();
  DeviceTensor out = DeviceTensor::empty(device, {ids.count(), width}, table.precision());
  if (out.numel() > 0)
    launchKernel(device, kernelName("embedding", table.precision()), elementLaunch(device, out.numel()), ids.ids(),
                 table.address(), out.address(), ids.count(), width);
  return out;
}

DeviceTensor embeddingBackward(const DeviceIds& ids, const DeviceTensor& dout) {
  checkRank2("embeddingBackward", dout, "d(out)");
  if (dout.shape()[0] != ids.count())
    throw UserError("embeddingBackward: d(out) has " + std::to_string(dout.shape()[0]) + " rows, expected one per id (" +
                    std::to_string(ids.count()) + ")");
  OpDevice& device = dout.device();
  const int64_t width = dout.shape()[1];
  DeviceTensor dtable = DeviceTensor::empty(device, {ids.classes(), width}, dout.precision());
  if (dtable.numel() > 0)
    launchKernel(device, kernelName("embedding_backward", dout.precision()),
                 blockPerItemLaunch(device, ids.classes()), ids.groupStart(), ids.groupRows(), dout.address(),
                 dtable.address(), ids.classes(), width);
  return dtable;
}

// ---- residual add, scale, bias ----

DeviceTensor add(const DeviceTensor& a, const DeviceTensor& b) {
  checkSameShape("add", a, "a", b, "b");
  DeviceTensor y = DeviceTensor::empty(a.device(), a.shape(), a.precision());
  if (y.numel() > 0)
    launchKernel(a.device(), kernelName("add", a.precision()), elementLaunch(a.device(), y.numel()), a.address(),
                 b.address(), y.address(), y.numel());
  return y;
}

void addInto(DeviceTensor& target, const DeviceTensor& x) {
  checkSameShape("addInto", target, "the target", x, "x");
  // Elementwise in place: every element is read and written by the same thread.
  if (x.numel() > 0)
    launchKernel(x.device(), kernelName("add", x.precision()), elementLaunch(x.device(), x.numel()),
                 target.address(), x.address(), target.address(), x.numel());
}

DeviceTensor scale(const DeviceTensor& x, double factor) {
  checkDefined("scale", x, "x");
  checkFinite("scale", "the factor", factor);
  DeviceTensor y = DeviceTensor::empty(x.device(), x.shape(), x.precision());
  if (y.numel() > 0)
    launchKernel(x.device(), kernelName("scale", x.precision()), elementLaunch(x.device(), y.numel()), x.address(),
                 y.address(), y.numel(), static_cast<float>(factor));
  return y;
}

DeviceTensor addBias(const DeviceTensor& x, const DeviceTensor& bias) {
  checkRank2("addBias", x, "x");
  checkCompatible("addBias", x, "x", bias, "the bias");
  const int64_t rows = x.shape()[0], width = x.shape()[1];
  if (bias.shape() != Shape{width})
    throw UserError("addBias: the bias has shape " + shapeToString(bias.shape()) + ", expected " +
                    shapeToString({width}) + " for x of shape " + shapeToString(x.shape()));
  DeviceTensor y = DeviceTensor::empty(x.device(), x.shape(), x.precision());
  if (y.numel() > 0)
    launchKernel(x.device(), kernelName("add_bias", x.precision()), elementLaunch(x.device(), y.numel()),
                 x.address(), bias.address(), y.address(), rows, width);
  return y;
}

namespace {

// out[j] = sum of partial[c * cols + j] over chunks c, in chunk order, stored in `precision`.
DeviceTensor finishColumns(OpDevice& device, const DeviceMemory& partial, int64_t chunks, int64_t cols,
                           Precision precision) {
  DeviceTensor out = DeviceTensor::empty(device, {cols}, precision);
  if (cols > 0)
    launchKernel(device, kernelName("column_finish", precision), elementLaunch(device, cols), partial.address(),
                 out.address(), chunks, cols);
  return out;
}

int64_t columnChunks(int64_t rows) { return (rows + kColumnSumRows - 1) / kColumnSumRows; }

}  // namespace

DeviceTensor columnSums(const DeviceTensor& dy) {
  checkRank2("columnSums", dy, "dy");
  OpDevice& device = dy.device();
  const int64_t rows = dy.shape()[0], cols = dy.shape()[1], chunks = columnChunks(rows);
  auto partial = device.allocate(static_cast<std::size_t>(chunks * cols) * sizeof(float));
  if (chunks * cols > 0)
    launchKernel(device, kernelName("column_partials", dy.precision()), elementLaunch(device, chunks * cols),
                 dy.address(), partial->address(), rows, cols);
  return finishColumns(device, *partial, chunks, cols, dy.precision());
}

// ---- LayerNorm ----

LayerNormForward layerNorm(const DeviceTensor& x, const DeviceTensor* gamma, const DeviceTensor* beta, double eps) {
  checkRank2("layerNorm", x, "x");
  const int64_t rows = x.shape()[0], width = x.shape()[1];
  if (width == 0) throw UserError("layerNorm: x " + shapeToString(x.shape()) + " has no features to normalise");
  if (!(eps >= 0) || !std::isfinite(eps))
    throw UserError("layerNorm: eps must be finite and >= 0, got " + std::to_string(eps));
  for (const auto& [param, what] : {std::pair{gamma, "gamma"}, std::pair{beta, "beta"}}) {
    if (!param) continue;
    checkCompatible("layerNorm", x, "x", *param, what);
    if (param->shape() != Shape{width})
      throw UserError(std::string("layerNorm: ") + what + " has shape " + shapeToString(param->shape()) +
                      ", expected " + shapeToString({width}) + " for x of shape " + shapeToString(x.shape()));
  }
  OpDevice& device = x.device();
  LayerNormForward result;
  result.y = DeviceTensor::empty(device, x.shape(), x.precision());
  result.mean = DeviceTensor::empty(device, {rows}, Precision::F32);
  result.rstd = DeviceTensor::empty(device, {rows}, Precision::F32);
  if (rows > 0)
    launchKernel(device, kernelName("layer_norm", x.precision()), warpPerRowLaunch(device, rows), x.address(),
                 addressOrNull(gamma), addressOrNull(beta), result.y.address(), result.mean.address(),
                 result.rstd.address(), rows, width, static_cast<float>(eps));
  return result;
}

LayerNormGradients layerNormBackward(const DeviceTensor& x, const DeviceTensor* gamma, const LayerNormForward& saved,
                                     const DeviceTensor& dy, bool parameterGradients) {
  checkRank2("layerNormBackward", x, "x");
  checkSameShape("layerNormBackward", x, "x", dy, "dy");
  const int64_t rows = x.shape()[0], width = x.shape()[1];
  if (gamma) {
    checkCompatible("layerNormBackward", x, "x", *gamma, "gamma");
    if (gamma->shape() != Shape{width})
      throw UserError("layerNormBackward: gamma has shape " + shapeToString(gamma->shape()) + ", expected " +
                      shapeToString({width}));
  }
  for (const DeviceTensor* stat : {&saved.mean, &saved.rstd}) {
    checkDefined("layerNormBackward", *stat, "a saved statistic");
    if (stat->shape() != Shape{rows} || stat->precision() != Precision::F32)
      throw UserError("layerNormBackward: the saved statistics do not belong to x of shape " +
                      shapeToString(x.shape()) + " (expected f32 of shape " + shapeToString({rows}) + ")");
  }
  OpDevice& device = x.device();
  LayerNormGradients result;
  result.dx = DeviceTensor::empty(device, x.shape(), x.precision());
  if (rows > 0 && width > 0)
    launchKernel(device, kernelName("layer_norm_backward", x.precision()), warpPerRowLaunch(device, rows),
                 x.address(), dy.address(), addressOrNull(gamma), saved.mean.address(), saved.rstd.address(),
                 result.dx.address(), rows, width);
  if (!parameterGradients) return result;
  const int64_t chunks = columnChunks(rows);
  auto partialGamma = device.allocate(static_cast<std::size_t>(chunks * width) * sizeof(float));
  auto partialBeta = device.allocate(static_cast<std::size_t>(chunks * width) * sizeof(float));
  if (chunks * width > 0)
    launchKernel(device, kernelName("layer_norm_param_partials", x.precision()),
                 elementLaunch(device, chunks * width), x.address(), dy.address(), saved.mean.address(),
                 saved.rstd.address(), partialGamma->address(), partialBeta->address(), rows, width);
  result.dgamma = finishColumns(device, *partialGamma, chunks, width, x.precision());
  result.dbeta = finishColumns(device, *partialBeta, chunks, width, x.precision());
  return result;
}

// ---- activations ----

namespace {

DeviceTensor unary(const char* op, const char* kernel, const DeviceTensor& x) {
  checkDefined(op, x, "x");
  DeviceTensor y = DeviceTensor::empty(x.device(), x.shape(), x.precision());
  if (y.numel() > 0)
    launchKernel(x.device(), kernelName(kernel, x.precision()), elementLaunch(x.device(), y.numel()), x.address(),
                 y.address(), y.numel());
  return y;
}

}  // namespace

DeviceTensor gelu(const DeviceTensor& x) { return unary("gelu", "gelu", x); }

DeviceTensor geluBackward(const DeviceTensor& x, const DeviceTensor& dy) {
  checkSameShape("geluBackward", x, "x", dy, "dy");
  DeviceTensor dx = DeviceTensor::empty(x.device(), x.shape(), x.precision());
  if (dx.numel() > 0)
    launchKernel(x.device(), kernelName("gelu_backward", x.precision()), elementLaunch(x.device(), dx.numel()),
                 x.address(), dy.address(), dx.address(), dx.numel());
  return dx;
}

DeviceTensor relu(const DeviceTensor& x, double gain) {
  checkDefined("relu", x, "x");
  checkFinite("relu", "the gain", gain);
  DeviceTensor y = DeviceTensor::empty(x.device(), x.shape(), x.precision());
  if (y.numel() > 0)
    launchKernel(x.device(), kernelName("relu", x.precision()), elementLaunch(x.device(), y.numel()), x.address(),
                 y.address(), y.numel(), static_cast<float>(gain));
  return y;
}

DeviceTensor reluBackward(const DeviceTensor& x, const DeviceTensor& dy, double gain) {
  checkSameShape("reluBackward", x, "x", dy, "dy");
  checkFinite("reluBackward", "the gain", gain);
  DeviceTensor dx = DeviceTensor::empty(x.device(), x.shape(), x.precision());
  if (dx.numel() > 0)
    launchKernel(x.device(), kernelName("relu_backward", x.precision()), elementLaunch(x.device(), dx.numel()),
                 x.address(), dy.address(), dx.address(), dx.numel(), static_cast<float>(gain));
  return dx;
}

// ---- cross-entropy ----

namespace {

void checkLogits(const char* op, const DeviceTensor& logits, const DeviceIds& targets) {
  checkRank2(op, logits, "the logits");
  const int64_t rows = logits.shape()[0], vocab = logits.shape()[1];
  if (rows == 0 || vocab == 0)
    throw UserError(std::string(op) + ": the logits " + shapeToString(logits.shape()) +
                    " are empty; expected at least one row and one class");
  if (targets.count() != rows || targets.classes() != vocab)
    throw UserError(std::string(op) + ": " + std::to_string(targets.count()) + " targets over " +
                    std::to_string(targets.classes()) + " classes for logits of shape " +
                    shapeToString(logits.shape()) + "; expected one target per row and one class per column");
}

}  // namespace

CrossEntropyForward crossEntropy(const DeviceTensor& logits, const DeviceIds& targets) {
  checkLogits("crossEntropy", logits, targets);
  const int64_t rows = logits.shape()[0], vocab = logits.shape()[1];
  OpDevice& device = logits.device();
  CrossEntropyForward result;
  result.lse = DeviceTensor::empty(device, {rows}, Precision::F32);
  result.loss = DeviceTensor::empty(device, {}, Precision::F32);
  auto rowLoss = device.allocate(static_cast<std::size_t>(rows) * sizeof(float));
  launchKernel(device, kernelName("cross_entropy", logits.precision()), warpPerRowLaunch(device, rows),
               logits.address(), targets.ids(), result.lse.address(), rowLoss->address(), rows, vocab);
  launchKernel(device, "einjit_cross_entropy_mean", LaunchShape{1, 1, kOpThreads, 0}, rowLoss->address(),
               result.loss.address(), rows);
  return result;
}

DeviceTensor crossEntropyBackward(const DeviceTensor& logits, const DeviceIds& targets,
                                  const CrossEntropyForward& saved, double lossGradient) {
  checkLogits("crossEntropyBackward", logits, targets);
  checkFinite("crossEntropyBackward", "the loss gradient", lossGradient);
  const int64_t rows = logits.shape()[0], vocab = logits.shape()[1];
  checkDefined("crossEntropyBackward", saved.lse, "the saved log-sum-exp");
  if (saved.lse.shape() != Shape{rows} || saved.lse.precision() != Precision::F32)
    throw UserError("crossEntropyBackward: the saved log-sum-exp does not belong to logits of shape " +
                    shapeToString(logits.shape()));
  OpDevice& device = logits.device();
  DeviceTensor dlogits = DeviceTensor::empty(device, logits.shape(), logits.precision());
  launchKernel(device, kernelName("cross_entropy_backward", logits.precision()), elementLaunch(device, rows * vocab),
               logits.address(), targets.ids(), saved.lse.address(), dlogits.address(), rows, vocab,
               static_cast<float>(lossGradient / static_cast<double>(rows)));
  return dlogits;
}

// ---- attention ----

namespace {

// The head dimension, after checking q, k, v and the shape.
int64_t checkAttention(const char* op, const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                       const AttentionShape& shape) {
  checkRank2(op, q, "q");
  checkSameShape(op, q, "q", k, "k");
  checkSameShape(op, q, "q", v, "v");
  if (shape.batch < 1 || shape.seq < 1 || shape.heads < 1)
    throw UserError(std::string(op) + ": batch, seq and heads must be >= 1, got " + std::to_string(shape.batch) +
                    ", " + std::to_string(shape.seq) + " and " + std::to_string(shape.heads));
  const int64_t rows = q.shape()[0], width = q.shape()[1];
  if (rows % shape.batch != 0 || rows / shape.batch != shape.seq)
    throw UserError(std::string(op) + ": q has " + std::to_string(rows) + " rows, expected batch * seq = " +
                    std::to_string(shape.batch) + " * " + std::to_string(shape.seq));
  if (width == 0 || width % shape.heads != 0)
    throw UserError(std::string(op) + ": the width " + std::to_string(width) +
                    " of q is not a positive multiple of heads = " + std::to_string(shape.heads));
  const int64_t headDim = width / shape.heads;
  if (headDim > kMaxHeadDim)
    throw UserError(std::string(op) + ": the head dimension " + std::to_string(headDim) +
                    " is above the GPU kernel's limit of " + std::to_string(kMaxHeadDim));
  if (shape.batch * shape.heads > kMaxGridY)
    throw UserError(std::string(op) + ": batch * heads = " + std::to_string(shape.batch * shape.heads) +
                    " exceeds " + std::to_string(kMaxGridY) + " (one grid row per sequence and head)");
  checkFinite(op, "logitScale", shape.logitScale);
  return headDim;
}

LaunchShape attentionLaunch(const AttentionShape& shape, int64_t sharedBytes) {
  LaunchShape launch;
  launch.gridX = static_cast<unsigned>((shape.seq + kAttentionTile - 1) / kAttentionTile);
  launch.gridY = static_cast<unsigned>(shape.batch * shape.heads);
  launch.threads = kOpThreads;
  launch.sharedBytes = sharedBytes;
  return launch;
}

}  // namespace

AttentionForward causalSelfAttention(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                     const AttentionShape& shape) {
  const int64_t headDim = checkAttention("causalSelfAttention", q, k, v, shape);
  OpDevice& device = q.device();
  AttentionForward result;
  result.out = DeviceTensor::empty(device, q.shape(), q.precision());
  result.lse = DeviceTensor::empty(device, {q.shape()[0], shape.heads}, Precision::F32);
  launchKernel(device, kernelName("attention", q.precision()),
               attentionLaunch(shape, attentionForwardSharedBytes(headDim)), q.address(), k.address(), v.address(),
               result.out.address(), result.lse.address(), shape.seq, shape.heads, headDim,
               static_cast<float>(shape.logitScale));
  return result;
}

AttentionGradients causalSelfAttentionBackward(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v,
                                               const AttentionForward& saved, const DeviceTensor& dout,
                                               const AttentionShape& shape) {
  const char* op = "causalSelfAttentionBackward";
  const int64_t headDim = checkAttention(op, q, k, v, shape);
  checkSameShape(op, q, "q", saved.out, "the saved output");
  checkSameShape(op, q, "q", dout, "d(out)");
  const int64_t rows = q.shape()[0];
  checkDefined(op, saved.lse, "the saved log-sum-exp");
  if (saved.lse.shape() != Shape{rows, shape.heads} || saved.lse.precision() != Precision::F32)
    throw UserError(std::string(op) + ": the saved log-sum-exp has shape " + shapeToString(saved.lse.shape()) +
                    ", expected f32 " + shapeToString({rows, shape.heads}));
  OpDevice& device = q.device();
  auto delta = device.allocate(static_cast<std::size_t>(rows * shape.heads) * sizeof(float));
  launchKernel(device, kernelName("attention_row_dot", q.precision()), warpPerRowLaunch(device, rows * shape.heads),
               saved.out.address(), dout.address(), delta->address(), rows, shape.heads, headDim);
  AttentionGradients result;
  result.dq = DeviceTensor::empty(device, q.shape(), q.precision());
  result.dk = DeviceTensor::empty(device, q.shape(), q.precision());
  result.dv = DeviceTensor::empty(device, q.shape(), q.precision());
  const auto scale = static_cast<float>(shape.logitScale);
  launchKernel(device, kernelName("attention_key_grad", q.precision()),
               attentionLaunch(shape, attentionKeyGradSharedBytes(headDim)), q.address(), k.address(), v.address(),
               dout.address(), saved.lse.address(), delta->address(), result.dk.address(), result.dv.address(),
               shape.seq, shape.heads, headDim, scale);
  launchKernel(device, kernelName("attention_query_grad", q.precision()),
               attentionLaunch(shape, attentionQueryGradSharedBytes(headDim)), q.address(), k.address(),
               v.address(), dout.address(), saved.lse.address(), delta->address(), result.dq.address(), shape.seq,
               shape.heads, headDim, scale);
  return result;
}

// ---- mean squared error ----

DeviceTensor meanSquaredError(const DeviceTensor& pred, const DeviceTensor& target) {
  checkSameShape("meanSquaredError", pred, "the prediction", target, "the target");
  if (pred.numel() == 0) throw UserError("meanSquaredError: the prediction is empty");
  DeviceTensor loss = DeviceTensor::empty(pred.device(), {}, Precision::F32);
  LaunchShape one;
  one.threads = kOpThreads;
  launchKernel(pred.device(), kernelName("mse", pred.precision()), one, pred.address(), target.address(),
               loss.address(), pred.numel());
  return loss;
}

DeviceTensor meanSquaredErrorBackward(const DeviceTensor& pred, const DeviceTensor& target, double lossGradient) {
  checkSameShape("meanSquaredErrorBackward", pred, "the prediction", target, "the target");
  checkFinite("meanSquaredErrorBackward", "lossGradient", lossGradient);
  if (pred.numel() == 0) throw UserError("meanSquaredErrorBackward: the prediction is empty");
  DeviceTensor dpred = DeviceTensor::empty(pred.device(), pred.shape(), pred.precision());
  const float factor = static_cast<float>(2.0 * lossGradient / static_cast<double>(pred.numel()));
  launchKernel(pred.device(), kernelName("mse_backward", pred.precision()), elementLaunch(pred.device(), pred.numel()),
               pred.address(), target.address(), dpred.address(), pred.numel(), factor);
  return dpred;
}

// ---- weight normalisation ----

namespace {

void checkWeightNormOperands(const char* op, const DeviceTensor& w, const DeviceTensor* gamma, double sigma,
                             double eps) {
  checkDefined(op, w, "w");
  if (w.precision() != Precision::F32) throw UserError(std::string(op) + ": w must be the f32 master weight");
  if (gamma != nullptr) {
    checkCompatible(op, w, "w", *gamma, "gamma");
    if (gamma->numel() != 1)
      throw UserError(std::string(op) + ": gamma must hold one element, got shape " + shapeToString(gamma->shape()));
  }
  if (!(sigma > 0) || !std::isfinite(sigma) || !(eps >= 0) || !std::isfinite(eps))
    throw UserError(std::string(op) + ": needs sigma > 0 and eps >= 0, got " + std::to_string(sigma) + " and " +
                    std::to_string(eps));
}

// stats[0] = sum(w^2), stats[1] = sum(g * w) (0 without g), in one block.
DeviceTensor weightNormStats(const DeviceTensor& w, const DeviceTensor* g, Precision precision) {
  DeviceTensor stats = DeviceTensor::empty(w.device(), {2}, Precision::F32);
  LaunchShape one;
  one.threads = kOpThreads;
  launchKernel(w.device(), kernelName("weight_norm_stats", precision), one, w.address(), addressOrNull(g),
               stats.address(), w.numel());
  return stats;
}

}  // namespace

DeviceTensor weightNorm(const DeviceTensor& w, const DeviceTensor* gamma, double sigma, double eps,
                        Precision precision) {
  checkWeightNormOperands("weightNorm", w, gamma, sigma, eps);
  checkStoragePrecision(precision);
  const DeviceTensor stats = weightNormStats(w, nullptr, precision);
  DeviceTensor y = DeviceTensor::empty(w.device(), w.shape(), precision);
  if (w.numel() > 0)
    launchKernel(w.device(), kernelName("weight_norm_apply", precision), elementLaunch(w.device(), w.numel()),
                 w.address(), addressOrNull(gamma), stats.address(), y.address(), w.numel(),
                 static_cast<float>(sigma), static_cast<float>(eps));
  return y;
}

WeightNormGradients weightNormBackward(const DeviceTensor& w, const DeviceTensor* gamma, double sigma, double eps,
                                       const DeviceTensor& dNormalised) {
  checkWeightNormOperands("weightNormBackward", w, gamma, sigma, eps);
  checkDefined("weightNormBackward", dNormalised, "dNormalised");
  if (dNormalised.shape() != w.shape() || &dNormalised.device() != &w.device())
    throw UserError("weightNormBackward: dNormalised has shape " + shapeToString(dNormalised.shape()) +
                    ", expected w's " + shapeToString(w.shape()) + " on w's device");
  const Precision precision = dNormalised.precision();
  const DeviceTensor stats = weightNormStats(w, &dNormalised, precision);
  WeightNormGradients g;
  g.dw = DeviceTensor::empty(w.device(), w.shape(), precision);
  if (gamma != nullptr) g.dgamma = DeviceTensor::zeros(w.device(), {}, precision);
  if (w.numel() > 0)
    launchKernel(w.device(), kernelName("weight_norm_backward", precision), elementLaunch(w.device(), w.numel()),
                 w.address(), addressOrNull(gamma), stats.address(), dNormalised.address(), g.dw.address(),
                 gamma != nullptr ? g.dgamma.address() : uint64_t{0}, w.numel(), static_cast<float>(sigma),
                 static_cast<float>(eps));
  return g;
}

// ---- conversion ----

DeviceTensor convert(const DeviceTensor& x, Precision precision) {
  checkDefined("convert", x, "x");
  checkStoragePrecision(precision);
  if (x.precision() == precision) return x;
  DeviceTensor y = DeviceTensor::empty(x.device(), x.shape(), precision);
  const char* kernel =
      precision == Precision::BF16 ? "einjit_convert_f32_to_bf16" : "einjit_convert_bf16_to_f32";
  if (y.numel() > 0)
    launchKernel(x.device(), kernel, elementLaunch(x.device(), y.numel()), x.address(), y.address(), y.numel());
  return y;
}

// ---- AdamW ----

DeviceAdamW::DeviceAdamW(std::vector<Parameter> parameters, rt::AdamWConfig config)
    : parameters_(std::move(parameters)), config_(config) {
  auto finiteAtLeast = [](double value, double low) { return std::isfinite(value) && value >= low; };
  if (!finiteAtLeast(config_.lr, 0) || !finiteAtLeast(config_.weightDecay, 0) || !finiteAtLeast(config_.eps, 0) ||
      !std::isfinite(config_.clipNorm))
    throw UserError("DeviceAdamW: lr, weightDecay and eps must be finite and >= 0 and clipNorm finite");
  if (!(config_.beta1 >= 0 && config_.beta1 < 1) || !(config_.beta2 >= 0 && config_.beta2 < 1))
    throw UserError("DeviceAdamW: beta1 and beta2 must lie in [0, 1), got " + std::to_string(config_.beta1) +
                    " and " + std::to_string(config_.beta2));
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const Parameter& p = parameters_[i];
    const std::string which = "DeviceAdamW: parameter " + std::to_string(i);
    if (!p.value.defined()) throw UserError(which + " is an undefined device tensor");
    if (p.value.precision() != Precision::F32)
      throw UserError(which + " is " + precisionName(p.value.precision()) +
                      "; master weights must be f32 (convert copies to bf16 for the matmuls)");
    if (&p.value.device() != &parameters_.front().value.device())
      throw UserError(which + " lives on another device than parameter 0");
    if (!finiteAtLeast(p.lrMultiplier, 0))
      throw UserError(which + " has an invalid lr multiplier " + std::to_string(p.lrMultiplier));
    m_.push_back(DeviceTensor::zeros(p.value.device(), p.value.shape(), Precision::F32));
    v_.push_back(DeviceTensor::zeros(p.value.device(), p.value.shape(), Precision::F32));
  }
}

void DeviceAdamW::restore(const std::vector<Tensor>& firstMoments, const std::vector<Tensor>& secondMoments,
                          int64_t steps) {
  if (firstMoments.size() != parameters_.size() || secondMoments.size() != parameters_.size())
    throw UserError("DeviceAdamW: " + std::to_string(firstMoments.size()) + " and " +
                    std::to_string(secondMoments.size()) + " moments given for " + std::to_string(parameters_.size()) +
                    " parameters");
  if (steps < 0) throw UserError("DeviceAdamW: the step count must be >= 0, got " + std::to_string(steps));
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const Shape& shape = parameters_[i].value.shape();
    if (firstMoments[i].shape() != shape || secondMoments[i].shape() != shape)
      throw UserError("DeviceAdamW: the moments of parameter " + std::to_string(i) + " do not have its shape " +
                      shapeToString(shape));
  }
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    m_[i] = DeviceTensor::upload(parameters_[i].value.device(), firstMoments[i], Precision::F32);
    v_[i] = DeviceTensor::upload(parameters_[i].value.device(), secondMoments[i], Precision::F32);
  }
  steps_ = steps;
}

double DeviceAdamW::step(const std::vector<DeviceTensor>& grads, double lrFactor) {
  if (!std::isfinite(lrFactor) || lrFactor < 0)
    throw UserError("DeviceAdamW: lrFactor must be finite and >= 0, got " + std::to_string(lrFactor));
  if (grads.size() != parameters_.size())
    throw UserError("DeviceAdamW: " + std::to_string(grads.size()) + " gradients for " +
                    std::to_string(parameters_.size()) + " parameters; expected one (or an undefined tensor) each");
  std::optional<Precision> gradPrecision;
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) continue;
    const DeviceTensor& value = parameters_[i].value;
    if (grads[i].shape() != value.shape() || &grads[i].device() != &value.device())
      throw UserError("DeviceAdamW: the gradient of parameter " + std::to_string(i) + " has shape " +
                      shapeToString(grads[i].shape()) + ", expected " + shapeToString(value.shape()) +
                      " on the parameter's device");
    if (gradPrecision && *gradPrecision != grads[i].precision())
      throw UserError("DeviceAdamW: the gradients mix f32 and bf16; expected one precision");
    gradPrecision = grads[i].precision();
  }

  ++steps_;
  const double t = static_cast<double>(steps_);
  const double biasCorrection1 = 1.0 - std::pow(config_.beta1, t);
  const double biasCorrection2 = 1.0 - std::pow(config_.beta2, t);
  std::vector<AdamWTensorEntry> tensors;
  std::vector<AdamWChunkEntry> chunks;
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined() || grads[i].numel() == 0) continue;
    const double lr = config_.lr * lrFactor * parameters_[i].lrMultiplier;
    const double decay = parameters_[i].weightDecay ? config_.weightDecay : 0.0;
    AdamWTensorEntry entry;
    entry.param = parameters_[i].value.address();
    entry.grad = grads[i].address();
    entry.m = m_[i].address();
    entry.v = v_[i].address();
    entry.count = grads[i].numel();
    entry.stepSize = static_cast<float>(lr / biasCorrection1);
    entry.decayFactor = static_cast<float>(1.0 - lr * decay);
    for (int64_t begin = 0; begin < entry.count; begin += kAdamWChunk)
      chunks.push_back({static_cast<int64_t>(tensors.size()), begin});
    tensors.push_back(entry);
  }
  if (chunks.empty()) return 0.0;

  OpDevice& device = parameters_.front().value.device();
  auto tensorTable = uploadBytes(device, tensors.data(), tensors.size() * sizeof(AdamWTensorEntry));
  auto chunkTable = uploadBytes(device, chunks.data(), chunks.size() * sizeof(AdamWChunkEntry));
  const auto chunkCount = static_cast<int64_t>(chunks.size());
  auto partial = device.allocate(static_cast<std::size_t>(chunkCount) * sizeof(float));
  auto scalars = device.allocate(2 * sizeof(float));
  const LaunchShape perChunk = blockPerItemLaunch(device, chunkCount);
  launchKernel(device, kernelName("adamw_square_partials", *gradPrecision), perChunk, tensorTable->address(),
               chunkTable->address(), chunkCount, partial->address());
  launchKernel(device, "einjit_adamw_finish_norm", LaunchShape{1, 1, kOpThreads, 0}, partial->address(), chunkCount,
               static_cast<float>(config_.clipNorm), scalars->address());
  launchKernel(device, kernelName("adamw_update", *gradPrecision), perChunk, tensorTable->address(),
               chunkTable->address(), chunkCount, scalars->address(), static_cast<float>(config_.beta1),
               static_cast<float>(config_.beta2), static_cast<float>(config_.eps),
               static_cast<float>(std::sqrt(biasCorrection2)));
  float norm = 0;
  device.copyToHost(&norm, scalars->address(), sizeof(float));
  return norm;
}

}  // namespace einjit::cuda
