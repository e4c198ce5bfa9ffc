// AVX-512 BF16 micro-kernels of the decode kernel (decode_micro.hpp): S = Q K^T and
// O += P V straight from bf16 cache rows with vdpbf16ps. Debian's Highway 1.0.3 has no
// BF16 dot-product op, so these use intrinsics behind a run-time CPU check, as
// src/cpu/flash_bf16_avx512.cpp does.
//
// scores: lanes along channels (32 bf16 per register, two per f32 lane); 4 query rows x 4
// keys = 16 accumulators, reduced together by an interleave tree (13 instructions for four
// sums instead of four full horizontal reductions).
// pv: lanes along value channels, pairs along keys. Rows j and j + 1 are interleaved with
// vpunpck{l,h}wd, which works within 128-bit blocks, so each accumulator holds its channels
// in a permuted order; it is un-permuted once per call when added into acc.
#include <immintrin.h>

// GCC 12's AVX-512 cast and shuffle intrinsics start from _mm512_undefined_*(), which its
// -Wmaybe-uninitialized reports at every use (a known false positive of that release).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>

#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"
#include "attnkit/tensor.hpp"
#include "cache/decode_micro.hpp"

namespace attnkit::decode {

#if defined(__x86_64__)

bool avx512_available() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512bf16");
  return ok;
}

bool avx512_supports(int64_t dk, int64_t dv) {
  return dk % 32 == 0 && dv % 32 == 0 && dk > 0 && dv > 0 && dk <= kMaxHeadDim && dv <= kMaxHeadDim;
}

namespace {

#define ATTNKIT_DECODE_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512bf16")))

alignas(64) const uint16_t kZeroRow[kMaxHeadDim] = {};

// Sums of a, b, c, d -> lanes 0..3 of the result.
ATTNKIT_DECODE_TARGET inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
  __m512 v = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
                           _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));  // blocks: [a, b, c, d]
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_castps512_ps128(v);
}

ATTNKIT_DECODE_TARGET inline __m512 dot(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

// 4 query rows x 4 keys.
ATTNKIT_DECODE_TARGET void scores_block(const uint16_t* const* q, const uint16_t* const* k, int64_t dk,
                                        float out[4][4]) {
  __m512 acc[4][4];
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t c = 0; c < dk; c += 32) {
    __m512i kv[4];
    for (int j = 0; j < 4; ++j) kv[j] = _mm512_loadu_si512(k[j] + c);
    for (int r = 0; r < 4; ++r) {
      const __m512i qv = _mm512_loadu_si512(q[r] + c);
      for (int j = 0; j < 4; ++j) acc[r][j] = dot(acc[r][j], qv, kv[j]);
    }
  }
  for (int r = 0; r < 4; ++r) _mm_storeu_ps(out[r], reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
}

// acc[r][c0 .. c0 + 64) for 4 rows, keys in pairs; p2: [4][ceil(n/2)] (p_j, p_j+1) bf16 pairs.
ATTNKIT_DECODE_TARGET void pv_block(const uint32_t* p2, int64_t pairs, const uint16_t* const* vrows, int64_t n,
                                    int64_t c0, int64_t width, float* const* out) {
  __m512 lo[4][2], hi[4][2];
  for (int r = 0; r < 4; ++r)
    for (int h = 0; h < 2; ++h) lo[r][h] = hi[r][h] = _mm512_setzero_ps();
  const int halves = width == 64 ? 2 : 1;
  for (int64_t t = 0; t < pairs; ++t) {
    const uint16_t* a = vrows[2 * t];
    const uint16_t* b = 2 * t + 1 < n ? vrows[2 * t + 1] : kZeroRow;
    __m512i il[2], ih[2];
    for (int h = 0; h < halves; ++h) {
      const __m512i va = _mm512_loadu_si512(a + c0 + 32 * h), vb = _mm512_loadu_si512(b + c0 + 32 * h);
      il[h] = _mm512_unpacklo_epi16(va, vb);
      ih[h] = _mm512_unpackhi_epi16(va, vb);
    }
    for (int r = 0; r < 4; ++r) {
      const __m512i w = _mm512_set1_epi32(static_cast<int>(p2[r * pairs + t]));
      for (int h = 0; h < halves; ++h) {
        lo[r][h] = dot(lo[r][h], w, il[h]);
        hi[r][h] = dot(hi[r][h], w, ih[h]);
      }
    }
  }
  // Accumulator lane 4L + i holds channel 8L + i (lo) or 8L + 4 + i (hi) of its 32.
  const __m512i idx0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i idx1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int r = 0; r < 4; ++r) {
    if (!out[r]) continue;
    for (int h = 0; h < halves; ++h) {
      float* o = out[r] + c0 + 32 * h;
      _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), _mm512_permutex2var_ps(lo[r][h], idx0, hi[r][h])));
      _mm512_storeu_ps(o + 16,
                       _mm512_add_ps(_mm512_loadu_ps(o + 16), _mm512_permutex2var_ps(lo[r][h], idx1, hi[r][h])));
    }
  }
}

ATTNKIT_DECODE_TARGET void scores_bf16(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows,
                                       int64_t n, float* s) {
  float out[4][4];
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {
    const int64_t rr = std::min<int64_t>(4, rows - r0);
    const uint16_t* qr[4];
    for (int64_t r = 0; r < 4; ++r) qr[r] = q + (r0 + std::min(r, rr - 1)) * dk;  // padding repeats a row
    for (int64_t j0 = 0; j0 < n; j0 += 4) {
      const int64_t jj = std::min<int64_t>(4, n - j0);
      const uint16_t* kr[4];
      for (int64_t j = 0; j < 4; ++j) kr[j] = j < jj ? krows[j0 + j] : kZeroRow;
      scores_block(qr, kr, dk, out);
      for (int64_t r = 0; r < rr; ++r)
        for (int64_t j = 0; j < jj; ++j) s[(r0 + r) * kTileKeys + j0 + j] = out[r][j];
    }
  }
}

ATTNKIT_DECODE_TARGET void pv_bf16(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv,
                                   float* acc) {
  if (n <= 0) return;
  const int64_t pairs = (n + 1) / 2;
  uint32_t p2[4 * (kTileKeys / 2)];
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {
    float* out[4] = {nullptr, nullptr, nullptr, nullptr};
    for (int64_t r = 0; r < 4; ++r) {
      if (r0 + r >= rows) {
        std::fill(p2 + r * pairs, p2 + (r + 1) * pairs, 0u);
        continue;
      }
      out[r] = acc + (r0 + r) * dv;
      const float* pr = p + (r0 + r) * kTileKeys;
      for (int64_t t = 0; t < pairs; ++t) {
        const uint32_t a = float_to_bf16(pr[2 * t]);
        const uint32_t b = 2 * t + 1 < n ? float_to_bf16(pr[2 * t + 1]) : 0u;
        p2[r * pairs + t] = a | (b << 16);
      }
    }
    for (int64_t c0 = 0; c0 < dv; c0 += 64) pv_block(p2, pairs, vrows, n, c0, std::min<int64_t>(64, dv - c0), out);
  }
}

}  // namespace

void scores_bf16_avx512(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n,
                        float* s) {
  scores_bf16(q, rows, dk, krows, n, s);
}

void pv_bf16_avx512(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc) {
  pv_bf16(p, rows, vrows, n, dv, acc);
}

#else

bool avx512_available() { return false; }
bool avx512_supports(int64_t, int64_t) { return false; }
void scores_bf16_avx512(const uint16_t*, int64_t, int64_t, const uint16_t* const*, int64_t, float*) {
  throw Error("scores_bf16_avx512: this build has no AVX-512 kernels");
}
void pv_bf16_avx512(const float*, int64_t, const uint16_t* const*, int64_t, int64_t, float*) {
  throw Error("pv_bf16_avx512: this build has no AVX-512 kernels");
}

#endif

// ---- plain-loop references: f64 sums of the same bf16 operands, rounded to f32 once ----

void scores_bf16_ref(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n,
                     float* s) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t c = 0; c < dk; ++c)
        sum += double{bf16_to_float(q[r * dk + c])} * double{bf16_to_float(krows[j][c])};
      s[r * kTileKeys + j] = static_cast<float>(sum);
    }
}

void pv_bf16_ref(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < dv; ++c) {
      double sum = acc[r * dv + c];
      for (int64_t j = 0; j < n; ++j)
        sum += double{bf16_to_float(float_to_bf16(p[r * kTileKeys + j]))} * double{bf16_to_float(vrows[j][c])};
      acc[r * dv + c] = static_cast<float>(sum);
    }
}

}  // namespace attnkit::decode
