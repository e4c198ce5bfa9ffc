// Tests for the decode tile micro-kernels (src/ref/decode_micro_ref.cpp,
// src/kernels/avx512_decode*.cpp). Data comes from the real quantizers (kv_quant.hpp); every
// stored row, scale and zero array is its own heap block, allocated in shuffled order (as
// paging scatters rows) and ending exactly where the row ends, so a read past a row is a
// heap overflow under ASan. p is NaN past n and s is pre-filled past n: neither may be
// touched there.
//
// Bounds (u = 2^-24; sums run over the terms of one output):
//   reference vs an f64 evaluation of the dequantised math: the documented operand
//     roundings, i.e. bf16 p (2^-8 relative) and integer q' / weights (int16; int4: int8 q'
//     and uint8 weights; scale / 2 + 3u |x| each, plus u when x is itself an f32 product),
//     and the final f32 rounding (2u of the magnitudes involved);
//   AVX-512 vs reference, f32 summation order: bf16 (terms + 2) u sum |terms|; int8 and
//     int4 dot products are exact integers, leaving a few roundings of the result (4-5 u)
//     plus, for the f32 sum of int4 zero terms, (terms + 4) u sum |terms|.
#include "kernels/decode_micro.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "attnkit/kv_quant.hpp"
#include "attnkit/tensor.hpp"
#include "kernels/decode_micro_testing.hpp"

namespace attnkit::decode {
namespace {

using namespace micro_test;

// Tests of an AVX-512 kernel skip, before any assertion, on CPUs without the ISA; each has a
// ...Reference twin that checks the portable reference everywhere.
constexpr const char* kNoAvx512 = "AVX-512 BF16 / VNNI not available";

int code4(const uint8_t* row, int64_t c) { return (row[c / 2] >> (4 * (c % 2))) & 0xF; }

// The documented integer rounding scale of a vector: fl(max |x| / limit).
float int16_scale_of(const std::vector<float>& x, int32_t limit) {
  float m = 0;
  for (float v : x) m = std::max(m, std::abs(v));
  return m / static_cast<float>(limit);
}

// ---- q16 ----

TEST(DecodeMicroQ16, LimitKeepsTheRowDotProductInInt32) {
  EXPECT_EQ(q16_limit(128, 127), 32767);
  EXPECT_EQ(q16_limit(1024, 127), 16513);  // floor((2^31 - 1) / 130048)
  EXPECT_EQ(q16_limit(1024, 15), 32767);
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  for (int32_t code_max : {1, 15, 127})
    for (int64_t dk = 1; dk <= 1024; ++dk) {
      const int64_t limit = q16_limit(dk, code_max);
      ASSERT_LE(limit * code_max * dk, kMax) << dk;
      ASSERT_TRUE(limit == 32767 || (limit + 1) * code_max * dk > kMax) << dk;
    }
}

TEST(DecodeMicroQ16, RoundsToNearestWithinTheDocumentedBound) {
  Rng rng(7);
  for (int64_t dk : {1, 32, 100, 1024})
    for (int32_t limit : {q16_limit(dk, 127), q16_limit(dk, 15)}) {
      const int64_t rows = 3;
      std::vector<float> q = rng.normals(rows * dk, 0, 3);
      std::vector<int16_t> q16(q.size());
      std::vector<float> qs(rows);
      quantize_q16(q.data(), rows, dk, limit, q16.data(), qs.data());
      for (int64_t r = 0; r < rows; ++r) {
        const std::vector<float> row(q.begin() + r * dk, q.begin() + (r + 1) * dk);
        EXPECT_EQ(qs[r], int16_scale_of(row, limit));
        int peak = 0;
        for (int64_t c = 0; c < dk; ++c) {
          const int v = q16[r * dk + c];
          peak = std::max(peak, std::abs(v));
          ASSERT_LE(std::abs(v), limit);
          ASSERT_LE(std::abs(double{qs[r]} * v - q[r * dk + c]), qs[r] / 2.0 + 3.01 * kU * std::abs(q[r * dk + c]));
        }
        EXPECT_EQ(peak, limit);  // the largest |q| lands exactly on the limit
      }
    }
}

TEST(DecodeMicroQ16, ZeroTinyAndNonFiniteRows) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> q = {0, 0, 0, 0, 1e-35f, -2e-35f, 0, 0, 1, nan, 2, 3, 1, -INFINITY, 0, 0};
  std::vector<int16_t> q16(q.size(), 99);
  float qs[4];
  quantize_q16(q.data(), 4, 4, 32767, q16.data(), qs);
  EXPECT_EQ(qs[0], 0.0f);
  EXPECT_EQ(qs[1], 0.0f);
  EXPECT_TRUE(std::isnan(qs[2]));
  EXPECT_TRUE(std::isnan(qs[3]));
  for (int16_t v : q16) EXPECT_EQ(v, 0);
}

// quantize_q8 is quantize_q16 with limit 127, narrowed: same scales, same values.
TEST(DecodeMicroQ16, Q8IsQ16AtLimit127) {
  Rng rng(8);
  for (int64_t dk : {1, 32, 100, 1024}) {
    const int64_t rows = 3;
    std::vector<float> q = rng.normals(rows * dk, 0, 3);
    q[1] = std::numeric_limits<float>::quiet_NaN();  // row 0 poisoned: scale NaN, codes 0
    std::vector<int16_t> q16(q.size());
    std::vector<int8_t> q8(q.size(), 99);
    std::vector<float> qs16(rows), qs8(rows);
    quantize_q16(q.data(), rows, dk, 127, q16.data(), qs16.data());
    quantize_q8(q.data(), rows, dk, q8.data(), qs8.data());
    for (int64_t r = 0; r < rows; ++r) {
      if (std::isnan(qs16[r])) EXPECT_TRUE(std::isnan(qs8[r]));
      else EXPECT_EQ(qs8[r], qs16[r]);
    }
    for (size_t i = 0; i < q.size(); ++i) ASSERT_EQ(int{q8[i]}, int{q16[i]}) << dk << " " << i;
  }
}

TEST(DecodeMicroQ16, SupportedWidths) {
  EXPECT_TRUE(avx512_supports(128, 128, 32));
  EXPECT_TRUE(avx512_supports(96, 1024, 16));
  EXPECT_TRUE(avx512_supports(128, 128, 0));
  EXPECT_FALSE(avx512_supports(48, 128, 32));
  EXPECT_FALSE(avx512_supports(128, 1056, 32));
  EXPECT_FALSE(avx512_supports(128, 128, 24));
  EXPECT_FALSE(avx512_supports(0, 128, 32));
}

TEST(DecodeMicroRows, FillWritesExactlyTheProgression) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  alignas(64) static const std::byte base[4096] = {};
  for (const int64_t stride : {int64_t{0}, int64_t{16}, int64_t{-8}, int64_t{12}})  // all inside base
    for (const int64_t n : {0, 1, 7, 8, 9, 16, 17, 127, 128}) {
      std::vector<const void*> out(static_cast<size_t>(n) + 9, nullptr);  // guard entries past n stay null
      const std::byte* from = base + 2048;
      fill_rows_avx512(from + 1, stride, n, out.data() + 1);
      EXPECT_EQ(out[0], nullptr);
      for (int64_t x = 0; x < n; ++x) ASSERT_EQ(out[static_cast<size_t>(x) + 1], from + 1 + x * stride) << stride << " " << x;
      for (size_t i = static_cast<size_t>(n) + 1; i < out.size(); ++i) ASSERT_EQ(out[i], nullptr) << stride << " " << n;
    }
}

// The prefetch schedule: after d of `work` units, exactly rows [0, floor(d * n / work)) are
// out, in order and never twice, whatever the steps (the kernels' steps differ per pass).
TEST(DecodeMicroRows, EvenShareHandsOutRowsInProportionToWork) {
  for (const int64_t n : {0, 1, 7, 64, 128})
    for (const int64_t work : {1, 3, 16, 512, 4096})
      for (const int64_t step : {1, 2, 5, 16}) {
        EvenShare share(n, work);
        int64_t done = 0, end = 0;
        while (done < work) {
          const int64_t units = std::min(step + done % 3, work - done);  // uneven steps
          done += units;
          const int64_t to = share.advance(units);
          ASSERT_GE(to, end);
          ASSERT_EQ(to, done * n / work) << n << " " << work << " " << step << " " << done;
          end = to;
        }
        EXPECT_EQ(end, n);
        EXPECT_EQ(share.advance(7), n);  // nothing past the tile
      }
}

// ---- bf16 ----

struct Bf16Keys {
  RowPool pool;
  std::vector<const uint16_t*> rows;
};

Bf16Keys bf16_rows(Rng& rng, int64_t n, int64_t d) {
  Bf16Keys k;
  k.rows.resize(static_cast<size_t>(n));
  for (int64_t j : rng.order(n)) {
    std::vector<uint16_t> row(static_cast<size_t>(d));
    for (uint16_t& v : row) v = float_to_bf16(static_cast<float>(rng.normal()));
    k.rows[j] = k.pool.add(row, 2);
  }
  return k;
}

// simd_ok: the AVX-512 kernel against the reference; else the reference against an f64
// evaluation of the dequantised math.
void check_scores_bf16(bool simd_ok) {
  for (int64_t rows : kRowCounts)
    for (int64_t n : kKeyCounts)
      for (int64_t dk : kWidths) {
        const std::string name = case_name(rows, n, dk);
        Rng rng(seed_of(1, rows, n, dk));
        std::vector<uint16_t> q(static_cast<size_t>(rows * dk));
        for (uint16_t& v : q) v = float_to_bf16(static_cast<float>(rng.normal()));
        const Bf16Keys k = bf16_rows(rng, n, dk);
        std::vector<float> ref = scores_buffer(rows), simd = scores_buffer(rows);
        scores_bf16_ref(q.data(), rows, dk, k.rows.data(), n, ref.data());
        if (simd_ok) scores_bf16_avx512(q.data(), rows, dk, k.rows.data(), n, simd.data());
        ASSERT_TRUE(untouched_past_n(ref, rows, n, name) && (!simd_ok || untouched_past_n(simd, rows, n, name)));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) {
            double exact = 0, mag = 0;
            for (int64_t c = 0; c < dk; ++c) {
              const double t = double{bf16_to_float(q[r * dk + c])} * bf16_to_float(k.rows[j][c]);
              exact += t, mag += std::abs(t);
            }
            const double got = ref[r * kTileKeys + j];
            if (!simd_ok) ASSERT_TRUE(within(got, exact, kU * std::abs(exact) + 0x1p-45 * mag, name + " ref"));
            if (simd_ok) {
              ASSERT_TRUE(within(simd[r * kTileKeys + j], got, (dk + 2) * kU * mag + dk * 0x1p-126, name + " avx512"));
            }
          }
      }
}

TEST(DecodeMicroScores, Bf16Reference) { check_scores_bf16(false); }

TEST(DecodeMicroScores, Bf16Avx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_scores_bf16(true);
}

// simd_ok: the AVX-512 kernel against the reference; else the reference against an f64
// evaluation of the dequantised math.
void check_pv_bf16(bool simd_ok) {
  for (int64_t rows : kRowCounts)
    for (int64_t n : kKeyCounts)
      for (int64_t dv : kWidths) {
        const std::string name = case_name(rows, n, dv);
        Rng rng(seed_of(2, rows, n, dv));
        const std::vector<float> p = make_p(rng, rows, n);
        const Bf16Keys v = bf16_rows(rng, n, dv);
        const std::vector<float> acc0 = rng.normals(rows * dv);
        std::vector<float> ref = acc0, simd = acc0;
        pv_bf16_ref(p.data(), rows, v.rows.data(), n, dv, ref.data());
        if (simd_ok) pv_bf16_avx512(p.data(), rows, v.rows.data(), n, dv, simd.data());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < dv; ++c) {
            const double a0 = acc0[r * dv + c];
            double exact = a0, mag = 0, vmax = 0;
            for (int64_t j = 0; j < n; ++j) {
              const double vj = bf16_to_float(v.rows[j][c]);
              exact += p[r * kTileKeys + j] * vj;
              mag += p[r * kTileKeys + j] * std::abs(vj);
              vmax = std::max(vmax, std::abs(vj));
            }
            const double got = ref[r * dv + c];
            if (!simd_ok) ASSERT_TRUE(within(got, exact, 0x1p-8 * mag + 2 * kU * (std::abs(a0) + mag) + 1e-300, name + " ref"));
            if (simd_ok) {
              const double tol = (n + 2) * kU * (std::abs(a0) + mag * (1 + 0x1p-7)) + n * 0x1p-126 * vmax;
              ASSERT_TRUE(within(simd[r * dv + c], got, tol, name + " avx512"));
            }
          }
      }
}

TEST(DecodeMicroPv, Bf16Reference) { check_pv_bf16(false); }

TEST(DecodeMicroPv, Bf16Avx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_pv_bf16(true);
}

// ---- int8 ----

struct Int8Rows {
  RowPool pool;
  std::vector<const int8_t*> rows;
  std::vector<float> scale;  // f32 of the stored f16 scale, as the decode driver passes it
};

Int8Rows int8_rows(Rng& rng, int64_t n, int64_t d) {
  Int8Rows k;
  k.rows.resize(static_cast<size_t>(n));
  k.scale.resize(static_cast<size_t>(n));
  for (int64_t j : rng.order(n)) {
    const std::vector<float> x = rng.normals(d, 0, rng.uniform(0.2, 3));
    std::vector<int8_t> codes(static_cast<size_t>(d));
    uint16_t s16;
    quantize_int8_row(x.data(), d, codes.data(), &s16);
    k.rows[j] = k.pool.add(codes, 1 + 2 * (j % 2));
    k.scale[j] = f16_to_float(s16);
  }
  return k;
}

// simd_ok: the AVX-512 kernel against the reference; else the reference against an f64
// evaluation of the dequantised math.
void check_scores_int8(bool simd_ok) {
  for (int64_t rows : kRowCounts)
    for (int64_t n : kKeyCounts)
      for (int64_t dk : kWidths) {
        const std::string name = case_name(rows, n, dk);
        Rng rng(seed_of(3, rows, n, dk));
        const std::vector<float> q = rng.normals(rows * dk);
        std::vector<int8_t> q8(q.size());
        std::vector<float> qs(static_cast<size_t>(rows));
        quantize_q8(q.data(), rows, dk, q8.data(), qs.data());
        const Int8Rows k = int8_rows(rng, n, dk);
        RowPool scale_pool;  // the scales end where the tile does
        const float* kscale = n ? scale_pool.add(k.scale, 0) : nullptr;
        std::vector<float> ref = scores_buffer(rows), simd = scores_buffer(rows);
        scores_int8_ref(q8.data(), qs.data(), rows, dk, k.rows.data(), kscale, n, ref.data());
        if (simd_ok) scores_int8_avx512(q8.data(), qs.data(), rows, dk, k.rows.data(), kscale, n, simd.data());
        ASSERT_TRUE(untouched_past_n(ref, rows, n, name) && (!simd_ok || untouched_past_n(simd, rows, n, name)));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) {
            double exact = 0, mag = 0, rounding = 0;
            for (int64_t c = 0; c < dk; ++c) {
              const double qc = q[r * dk + c], code = k.rows[j][c];
              exact += qc * code, mag += std::abs(qc * code);
              rounding += std::abs(code) * (qs[r] / 2.0 + 3.01 * kU * std::abs(qc));
            }
            const double ks = k.scale[j], got = ref[r * kTileKeys + j];
            if (!simd_ok) ASSERT_TRUE(within(got, ks * exact, ks * (rounding + 2 * kU * mag) + 1e-300, name + " ref"));
            if (simd_ok) {
              ASSERT_TRUE(within(simd[r * kTileKeys + j], got, 5 * kU * std::abs(got), name + " avx512"));
            }
          }
      }
}

TEST(DecodeMicroScores, Int8Reference) { check_scores_int8(false); }

TEST(DecodeMicroScores, Int8Avx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_scores_int8(true);
}

// Weights w = fl(p * scale) of one row and their documented integer scale: int8 values
// round all of a row's weights to int16, int4 values each group's to uint8.
struct RowWeights {
  std::vector<float> w;   // [j][g]
  std::vector<double> ws;  // [g]
};

RowWeights row_weights(const float* p, int64_t n, int64_t groups, const std::vector<const uint16_t*>* f16_scales,
                       const std::vector<float>* f32_scales) {
  RowWeights rw;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t g = 0; g < groups; ++g)
      rw.w.push_back(p[j] * (f16_scales ? f16_to_float((*f16_scales)[j][g]) : (*f32_scales)[j]));
  for (int64_t g = 0; g < groups; ++g) {
    std::vector<float> wg;
    for (int64_t j = 0; j < n; ++j) wg.push_back(rw.w[j * groups + g]);
    rw.ws.push_back(int16_scale_of(wg, f16_scales ? 255 : 32767));
  }
  return rw;
}

// simd_ok: the AVX-512 kernel against the reference; else the reference against an f64
// evaluation of the dequantised math.
void check_pv_int8(bool simd_ok) {
  for (int64_t rows : kRowCounts)
    for (int64_t n : kKeyCounts)
      for (int64_t dv : kWidths) {
        const std::string name = case_name(rows, n, dv);
        Rng rng(seed_of(4, rows, n, dv));
        const std::vector<float> p = make_p(rng, rows, n);
        const Int8Rows v = int8_rows(rng, n, dv);
        RowPool scale_pool;
        const float* vscale = n ? scale_pool.add(v.scale, 0) : nullptr;
        const std::vector<float> acc0 = rng.normals(rows * dv);
        std::vector<float> ref = acc0, simd = acc0;
        pv_int8_ref(p.data(), rows, v.rows.data(), vscale, n, dv, ref.data());
        if (simd_ok) pv_int8_avx512(p.data(), rows, v.rows.data(), vscale, n, dv, simd.data());
        for (int64_t r = 0; r < rows; ++r) {
          const RowWeights rw = row_weights(p.data() + r * kTileKeys, n, 1, nullptr, &v.scale);
          for (int64_t c = 0; c < dv; ++c) {
            const double a0 = acc0[r * dv + c];
            double exact = a0, mag = 0, rounding = 0, wmag = 0;
            for (int64_t j = 0; j < n; ++j) {
              const double code = v.rows[j][c];
              exact += double{p[r * kTileKeys + j]} * v.scale[j] * code;
              mag += rw.w[j] * std::abs(code);
              rounding += std::abs(code) * (rw.ws[0] / 2 + 4.01 * kU * rw.w[j]);
              wmag += std::abs(code) * (rw.w[j] + rw.ws[0]);
            }
            const double got = ref[r * dv + c];
            if (!simd_ok) ASSERT_TRUE(within(got, exact, rounding + 2 * kU * (std::abs(a0) + mag) + 1e-300, name + " ref"));
            if (simd_ok) {
              ASSERT_TRUE(within(simd[r * dv + c], got, 4 * kU * (std::abs(a0) + wmag), name + " avx512"));
            }
          }
        }
      }
}

TEST(DecodeMicroPv, Int8Reference) { check_pv_int8(false); }

TEST(DecodeMicroPv, Int8Avx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_pv_int8(true);
}

// ---- int4 ----

// Channel-dependent offsets and spreads, so that int4 zeros and scales vary.
std::vector<float> int4_data(Rng& rng, int64_t count, int64_t d) {
  std::vector<double> mean(static_cast<size_t>(d)), spread(static_cast<size_t>(d));
  for (int64_t c = 0; c < d; ++c) mean[c] = rng.normal(0, 3), spread[c] = rng.uniform(0.05, 2);
  std::vector<float> x(static_cast<size_t>(count * d));
  for (int64_t i = 0; i < count; ++i)
    for (int64_t c = 0; c < d; ++c) x[i * d + c] = static_cast<float>(rng.normal(mean[c], spread[c]));
  return x;
}

// Keys of tokens t0 .. t0+n-1 in groups of Gk tokens, tile key j holding token t0+n-1-j.
struct Int4Keys {
  RowPool pool;
  std::vector<const uint8_t*> rows;
  std::vector<const uint16_t*> scale, zero;
};

Int4Keys int4_keys(Rng& rng, int64_t n, int64_t dk, int64_t Gk) {
  Int4Keys k;
  k.rows.resize(static_cast<size_t>(n));
  k.scale.resize(static_cast<size_t>(n));
  k.zero.resize(static_cast<size_t>(n));
  const int64_t t0 = static_cast<int64_t>(rng.uniform(0, static_cast<double>(Gk)));
  for (int64_t g = t0 / Gk; n > 0 && g <= (t0 + n - 1) / Gk; ++g) {
    const std::vector<float> x = int4_data(rng, Gk, dk);
    std::vector<uint8_t> codes(static_cast<size_t>(Gk * dk / 2));
    std::vector<uint16_t> scale(static_cast<size_t>(dk)), zero(static_cast<size_t>(dk));
    quantize_int4_key_group(x.data(), dk, Gk, dk, codes.data(), scale.data(), zero.data());
    const uint16_t* s = k.pool.add(scale, 2);
    const uint16_t* z = k.pool.add(zero, 2);
    for (int64_t i = 0; i < Gk; ++i) {
      const int64_t j = t0 + n - 1 - (g * Gk + i);
      if (j < 0 || j >= n) continue;
      k.rows[j] = k.pool.add(std::vector<uint8_t>(codes.begin() + i * dk / 2, codes.begin() + (i + 1) * dk / 2),
                             1 + 2 * (j % 2));
      k.scale[j] = s;
      k.zero[j] = z;
    }
  }
  return k;
}

// simd_ok: the AVX-512 kernel against the reference; else the reference against an f64
// evaluation of the dequantised math.
void check_scores_int4(bool simd_ok) {
  const int64_t kGroups[] = {2, 6, 32};  // tokens per key group: boundaries inside and across blocks
  int64_t index = 0;
  for (int64_t rows : kRowCounts)
    for (int64_t n : kKeyCounts)
      for (int64_t dk : kWidths) {
        const int64_t Gk = kGroups[index++ % 3];
        const std::string name = case_name(rows, n, dk, Gk);
        Rng rng(seed_of(5, rows, n, dk));
        const std::vector<float> q = rng.normals(rows * dk);
        const Int4Keys k = int4_keys(rng, n, dk, Gk);
        std::vector<float> ref = scores_buffer(rows), simd = scores_buffer(rows);
        scores_int4_ref(q.data(), rows, dk, k.rows.data(), k.scale.data(), k.zero.data(), n, ref.data());
        if (simd_ok)
          scores_int4_avx512(q.data(), rows, dk, k.rows.data(), k.scale.data(), k.zero.data(), n, simd.data());
        ASSERT_TRUE(untouched_past_n(ref, rows, n, name) && (!simd_ok || untouched_past_n(simd, rows, n, name)));
        const int32_t limit = 127;  // q' is rounded to int8
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) {
            std::vector<float> qk(static_cast<size_t>(dk));
            for (int64_t c = 0; c < dk; ++c) qk[c] = q[r * dk + c] * f16_to_float(k.scale[j][c]);
            const double qs = int16_scale_of(qk, limit);
            double exact = 0, mag = 0, rounding = 0, zmag = 0, dmag = 0;
            for (int64_t c = 0; c < dk; ++c) {
              const double qc = q[r * dk + c], code = code4(k.rows[j], c), kz = f16_to_float(k.zero[j][c]);
              exact += qc * (f16_to_float(k.scale[j][c]) * code + kz);
              mag += std::abs(qk[c]) * code + std::abs(qc * kz);
              rounding += code * (qs / 2 + 4.01 * kU * std::abs(qk[c]));
              zmag += std::abs(qc * kz);
              dmag += code * (std::abs(qk[c]) + qs);
            }
            const double got = ref[r * kTileKeys + j];
            if (!simd_ok) ASSERT_TRUE(within(got, exact, rounding + 2 * kU * mag + 1e-300, name + " ref"));
            if (simd_ok) {
              const double tol = 4 * kU * (dmag + zmag) + (dk + 4) * kU * zmag;
              ASSERT_TRUE(within(simd[r * kTileKeys + j], got, tol, name + " avx512"));
            }
          }
      }
}

TEST(DecodeMicroScores, Int4Reference) { check_scores_int4(false); }

TEST(DecodeMicroScores, Int4Avx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_scores_int4(true);
}

struct Int4Values {
  RowPool pool;
  std::vector<const uint8_t*> rows;
  std::vector<const uint16_t*> scale, zero;
};

Int4Values int4_values(Rng& rng, int64_t n, int64_t dv, int64_t G) {
  Int4Values v;
  v.rows.resize(static_cast<size_t>(n));
  v.scale.resize(static_cast<size_t>(n));
  v.zero.resize(static_cast<size_t>(n));
  const int64_t groups = int4_value_groups(dv, G);
  const std::vector<float> x = int4_data(rng, n, dv);
  for (int64_t j : rng.order(n)) {
    std::vector<uint8_t> codes(static_cast<size_t>(dv / 2));
    std::vector<uint16_t> scale(static_cast<size_t>(groups)), zero(static_cast<size_t>(groups));
    quantize_int4_value_row(x.data() + j * dv, dv, G, codes.data(), scale.data(), zero.data());
    v.rows[j] = v.pool.add(codes, 1 + 2 * (j % 2));
    v.scale[j] = v.pool.add(scale, 2);
    v.zero[j] = v.pool.add(zero, 2);
  }
  return v;
}

// simd_ok: the AVX-512 kernel against the reference; else the reference against f64.
void check_pv_int4(int64_t rows, int64_t n, int64_t dv, int64_t G, bool simd_ok) {
  const std::string name = case_name(rows, n, dv, G);
  Rng rng(seed_of(6, rows, n, dv, G));
  const std::vector<float> p = make_p(rng, rows, n);
  const Int4Values v = int4_values(rng, n, dv, G);
  const std::vector<float> acc0 = rng.normals(rows * dv);
  std::vector<float> ref = acc0, simd = acc0;
  pv_int4_ref(p.data(), rows, v.rows.data(), v.scale.data(), v.zero.data(), G, n, dv, ref.data());
  if (simd_ok) pv_int4_avx512(p.data(), rows, v.rows.data(), v.scale.data(), v.zero.data(), G, n, dv, simd.data());
  const int64_t groups = int4_value_groups(dv, G);
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = p.data() + r * kTileKeys;
    const RowWeights rw = row_weights(pr, n, groups, &v.scale, nullptr);
    for (int64_t c = 0; c < dv; ++c) {
      const int64_t g = c / G;
      const double a0 = acc0[r * dv + c];
      double exact = a0, mag = 0, rounding = 0, zmag = 0, wmag = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double code = code4(v.rows[j], c), vz = f16_to_float(v.zero[j][g]);
        const double w = rw.w[j * groups + g];
        exact += double{pr[j]} * (double{f16_to_float(v.scale[j][g])} * code + vz);
        mag += w * code + pr[j] * std::abs(vz);
        rounding += code * (rw.ws[g] / 2 + 4.01 * kU * w);
        zmag += pr[j] * std::abs(vz);
        wmag += code * (w + rw.ws[g]);
      }
      const double got = ref[r * dv + c];
      if (!simd_ok) ASSERT_TRUE(within(got, exact, rounding + 2 * kU * (std::abs(a0) + mag) + 1e-300, name + " ref"));
      if (simd_ok) {
        const double tol = 4 * kU * (std::abs(a0) + wmag + zmag) + (n + 4) * kU * zmag;
        ASSERT_TRUE(within(simd[r * dv + c], got, tol, name + " avx512"));
      }
    }
  }
}

void check_pv_int4_all(bool simd_ok) {
  for (int64_t G : {16, 32, 48, 64})  // 48: 32-channel chunks straddle groups; dv = 32 < G = 48, 64
    for (int64_t rows : kRowCounts)
      for (int64_t n : kKeyCounts)
        for (int64_t dv : kWidths) {
          check_pv_int4(rows, n, dv, G, simd_ok);
          if (::testing::Test::HasFatalFailure()) return;
        }
}

TEST(DecodeMicroPv, Int4Reference) { check_pv_int4_all(false); }

TEST(DecodeMicroPv, Int4Avx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_pv_int4_all(true);
}

// More than 16 groups per row: the AVX-512 weights come in several slices of 16 groups.
void check_pv_int4_many_groups(bool simd_ok) {
  for (int64_t G : {16, 48})
    for (int64_t rows : {1, 4, 5})
      for (int64_t n : {int64_t{17}, kTileKeys})
        for (int64_t dv : {512, 1024}) {
          check_pv_int4(rows, n, dv, G, simd_ok);
          if (::testing::Test::HasFatalFailure()) return;
        }
}

TEST(DecodeMicroPv, Int4ManyGroupsReference) { check_pv_int4_many_groups(false); }

TEST(DecodeMicroPv, Int4ManyGroupsAvx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_pv_int4_many_groups(true);
}

// ---- extremes ----

// Every |q8| at 127 against every code at its extreme (keys of +127 and of -127, which the
// AVX-512 kernel offsets to 255 and 1): the largest int32 dot products, which must come out
// exact; the same for int4 codes against the int16 limit.
// simd: the AVX-512 kernels; else the references.
void check_worst_case_dot_products(bool simd) {
  constexpr int64_t dk = 1024, n = 5, rows = 2;
  std::vector<float> q(rows * dk, 1.0f);
  std::fill(q.begin() + dk, q.end(), -1.0f);
  std::vector<int8_t> q8(q.size());
  float qs[rows];
  quantize_q8(q.data(), rows, dk, q8.data(), qs);
  ASSERT_EQ(q8[0], 127);
  RowPool pool;
  const int8_t* plus = pool.add(std::vector<int8_t>(dk, 127), 1);
  const int8_t* minus = pool.add(std::vector<int8_t>(dk, -127), 1);
  std::vector<const int8_t*> k8(n);
  for (int64_t j = 0; j < n; ++j) k8[j] = j % 2 ? minus : plus;
  std::vector<float> kscale(n, 0.5f);
  std::vector<const uint8_t*> k4(n, pool.add(std::vector<uint8_t>(dk / 2, 0xFF), 1));
  const std::vector<uint16_t> ones(dk, float_to_f16(1.0f)), zeros(dk, 0);
  std::vector<const uint16_t*> k4s(n, pool.add(ones, 2)), k4z(n, pool.add(zeros, 2));
  std::vector<float> s8 = scores_buffer(rows), s4 = scores_buffer(rows);
  if (simd) {
    scores_int8_avx512(q8.data(), qs, rows, dk, k8.data(), kscale.data(), n, s8.data());
    scores_int4_avx512(q.data(), rows, dk, k4.data(), k4s.data(), k4z.data(), n, s4.data());
  } else {
    scores_int8_ref(q8.data(), qs, rows, dk, k8.data(), kscale.data(), n, s8.data());
    scores_int4_ref(q.data(), rows, dk, k4.data(), k4s.data(), k4z.data(), n, s4.data());
  }
  for (int64_t j = 0; j < n; ++j) {
    const double sign = j % 2 ? -1 : 1;
    EXPECT_NEAR(s8[j], sign * 0.5 * 127 * dk, 5 * kU * 0.5 * 127 * dk) << simd;
    EXPECT_NEAR(s8[kTileKeys + j], -sign * 0.5 * 127 * dk, 5 * kU * 0.5 * 127 * dk) << simd;
    EXPECT_NEAR(s4[j], 15.0 * dk, 5 * kU * 15 * dk) << simd;
    EXPECT_NEAR(s4[kTileKeys + j], -15.0 * dk, 5 * kU * 15 * dk) << simd;
  }
}

TEST(DecodeMicroExtremes, WorstCaseDotProductsDoNotOverflowReference) { check_worst_case_dot_products(false); }

TEST(DecodeMicroExtremes, WorstCaseDotProductsDoNotOverflowAvx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_worst_case_dot_products(true);
}

// A poisoned row or group (NaN parameters, kv_quant.hpp) comes out NaN, never silently finite.
// simd: the AVX-512 kernels; else the references.
void check_poisoned_parameters(bool simd) {
  constexpr int64_t d = 64, n = 6, rows = 2, G = 32;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Rng rng(11);
  const Int8Rows k8 = int8_rows(rng, n, d);
  std::vector<float> kscale = k8.scale;
  kscale[3] = nan;
  const std::vector<float> q = rng.normals(rows * d);
  std::vector<int8_t> q8(q.size());
  float qs[rows];
  quantize_q8(q.data(), rows, d, q8.data(), qs);
  Int4Keys k4 = int4_keys(rng, n, d, 2);
  std::vector<uint16_t> poison(d, kKvQuantPoison);
  RowPool pool;
  k4.scale[3] = k4.scale[2] = pool.add(poison, 2);  // keys 2 and 3 share the poisoned group
  const Int4Values v4 = int4_values(rng, n, d, G);
  std::vector<const uint16_t*> vzero = v4.zero;
  vzero[4] = pool.add(std::vector<uint16_t>(2, kKvQuantPoison), 2);
  const std::vector<float> p = make_p(rng, rows, n);
  std::vector<float> s8 = scores_buffer(rows), s4 = scores_buffer(rows), o8(rows * d, 0.0f), o4(rows * d, 0.0f);
  if (simd) {
    scores_int8_avx512(q8.data(), qs, rows, d, k8.rows.data(), kscale.data(), n, s8.data());
    scores_int4_avx512(q.data(), rows, d, k4.rows.data(), k4.scale.data(), k4.zero.data(), n, s4.data());
    pv_int8_avx512(p.data(), rows, k8.rows.data(), kscale.data(), n, d, o8.data());
    pv_int4_avx512(p.data(), rows, v4.rows.data(), v4.scale.data(), vzero.data(), G, n, d, o4.data());
  } else {
    scores_int8_ref(q8.data(), qs, rows, d, k8.rows.data(), kscale.data(), n, s8.data());
    scores_int4_ref(q.data(), rows, d, k4.rows.data(), k4.scale.data(), k4.zero.data(), n, s4.data());
    pv_int8_ref(p.data(), rows, k8.rows.data(), kscale.data(), n, d, o8.data());
    pv_int4_ref(p.data(), rows, v4.rows.data(), v4.scale.data(), vzero.data(), G, n, d, o4.data());
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      EXPECT_EQ(std::isnan(s8[r * kTileKeys + j]), j == 3) << simd << " " << j;
      EXPECT_EQ(std::isnan(s4[r * kTileKeys + j]), j == 2 || j == 3) << simd << " " << j;
    }
    for (int64_t c = 0; c < d; ++c) {
      EXPECT_TRUE(std::isnan(o8[r * d + c])) << simd;
      EXPECT_TRUE(std::isnan(o4[r * d + c])) << simd;
    }
  }
}

TEST(DecodeMicroExtremes, PoisonedParametersComeOutNaNReference) { check_poisoned_parameters(false); }

TEST(DecodeMicroExtremes, PoisonedParametersComeOutNaNAvx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_poisoned_parameters(true);
}

// int4 pv weights are rounded per (row, group): a poisoned scale of one key's group g makes
// the channels of group g NaN, and only those.
// simd: the AVX-512 kernels; else the references.
void check_poisoned_int4_value_scale(bool simd) {
  constexpr int64_t d = 128, n = 20, rows = 5, G = 32;
  Rng rng(12);
  const Int4Values v = int4_values(rng, n, d, G);
  std::vector<const uint16_t*> vscale = v.scale;
  std::vector<uint16_t> scales(vscale[7], vscale[7] + d / G);
  scales[2] = kKvQuantPoison;
  RowPool pool;
  vscale[7] = pool.add(scales, 2);
  const std::vector<float> p = make_p(rng, rows, n);
  std::vector<float> o(rows * d, 0.0f);
  if (simd)
    pv_int4_avx512(p.data(), rows, v.rows.data(), vscale.data(), v.zero.data(), G, n, d, o.data());
  else
    pv_int4_ref(p.data(), rows, v.rows.data(), vscale.data(), v.zero.data(), G, n, d, o.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < d; ++c) EXPECT_EQ(std::isnan(o[r * d + c]), c / G == 2) << simd << " " << r << " " << c;
}

TEST(DecodeMicroExtremes, PoisonedInt4ValueScaleStaysInItsGroupReference) { check_poisoned_int4_value_scale(false); }

TEST(DecodeMicroExtremes, PoisonedInt4ValueScaleStaysInItsGroupAvx512) {
  if (!avx512_available()) GTEST_SKIP() << kNoAvx512;
  check_poisoned_int4_value_scale(true);
}

}  // namespace
}  // namespace attnkit::decode
