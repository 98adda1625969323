// A dense, contiguous, row-major (C order) host tensor of float32 or float64.
// This is the data type every executor consumes and produces; it owns its storage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

namespace einjit {

namespace detail {

// Tensor storage blocks, 64-byte aligned (a cache line, one AVX-512 vector); defined in
// runtime/tensor/Tensor.cpp.
void* allocateTensorStorage(std::size_t bytes);
void releaseTensorStorage(void* block, std::size_t bytes) noexcept;

// The allocator of tensor storage. Elements are default-initialised, so that resizing leaves
// fresh bytes unwritten; Tensor's constructor zero-fills them explicitly,
// Tensor::uninitialised does not.
template <class T>
struct TensorAllocator {
  using value_type = T;

  TensorAllocator() = default;
  template <class U>
  TensorAllocator(const TensorAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) { return static_cast<T*>(allocateTensorStorage(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { releaseTensorStorage(p, n * sizeof(T)); }
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(static_cast<Args&&>(args)...);
  }
  template <class U>
  bool operator==(const TensorAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace detail

enum class DType { F32, F64 };

const char* dtypeName(DType dtype);  // "float32" / "float64"
std::size_t dtypeSize(DType dtype);

using Shape = std::vector<int64_t>;

// Product of the dimensions; throws UserError when it overflows int64 or a dimension is negative.
int64_t shapeNumel(const Shape& shape);
std::string shapeToString(const Shape& shape);  // "(2, 3)"

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape);  // zero-filled
  // A tensor whose elements are left unwritten (whatever the allocation held), for results
  // that the caller overwrites element by element: it saves the zero-fill pass.
  static Tensor uninitialised(DType dtype, Shape shape);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t numel() const { return numel_; }
  std::size_t nbytes() const { return bytes_.size(); }

  template <class T>
  T* data();
  template <class T>
  const T* data() const;
  void* raw() { return bytes_.data(); }
  const void* raw() const { return bytes_.data(); }

  // Element access by flat (row-major) index, converting through double.
  double get(int64_t flat) const;
  void set(int64_t flat, double value);

  Tensor to(DType dtype) const;
  // Same data, new shape with the same number of elements (throws UserError otherwise).
  Tensor reshaped(Shape shape) const;

 private:
  DType dtype_ = DType::F32;
  Shape shape_;
  int64_t numel_ = 0;
  std::vector<std::byte, detail::TensorAllocator<std::byte>> bytes_;
};

}  // namespace einjit
