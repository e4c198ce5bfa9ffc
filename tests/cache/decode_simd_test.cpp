// The online-softmax step of the decode kernel (decode_simd.hpp) against double-precision
// math: its exponential is a short polynomial, so its accuracy is checked over the whole
// range a shifted score can take, with the edge cases (underflow, -inf, NaN).
#include "cache/decode_simd.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace attnkit::decode {
namespace {

TEST(DecodeSoftmaxTile, ProbabilitiesMatchDoubleExpAcrossTheRange) {
  const SimdOps ops = simd_ops();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  // Row 0: the max is 0, so p_j = e^{x_j}; x spans [-100, 0] finely, plus -inf.
  std::vector<float> xs;
  for (float x = -100.0f; x <= 0.0f; x += 0.0123f) xs.push_back(x);
  xs.push_back(-kInf);
  xs.push_back(0.0f);
  int64_t checked = 0;
  for (size_t base = 0; base < xs.size(); base += kTileKeys) {
    const int64_t n = std::min<int64_t>(kTileKeys, static_cast<int64_t>(xs.size() - base));
    std::vector<float> s(kTileKeys, 0.0f);
    for (int64_t j = 0; j < n; ++j) s[static_cast<size_t>(j)] = xs[base + static_cast<size_t>(j)];
    float m = 0.0f, l = 0.0f, alpha = 0.0f;  // running max 0: no shift beyond it
    ops.softmax_tile(s.data(), 1, n, SoftmaxParams{}, nullptr, &m, &l, &alpha);
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double x = xs[base + static_cast<size_t>(j)];
      const double want = x < -87.3 ? 0.0 : std::exp(x);
      const double got = s[static_cast<size_t>(j)];
      if (want == 0.0)
        EXPECT_EQ(got, 0.0) << "x = " << x;
      else
        EXPECT_NEAR(got / want, 1.0, 4e-7) << "x = " << x;
      sum += got;
      ++checked;
    }
    EXPECT_NEAR(l, sum, 1e-5 * sum + 1e-30);
    EXPECT_EQ(m, 0.0f);
  }
  EXPECT_GT(checked, 8000);
}

TEST(DecodeSoftmaxTile, NaNScoresStayNaN) {
  const SimdOps ops = simd_ops();
  std::vector<float> s(kTileKeys, -1.0f);
  s[3] = std::numeric_limits<float>::quiet_NaN();
  float m = 0.0f, l = 0.0f, alpha = 0.0f;
  ops.softmax_tile(s.data(), 1, 16, SoftmaxParams{}, nullptr, &m, &l, &alpha);
  EXPECT_TRUE(std::isnan(s[3]));
  EXPECT_NEAR(s[0], std::exp(-1.0f), 1e-7f);
}

}  // namespace
}  // namespace attnkit::decode
