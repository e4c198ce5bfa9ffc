// Tests for element conversions, strided views and the owning tensor.
#include "attnkit/tensor.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace attnkit {
namespace {

TEST(DType, F16RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(f))));
      continue;
    }
    EXPECT_EQ(float_to_f16(f), h) << "half bits " << h;
  }
}

TEST(DType, F16KnownValues) {
  EXPECT_EQ(f16_to_float(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_float(0xC000), -2.0f);
  EXPECT_EQ(f16_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(float_to_f16(65520.0f), 0x7C00);  // rounds to +inf
  EXPECT_EQ(float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie rounds to even
  EXPECT_EQ(float_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);  // tie to even
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(round_to(DType::bf16, 3.0), 3.0);
}

TEST(TensorView, StridesAddressTransposedMemory) {
  // Memory laid out [B=1, N=2, H=3, D=2]; viewed as [B, H, N, D].
  std::vector<float> mem(12);
  for (int i = 0; i < 12; ++i) mem[i] = static_cast<float>(i);
  TensorView v(mem.data(), DType::f32, {1, 3, 2, 2}, {12, 2, 6, 1});
  EXPECT_FALSE(v.is_contiguous());
  EXPECT_EQ(v.get(0, 2, 1, 0), mem[1 * 6 + 2 * 2 + 0]);
  EXPECT_EQ(v.shape_string(), "[1, 3, 2, 2]");
}

TEST(Tensor, OverflowingShapeIsAnError) {
  EXPECT_THROW(Tensor(DType::f32, {int64_t{1} << 40, int64_t{1} << 40}), Error);
  EXPECT_THROW(Tensor(DType::f32, {2, -1}), Error);
  // A zero dimension does not excuse the others from fitting: strides are built from them.
  EXPECT_THROW(Tensor(DType::f32, {0, int64_t{1} << 40, int64_t{1} << 40}), Error);
  EXPECT_EQ(Tensor(DType::f32, {0, 3}).numel(), 0);
  EXPECT_THROW(parse_dtype("f8"), Error);
}

TEST(Tensor, ConvertsBetweenTypes) {
  Tensor t(DType::f32, {3});
  t.mut().set(1.5, 0);
  t.mut().set(-2.25, 1);
  t.mut().set(1e-3, 2);
  const Tensor h = t.to(DType::f16);
  EXPECT_EQ(h.view().get(0), 1.5);
  EXPECT_EQ(h.view().get(1), -2.25);
  EXPECT_NEAR(h.view().get(2), 1e-3, 1e-6);
}

}  // namespace
}  // namespace attnkit
