// Element types, their conversions, and the strided view / owning tensor.
#include "attnkit/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace attnkit {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16:
    case DType::f16: return 2;
  }
  return 0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
  }
  return "?";
}

DType parse_dtype(std::string_view name) {
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::f16})
    if (name == dtype_name(t)) return t;
  throw Error(fmt::format("dtype '{}' is not one of f32, f64, bf16, f16", name));
}

uint16_t float_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x40);  // keep it a quiet NaN
  u += 0x7FFF + ((u >> 16) & 1);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

uint16_t float_to_f16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const uint32_t sign = (u >> 16) & 0x8000;
  const uint32_t abs = u & 0x7FFFFFFF;
  if (abs > 0x7F800000) return static_cast<uint16_t>(sign | 0x7E00);  // NaN
  if (abs >= 0x477FF000) return static_cast<uint16_t>(sign | 0x7C00);  // rounds to inf
  if (abs < 0x38800000) {
    // Subnormal half (or zero): the value is abs_float * 2^24 rounded to an integer.
    float f;
    uint32_t a = abs;
    std::memcpy(&f, &a, sizeof f);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(f * 16777216.0f)));
  }
  // Normal: rebias exponent 127 -> 15, round the 13 dropped mantissa bits to even.
  uint32_t h = ((abs - 0x38000000) >> 13);
  const uint32_t rest = abs & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t{h} & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t man = h & 0x3FF;
  float out;
  if (exp == 0) {
    out = std::ldexp(static_cast<float>(man), -24);
    return sign ? -out : out;
  }
  uint32_t u = exp == 31 ? (sign | 0x7F800000 | (man << 13)) : (sign | ((exp + 112) << 23) | (man << 13));
  std::memcpy(&out, &u, sizeof out);
  return out;
}

double round_to(DType t, double x) {
  switch (t) {
    case DType::f64: return x;
    case DType::f32: return static_cast<float>(x);
    case DType::bf16: return bf16_to_float(float_to_bf16(static_cast<float>(x)));
    case DType::f16: return f16_to_float(float_to_f16(static_cast<float>(x)));
  }
  return x;
}

int64_t checked_numel(const std::vector<int64_t>& shape, size_t elem_bytes, std::string_view arg) {
  // The product of the non-zero dimensions must fit too: strides are built from it even
  // when another dimension is 0.
  const int64_t limit = std::numeric_limits<int64_t>::max() / static_cast<int64_t>(elem_bytes);
  int64_t nonzero = 1;
  bool empty = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) throw Error(fmt::format("{}: dimension {} is negative ({})", arg, i, shape[i]));
    if (shape[i] == 0) {
      empty = true;
      continue;
    }
    if (nonzero > limit / shape[i])
      throw Error(fmt::format("{}: shape ({}) overflows the addressable byte count", arg, fmt::join(shape, ", ")));
    nonzero *= shape[i];
  }
  return empty ? 0 : nonzero;
}

void TensorView::init(const int64_t* shape, int rank, const int64_t* strides, int n_strides) {
  if (rank < 1 || rank > kMaxRank)
    throw Error(fmt::format("tensor rank {} is outside [1, {}]", rank, kMaxRank));
  if (n_strides != 0 && n_strides != rank)
    throw Error(fmt::format("tensor has {} strides for rank {}", n_strides, rank));
  rank_ = rank;
  for (int i = 0; i < rank; ++i) {
    if (shape[i] < 0) throw Error(fmt::format("tensor dimension {} is negative ({})", i, shape[i]));
    shape_[i] = shape[i];
  }
  if (n_strides) {
    for (int i = 0; i < rank; ++i) strides_[i] = strides[i];
  } else {
    checked_numel(std::vector<int64_t>(shape, shape + rank), dtype_size(dtype_), "tensor");
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; --i) {
      strides_[i] = s;
      s *= std::max<int64_t>(shape_[i], 1);
    }
  }
  for (int i = rank; i < kMaxRank; ++i) {
    shape_[i] = 1;
    strides_[i] = 0;
  }
}

TensorView::TensorView(const void* data, DType dtype, std::initializer_list<int64_t> shape,
                       std::initializer_list<int64_t> strides)
    : data_(const_cast<void*>(data)), dtype_(dtype) {
  init(shape.begin(), static_cast<int>(shape.size()), strides.begin(), static_cast<int>(strides.size()));
}

TensorView::TensorView(const void* data, DType dtype, const std::vector<int64_t>& shape,
                       const std::vector<int64_t>& strides)
    : data_(const_cast<void*>(data)), dtype_(dtype) {
  init(shape.data(), static_cast<int>(shape.size()), strides.data(), static_cast<int>(strides.size()));
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= shape_[i];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t s = 1;
  for (int i = rank_ - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != s) return false;
    s *= shape_[i];
  }
  return true;
}

std::string TensorView::shape_string() const {
  return fmt::format("[{}]", fmt::join(shape_.begin(), shape_.begin() + rank_, ", "));
}

void TensorView::expect_rank(int want_rank, std::string_view arg) const {
  if (rank_ != want_rank)
    throw Error(fmt::format("{} must have {} dimensions, got {} with shape {}", arg, want_rank, rank_,
                            shape_string()));
}

double TensorView::load(int64_t off) const {
  switch (dtype_) {
    case DType::f32: return static_cast<const float*>(data_)[off];
    case DType::f64: return static_cast<const double*>(data_)[off];
    case DType::bf16: return bf16_to_float(static_cast<const uint16_t*>(data_)[off]);
    case DType::f16: return f16_to_float(static_cast<const uint16_t*>(data_)[off]);
  }
  return 0;
}

void MutTensorView::store(int64_t off, double value) const {
  switch (dtype_) {
    case DType::f32: static_cast<float*>(data_)[off] = static_cast<float>(value); break;
    case DType::f64: static_cast<double*>(data_)[off] = value; break;
    case DType::bf16: static_cast<uint16_t*>(data_)[off] = float_to_bf16(static_cast<float>(value)); break;
    case DType::f16: static_cast<uint16_t*>(data_)[off] = float_to_f16(static_cast<float>(value)); break;
  }
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
  const int64_t n = checked_numel(shape_, dtype_size(dtype_), "tensor");
  bytes_.assign(static_cast<size_t>(n) * dtype_size(dtype_), 0);
}

int64_t Tensor::numel() const { return static_cast<int64_t>(bytes_.size() / dtype_size(dtype_)); }

Tensor Tensor::to(DType dtype) const {
  Tensor out(dtype, shape_);
  const TensorView src = view();
  const MutTensorView dst = out.mut();
  for (int64_t i = 0, n = numel(); i < n; ++i) dst.store(i, src.load(i));
  return out;
}

}  // namespace attnkit
