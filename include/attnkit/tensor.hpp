// attnkit/tensor.hpp — element types and a checked, strided view of up to 4 dimensions.
// A view never owns memory; Tensor is the small owning companion used by the CLI, the
// tests and the file readers. Not for: arithmetic (kernels read views directly).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "attnkit/error.hpp"

namespace attnkit {

enum class DType : uint8_t { f32, f64, bf16, f16 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
DType parse_dtype(std::string_view name);  // "f32", "f64", "bf16", "f16"; throws Error

// IEEE-754 half and bfloat16 conversions, round-to-nearest-even, NaN kept NaN.
uint16_t float_to_f16(float x);
float f16_to_float(uint16_t h);
uint16_t float_to_bf16(float x);
inline float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
// Rounds x to the nearest value representable in t (identity for f64).
double round_to(DType t, double x);

constexpr int kMaxRank = 4;

// A read-only strided view. Strides are in elements, not bytes; shape[i] >= 0.
class TensorView {
 public:
  TensorView() = default;
  // Contiguous (C order) when strides is empty.
  TensorView(const void* data, DType dtype, std::initializer_list<int64_t> shape,
             std::initializer_list<int64_t> strides = {});
  TensorView(const void* data, DType dtype, const std::vector<int64_t>& shape,
             const std::vector<int64_t>& strides = {});

  DType dtype() const { return dtype_; }
  int rank() const { return rank_; }
  int64_t size(int dim) const { return shape_[dim]; }
  int64_t stride(int dim) const { return strides_[dim]; }
  int64_t numel() const;
  std::vector<int64_t> shape() const { return {shape_.begin(), shape_.begin() + rank_}; }
  const void* data() const { return data_; }
  bool is_contiguous() const;
  std::string shape_string() const;  // "[2, 8, 128, 64]"

  int64_t offset(int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) const {
    return i0 * strides_[0] + i1 * strides_[1] + i2 * strides_[2] + i3 * strides_[3];
  }
  // Element read with conversion to double; indices beyond rank must be 0.
  double get(int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) const {
    return load(offset(i0, i1, i2, i3));
  }
  double load(int64_t element_offset) const;

  // Throws Error naming `arg` unless rank == want_rank.
  void expect_rank(int want_rank, std::string_view arg) const;

 protected:
  void* data_ = nullptr;  // mutable only through MutTensorView
  DType dtype_ = DType::f32;
  int rank_ = 0;
  std::array<int64_t, kMaxRank> shape_{0, 0, 0, 0};
  std::array<int64_t, kMaxRank> strides_{0, 0, 0, 0};

  void init(const int64_t* shape, int rank, const int64_t* strides, int n_strides);
};

// A writable view; writes convert from double with round-to-nearest-even.
class MutTensorView : public TensorView {
 public:
  MutTensorView() = default;
  MutTensorView(void* data, DType dtype, std::initializer_list<int64_t> shape,
                std::initializer_list<int64_t> strides = {})
      : TensorView(data, dtype, shape, strides) {}
  MutTensorView(void* data, DType dtype, const std::vector<int64_t>& shape,
                const std::vector<int64_t>& strides = {})
      : TensorView(data, dtype, shape, strides) {}
  void* mutable_data() const { return data_; }
  void set(double value, int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) const {
    store(offset(i0, i1, i2, i3), value);
  }
  void store(int64_t element_offset, double value) const;
};

// Owning, contiguous tensor. Byte count is overflow-checked at construction.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, std::vector<int64_t> shape);  // zero-filled
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const;
  size_t nbytes() const { return bytes_.size(); }
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }
  TensorView view() const { return TensorView(bytes_.data(), dtype_, shape_); }
  MutTensorView mut() { return MutTensorView(bytes_.data(), dtype_, shape_); }
  // A copy converted to another element type.
  Tensor to(DType dtype) const;

 private:
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_;
  std::vector<unsigned char> bytes_;
};

// Number of elements of `shape`, or throws Error naming `arg` when a dimension is
// negative or the element/byte count overflows int64 for elements of `elem_bytes`.
int64_t checked_numel(const std::vector<int64_t>& shape, size_t elem_bytes, std::string_view arg);

}  // namespace attnkit
