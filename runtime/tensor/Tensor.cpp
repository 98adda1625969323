#include "einjit/tensor.h"

#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "einjit/error.h"
#include "runtime/tensor/TensorTesting.h"

namespace einjit {

namespace detail {
namespace {

constexpr std::align_val_t kTensorAlignment{64};

// Training allocates the same activation and gradient sizes every step. glibc serves blocks
// this large with fresh mmap pages, or returns them to the system when the top of the heap is
// freed, so that every step would fault in its activations page by page again (a quarter of a
// dense char-GPT training step, measured). Freed blocks of at least kMinCachedBytes are kept
// for the next allocation of the same size instead, up to kCacheLimit bytes in all; beyond
// that they go back to the system.
constexpr std::size_t kMinCachedBytes = std::size_t{64} << 10;
constexpr std::size_t kCacheLimit = std::size_t{1} << 30;

class StorageCache {
 public:
  void* take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* block = it->second.back();
    it->second.pop_back();
    cachedBytes_ -= bytes;
    return block;
  }

  // False when the cache is full: the caller frees the block.
  bool keep(void* block, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes > kCacheLimit - cachedBytes_) return false;
    try {
      free_[bytes].push_back(block);
    } catch (const std::bad_alloc&) {
      return false;
    }
    cachedBytes_ += bytes;
    return true;
  }

  void releaseAll() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, blocks] : free_)
      for (void* block : blocks) ::operator delete(block, kTensorAlignment);
    free_.clear();
    cachedBytes_ = 0;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;  // by block size
  std::size_t cachedBytes_ = 0;
};

// Never destroyed: tensors with static storage duration may be freed after it would be.
StorageCache& storageCache() {
  static StorageCache* cache = new StorageCache;
  return *cache;
}

std::atomic<bool> poisonUninitialised{false};

}  // namespace

void setPoisonUninitialisedTensors(bool on) { poisonUninitialised.store(on); }

void* allocateTensorStorage(std::size_t bytes) {
  if (bytes < kMinCachedBytes) return ::operator new(bytes, kTensorAlignment);
  if (void* block = storageCache().take(bytes)) return block;
  try {
    return ::operator new(bytes, kTensorAlignment);
  } catch (const std::bad_alloc&) {
    // Blocks of other sizes held by the cache may make room.
    storageCache().releaseAll();
    return ::operator new(bytes, kTensorAlignment);
  }
}

void releaseTensorStorage(void* block, std::size_t bytes) noexcept {
  if (bytes >= kMinCachedBytes && storageCache().keep(block, bytes)) return;
  ::operator delete(block, kTensorAlignment);
}

}  // namespace detail

const char* dtypeName(DType dtype) { return dtype == DType::F32 ? "float32" : "float64"; }
std::size_t dtypeSize(DType dtype) { return dtype == DType::F32 ? 4 : 8; }

int64_t shapeNumel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw UserError("negative dimension in shape " + shapeToString(shape));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d)
      throw UserError("shape " + shapeToString(shape) + " has too many elements (overflows int64)");
    n *= d;
  }
  return n;
}

std::string shapeToString(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

Tensor::Tensor(DType dtype, Shape shape) : Tensor(uninitialised(dtype, std::move(shape))) {
  if (!bytes_.empty()) std::memset(bytes_.data(), 0, bytes_.size());
}

Tensor Tensor::uninitialised(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = shapeNumel(t.shape_);
  if (t.numel_ > std::numeric_limits<int64_t>::max() / 8)
    throw UserError("tensor of shape " + shapeToString(t.shape_) + " is too large");
  t.bytes_.resize(static_cast<std::size_t>(t.numel_) * dtypeSize(dtype));
  // All-ones bytes are a NaN in float32 and float64.
  if (detail::poisonUninitialised.load(std::memory_order_relaxed) && !t.bytes_.empty())
    std::memset(t.bytes_.data(), 0xff, t.bytes_.size());
  return t;
}

template <>
float* Tensor::data<float>() {
  if (dtype_ != DType::F32) throw std::logic_error("Tensor::data<float> on a float64 tensor");
  return reinterpret_cast<float*>(bytes_.data());
}
template <>
const float* Tensor::data<float>() const {
  if (dtype_ != DType::F32) throw std::logic_error("Tensor::data<float> on a float64 tensor");
  return reinterpret_cast<const float*>(bytes_.data());
}
template <>
double* Tensor::data<double>() {
  if (dtype_ != DType::F64) throw std::logic_error("Tensor::data<double> on a float32 tensor");
  return reinterpret_cast<double*>(bytes_.data());
}
template <>
const double* Tensor::data<double>() const {
  if (dtype_ != DType::F64) throw std::logic_error("Tensor::data<double> on a float32 tensor");
  return reinterpret_cast<const double*>(bytes_.data());
}

double Tensor::get(int64_t flat) const {
  return dtype_ == DType::F32 ? static_cast<double>(data<float>()[flat]) : data<double>()[flat];
}

void Tensor::set(int64_t flat, double value) {
  if (dtype_ == DType::F32)
    data<float>()[flat] = static_cast<float>(value);
  else
    data<double>()[flat] = value;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor out = uninitialised(dtype, shape_);
  for (int64_t i = 0; i < numel_; ++i) out.set(i, get(i));
  return out;
}

Tensor Tensor::reshaped(Shape shape) const {
  if (shapeNumel(shape) != numel_)
    throw UserError("cannot reshape " + shapeToString(shape_) + " to " + shapeToString(shape));
  Tensor out = *this;
  out.shape_ = std::move(shape);
  return out;
}

}  // namespace einjit
