// The online-softmax step of the decode kernel (decode_simd.hpp) against double-precision
// math: its exponential is a short polynomial, so its accuracy is checked over the whole
// range a shifted score can take, with the edge cases (underflow, -inf, NaN).
#include "kernels/decode_simd.hpp"

#include <gtest/gtest.h>

#include <algorithm>
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

// Rows are computed four at a time: every row of 7 (a block of 4, then 3 alone), with a mask
// bias, a softcap, rows new to the softmax and rows with nothing visible, against the
// online softmax in double.
TEST(DecodeSoftmaxTile, RowsInBlocksMatchAPlainOnlineSoftmax) {
  const SimdOps ops = simd_ops();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  constexpr int64_t rows = 7, n = kTileKeys - 5;
  for (const float softcap : {0.0f, 5.0f}) {
    SoftmaxParams prm;
    prm.scale = 0.3f;
    prm.softcap = softcap;
    std::vector<float> s(rows * kTileKeys), bias(rows * kTileKeys, 0.0f);
    std::vector<float> m(rows), l(rows), alpha(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const bool fresh = r == 2 || r == 6;  // nothing seen before
      m[r] = fresh ? -kInf : 1.5f * static_cast<float>(r % 3);
      l[r] = fresh ? 0.0f : 2.0f;
      for (int64_t j = 0; j < n; ++j) {
        s[r * kTileKeys + j] = static_cast<float>((j * 37 + r * 11) % 23) - 8.0f;
        // Rows 5 and 6 all masked; 6 has then still seen nothing.
        if (r == 5 || r == 6 || (j + r) % 5 == 0) bias[r * kTileKeys + j] = -kInf;
      }
    }
    const std::vector<float> s0 = s, m0 = m, l0 = l;
    ops.softmax_tile(s.data(), rows, n, prm, bias.data(), m.data(), l.data(), alpha.data());
    int empty_rows = 0;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<double> x(n);
      double mx = m0[r];
      for (int64_t j = 0; j < n; ++j) {
        double v = double{prm.scale} * s0[r * kTileKeys + j];
        if (softcap > 0) v = softcap * std::tanh(v / softcap);
        x[j] = v + bias[r * kTileKeys + j];
        mx = std::max(mx, x[j]);
      }
      if (mx == -kInf) {  // nothing visible: state kept, p = 0, alpha = 1
        ++empty_rows;
        EXPECT_EQ(m[r], m0[r]) << r;
        EXPECT_EQ(l[r], l0[r]) << r;
        EXPECT_EQ(alpha[r], 1.0f) << r;
        for (int64_t j = 0; j < n; ++j) EXPECT_EQ(s[r * kTileKeys + j], 0.0f) << r << " " << j;
        continue;
      }
      const double a = m0[r] == -kInf ? 0.0 : std::exp(m0[r] - mx);
      double sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double p = std::exp(x[j] - mx);
        sum += p;
        EXPECT_NEAR(s[r * kTileKeys + j], p, 2e-6 * p + 1e-30) << r << " " << j;
      }
      EXPECT_NEAR(m[r], mx, 1e-5 * std::abs(mx) + 1e-6) << r;
      EXPECT_NEAR(alpha[r], a, 1e-6) << r;
      EXPECT_NEAR(l[r], a * l0[r] + sum, 1e-5 * (a * l0[r] + sum)) << r;
    }
    EXPECT_EQ(empty_rows, 1);
  }
}

}  // namespace
}  // namespace attnkit::decode
