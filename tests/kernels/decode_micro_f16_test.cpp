// Tests for the f16 decode tile micro-kernels (decode_micro_ref.cpp, avx512_decode.cpp,
// avx512_decode_pv.cpp): no operand is rounded, so the reference must match an f64
// evaluation of the stored halves to its one final f32 rounding, and the AVX-512 kernels the
// reference to f32 summation order, (terms + 2) u sum |terms|. Rows are their own heap
// blocks, misaligned, in shuffled order, and include halves at the ends of the f16 range
// (subnormals, +-65504) so that the conversion is checked whole.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/tensor.hpp"
#include "kernels/decode_micro.hpp"
#include "kernels/decode_micro_testing.hpp"

namespace attnkit::decode {
namespace {

using namespace micro_test;

struct F16Rows {
  RowPool pool;
  std::vector<const uint16_t*> rows;
};

// Mostly normal values; one in 16 is a subnormal half and one in 64 is +-65504.
F16Rows f16_rows(Rng& rng, int64_t n, int64_t d) {
  F16Rows k;
  k.rows.resize(static_cast<size_t>(n));
  for (int64_t j : rng.order(n)) {
    std::vector<uint16_t> row(static_cast<size_t>(d));
    for (uint16_t& v : row) {
      const double pick = rng.uniform(0, 1);
      const double x = pick < 1.0 / 64 ? (rng.uniform(0, 1) < 0.5 ? -65504.0 : 65504.0)
                       : pick < 5.0 / 64 ? rng.uniform(-1, 1) * 0x1p-15
                                         : rng.normal();
      v = float_to_f16(static_cast<float>(x));
    }
    k.rows[j] = k.pool.add(row, 2 + 4 * (j % 3));
  }
  return k;
}

TEST(DecodeMicroScores, F16) {
  for (int64_t rows : kRowCounts)
    for (int64_t n : kKeyCounts)
      for (int64_t dk : kWidths) {
        const std::string name = case_name(rows, n, dk);
        Rng rng(seed_of(5, rows, n, dk));
        const std::vector<float> q = rng.normals(rows * dk);
        const F16Rows k = f16_rows(rng, n, dk);
        std::vector<float> ref = scores_buffer(rows), simd = scores_buffer(rows);
        scores_f16_ref(q.data(), rows, dk, k.rows.data(), n, ref.data());
        const bool simd_ok = avx512_available();
        if (simd_ok) scores_f16_avx512(q.data(), rows, dk, k.rows.data(), n, simd.data());
        ASSERT_TRUE(untouched_past_n(ref, rows, n, name) && (!simd_ok || untouched_past_n(simd, rows, n, name)));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) {
            double exact = 0, mag = 0;
            for (int64_t c = 0; c < dk; ++c) {
              const double t = double{q[r * dk + c]} * f16_to_float(k.rows[j][c]);
              exact += t, mag += std::abs(t);
            }
            const double got = ref[r * kTileKeys + j];
            ASSERT_TRUE(within(got, exact, kU * std::abs(exact) + 0x1p-45 * mag, name + " ref"));
            if (simd_ok) {
              ASSERT_TRUE(within(simd[r * kTileKeys + j], got, (dk + 2) * kU * mag, name + " avx512"));
            }
          }
      }
  if (!avx512_available()) GTEST_SKIP() << "AVX-512 not available: reference checked only";
}

TEST(DecodeMicroPv, F16) {
  for (int64_t rows : kRowCounts)
    for (int64_t n : kKeyCounts)
      for (int64_t dv : kWidths) {
        const std::string name = case_name(rows, n, dv);
        Rng rng(seed_of(6, rows, n, dv));
        const std::vector<float> p = make_p(rng, rows, n);
        const F16Rows v = f16_rows(rng, n, dv);
        const std::vector<float> acc0 = rng.normals(rows * dv);
        std::vector<float> ref = acc0, simd = acc0;
        pv_f16_ref(p.data(), rows, v.rows.data(), n, dv, ref.data());
        const bool simd_ok = avx512_available();
        if (simd_ok) pv_f16_avx512(p.data(), rows, v.rows.data(), n, dv, simd.data());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < dv; ++c) {
            const double a0 = acc0[r * dv + c];
            double exact = a0, mag = std::abs(a0);
            for (int64_t j = 0; j < n; ++j) {
              const double t = double{p[r * kTileKeys + j]} * f16_to_float(v.rows[j][c]);
              exact += t, mag += std::abs(t);
            }
            const double got = ref[r * dv + c];
            ASSERT_TRUE(within(got, exact, kU * std::abs(exact) + 0x1p-45 * mag + 1e-300, name + " ref"));
            if (simd_ok) {
              ASSERT_TRUE(within(simd[r * dv + c], got, (n + 2) * kU * mag + 1e-300, name + " avx512"));
            }
          }
      }
  if (!avx512_available()) GTEST_SKIP() << "AVX-512 not available: reference checked only";
}

}  // namespace
}  // namespace attnkit::decode
