#include "einjit/tensor.h"

#include <cstring>
#include <limits>

#include "einjit/error.h"

namespace einjit {

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

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  numel_ = shapeNumel(shape_);
  if (numel_ > std::numeric_limits<int64_t>::max() / 8)
    throw UserError("tensor of shape " + shapeToString(shape_) + " is too large");
  bytes_.assign(static_cast<std::size_t>(numel_) * dtypeSize(dtype_), std::byte{0});
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
  Tensor out(dtype, shape_);
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
