// Tests for the decode kernel's AVX-512 BF16 micro-kernels (decode_micro.hpp) against their
// plain-loop references: scattered row pointers (as paging gives), every row count and key
// count a tile can have, and the widths the kernels take.
#include "cache/decode_micro.hpp"

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/tensor.hpp"

namespace attnkit::decode {
namespace {

std::vector<uint16_t> bf16_data(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> x(static_cast<size_t>(n));
  for (uint16_t& v : x) v = float_to_bf16(nd(rng));
  return x;
}

TEST(DecodeMicro, Bf16KernelsMatchTheReference) {
  if (!avx512_available()) GTEST_SKIP() << "no AVX-512 BF16 on this CPU";
  for (int64_t d : {32, 64, 128, 256})
    for (int64_t rows : {1, 3, 4, 5, 8})
      for (int64_t n : {0, 1, 2, 17, 63, 64}) {
        const std::vector<uint16_t> q = bf16_data(rows * d, 1), k = bf16_data(64 * d, 2), v = bf16_data(64 * d, 3);
        std::vector<const uint16_t*> kr(64), vr(64);
        for (int64_t j = 0; j < 64; ++j) {  // reversed: not one contiguous run
          kr[static_cast<size_t>(j)] = k.data() + (63 - j) * d;
          vr[static_cast<size_t>(j)] = v.data() + (63 - j) * d;
        }
        std::vector<float> s1(static_cast<size_t>(rows * kTileKeys), -7.0f), s2 = s1;
        scores_bf16_ref(q.data(), rows, d, kr.data(), n, s1.data());
        scores_bf16_avx512(q.data(), rows, d, kr.data(), n, s2.data());
        std::vector<float> p(static_cast<size_t>(rows * kTileKeys));
        std::mt19937_64 rng(4);
        std::uniform_real_distribution<float> u(0.0f, 1.0f);
        for (float& x : p) x = u(rng);
        std::vector<float> a1(static_cast<size_t>(rows * d), 0.5f), a2 = a1;
        pv_bf16_ref(p.data(), rows, vr.data(), n, d, a1.data());
        pv_bf16_avx512(p.data(), rows, vr.data(), n, d, a2.data());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < kTileKeys; ++j) {
            const size_t i = static_cast<size_t>(r * kTileKeys + j);
            // f32 summation order over d products of magnitude ~1: a few ulps of sqrt(d).
            if (j < n)
              ASSERT_NEAR(s2[i], s1[i], 1e-5 * d) << "d=" << d << " rows=" << rows << " n=" << n;
            else
              ASSERT_EQ(s2[i], -7.0f) << "wrote past n";
          }
        for (size_t i = 0; i < a1.size(); ++i)
          ASSERT_NEAR(a2[i], a1[i], 1e-5 * (n + 1)) << "d=" << d << " rows=" << rows << " n=" << n;
      }
}

TEST(DecodeMicro, SupportedWidths) {
  EXPECT_TRUE(avx512_supports(128, 64));
  EXPECT_FALSE(avx512_supports(40, 64));
  EXPECT_FALSE(avx512_supports(64, 48));
  EXPECT_FALSE(avx512_supports(2048, 64));
}

}  // namespace
}  // namespace attnkit::decode
