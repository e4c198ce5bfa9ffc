// AVX-512 tile micro-kernels of the decode kernel (decode_micro.hpp), pv part for bf16, f16
// and int8: O += P V (int4: avx512_decode_int4.cpp). Why intrinsics, and the dispatch,
// are described in avx512_decode.cpp.
//
// Lanes run along value channels. For bf16 and int8, pairs run along keys (f16 rows are
// widened to f32 and need none): rows j and j+1 are interleaved by unpack instructions
// (which stay within 128-bit lanes) and the weight pair (w_j, w_j+1) is broadcast as one
// 32-bit value into vdpbf16ps / vpdpwssd. The accumulators keep the unpacked channel order
// for the whole tile and are put back in order once, when added into acc. An odd n pairs
// the last key with a zero row. Operand rounding (bf16 p, int16 weights) is bit for bit
// that of the references (decode_micro_ref.cpp), so results differ from them by f32
// summation order only.
#if defined(__x86_64__)

#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/decode_micro.hpp"
#include "kernels/avx512_decode.hpp"

namespace attnkit::decode {
namespace {

using namespace avx512;

// Loops over rows, keys of a vector and 32-channel chunks are unrolled by pragma: GCC 12
// otherwise keeps some of them rolled, and their vector arrays in memory.

constexpr int64_t kPairs = kTileKeys / 2;

// Calls body.template operator()<CB>(c0) on blocks of CB chunks of W channels from c0 on,
// then on the remainder with halved blocks (CB is a power of two).
template <int CB, int W = 32, class Body>
void for_channel_blocks(int64_t c0, int64_t dv, Body&& body) {
  for (; c0 + W * CB <= dv; c0 += W * CB) body.template operator()<CB>(c0);
  if constexpr (CB > 1) for_channel_blocks<CB / 2, W>(c0, dv, body);
}

// Calls body.template operator()<R>(r0) on blocks of R = 2 rows, then on a last single row.
// bf16 pv takes its rows in pairs: with 16 accumulators a pair covers 128 channels per pass,
// so the pass that streams the tile in reads each row (256 bytes at d = 128) whole and in
// order, where blocks of 4 rows cover 64 channels and read every row in two halves, passes
// apart. Decode at d = 128 on 2 threads measured 4-10 % faster (interleaved runs), though the
// V rows are interleaved twice. int8 (whose rows, 128 bytes, are widened to int16 per pass)
// measured no faster and keeps blocks of 4.
template <class Body>
void for_row_pairs(int64_t rows, Body&& body) {
  int64_t r0 = 0;
  for (; r0 + 2 <= rows; r0 += 2) body.template operator()<2>(r0);
  if (r0 < rows) body.template operator()<1>(r0);
}

// pv blocks keep 2 * R * CB accumulators: 16 of the 32 registers.
template <int R>
constexpr int kPvChunks = R >= 3 ? 2 : 8 / R;

// 16 int16 values round(x * inv) (no saturation can occur: |x * inv| < limit + 1/2).
ATTNKIT_AVX512_INLINE __m256i round_int16(__m512 x, __m512 inv) {
  return _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(x, inv)));
}

// Key rows with the zero row appended when n is odd: pair m is (v[2m], v[2m+1]).
template <class T>
int64_t pair_rows(const T* const* vrows, int64_t n, const T** v) {
  std::copy(vrows, vrows + n, v);
  if (n % 2) v[n] = zero_row<T>();
  return (n + 1) / 2;
}

// ---- pv: bf16 ----

// Unpacking rows j, j+1 puts channels 8L .. 8L+3 (unpacklo) and 8L+4 .. 8L+7 (unpackhi)
// into 128-bit lane L of the two interleaved vectors of a 32-channel chunk; these indices
// restore channels 0-15 and 16-31 from the (lo, hi) accumulator pair.
alignas(64) constexpr int32_t kUnpackedLo[16] = {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23};
alignas(64) constexpr int32_t kUnpackedHi[16] = {8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31};

// Weight pairs (bf16(p[r][2m]), bf16(p[r][2m+1])) as 32-bit values, zero past n.
ATTNKIT_AVX512 void bf16_weight_pairs(const float* p, int R, int64_t n, uint32_t (*w)[kPairs]) {
  for (int r = 0; r < R; ++r)
    for (int64_t j = 0; j < kTileKeys; j += 16) {
      const __m512 pv = _mm512_maskz_loadu_ps(first_lanes(n - j), p + r * kTileKeys + j);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w[r] + j / 2), (__m256i)_mm512_cvtneps_pbh(pv));
    }
}

template <int R, int CB>
ATTNKIT_AVX512 void pv_bf16_block(const uint32_t (*w)[kPairs], const uint16_t* const* v, int64_t pairs, int64_t c0,
                                  float* acc, int64_t dv, Spread& spread) {
  __m512 lo[R][CB], hi[R][CB];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < CB; ++b) lo[r][b] = hi[r][b] = _mm512_setzero_ps();
  for (int64_t m = 0; m < pairs; ++m) {
    spread.advance(R * CB);
    const uint16_t* a = v[2 * m] + c0;
    const uint16_t* b = v[2 * m + 1] + c0;
    __m512bh il[CB], ih[CB];
#pragma GCC unroll 16
    for (int cb = 0; cb < CB; ++cb) {
      const __m512i va = _mm512_loadu_si512(a + 32 * cb), vb = _mm512_loadu_si512(b + 32 * cb);
      il[cb] = (__m512bh)_mm512_unpacklo_epi16(va, vb);
      ih[cb] = (__m512bh)_mm512_unpackhi_epi16(va, vb);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512bh wp = (__m512bh)_mm512_set1_epi32(static_cast<int>(w[r][m]));
#pragma GCC unroll 16
      for (int cb = 0; cb < CB; ++cb) {
        lo[r][cb] = _mm512_dpbf16_ps(lo[r][cb], il[cb], wp);
        hi[r][cb] = _mm512_dpbf16_ps(hi[r][cb], ih[cb], wp);
      }
    }
  }
  const __m512i idx_lo = _mm512_load_si512(kUnpackedLo), idx_hi = _mm512_load_si512(kUnpackedHi);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int cb = 0; cb < CB; ++cb) {
      float* out = acc + r * dv + c0 + 32 * cb;
      _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), _mm512_permutex2var_ps(lo[r][cb], idx_lo, hi[r][cb])));
      _mm512_storeu_ps(out + 16,
                       _mm512_add_ps(_mm512_loadu_ps(out + 16), _mm512_permutex2var_ps(lo[r][cb], idx_hi, hi[r][cb])));
    }
}

// ---- pv: f16 ----

// f16 pv blocks keep R * CB accumulators of 16 channels, at most 16 registers. Blocks of 4
// rows, so that each V chunk is widened (vcvtph2ps) once for 4 rows.
template <int R>
constexpr int kF16Chunks = R >= 3 ? 4 : 16 / R;

template <int R, int CB>
ATTNKIT_AVX512 void pv_f16_block(const float* p, const uint16_t* const* v, int64_t n, int64_t c0, float* acc,
                                 int64_t dv, Spread& spread) {
  __m512 a[R][CB];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < CB; ++b) a[r][b] = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    spread.advance(R * CB);
    __m512 x[CB];
#pragma GCC unroll 16
    for (int b = 0; b < CB; ++b)
      x[b] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v[j] + c0 + 16 * b)));
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 pj = _mm512_set1_ps(p[r * kTileKeys + j]);
#pragma GCC unroll 16
      for (int b = 0; b < CB; ++b) a[r][b] = _mm512_fmadd_ps(pj, x[b], a[r][b]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < CB; ++b) {
      float* out = acc + r * dv + c0 + 16 * b;
      _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), a[r][b]));
    }
}

// ---- pv: int8 ----

// Weights w = p[r][j] * vscale[j] rounded to int16 per row (round_int of the reference),
// as pairs (w16[2m], w16[2m+1]) in 32-bit values, zero past n; ws[r] the row's scale.
ATTNKIT_AVX512 void int8_weight_pairs(const float* p, int R, const float* vscale, int64_t n, uint32_t (*w)[kPairs],
                                      float* ws) {
  constexpr int kVectors = kTileKeys / 16;
  for (int r = 0; r < R; ++r) {
    __m512 wv[kVectors];
    __m512 mx = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int i = 0; i < kVectors; ++i) {
      const __mmask16 in = first_lanes(n - 16 * i);
      wv[i] = _mm512_mul_ps(_mm512_maskz_loadu_ps(in, p + r * kTileKeys + 16 * i),
                            _mm512_maskz_loadu_ps(in, vscale + 16 * i));
      const __m512 a = abs_ps(wv[i]);
      bad |= _mm512_cmp_ps_mask(a, _mm512_set1_ps(std::numeric_limits<float>::max()), _CMP_NLE_UQ);
      mx = _mm512_max_ps(mx, a);
    }
    float inv = 0;
    ws[r] = int16_scale(_mm512_reduce_max_ps(mx), bad == 0, 32767, &inv);
    const __m512 iv = _mm512_set1_ps(inv);
    for (int i = 0; i < kVectors; ++i) {
      const __m256i w16 = ws[r] > 0 ? round_int16(wv[i], iv) : _mm256_setzero_si256();
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w[r] + 8 * i), w16);
    }
  }
}

template <int R, int CB>
ATTNKIT_AVX512 void pv_int8_block(const uint32_t (*w)[kPairs], const float* ws, const int8_t* const* v, int64_t pairs,
                                  int64_t c0, float* acc, int64_t dv, Spread& spread) {
  __m512 lo[R][CB], hi[R][CB];  // int32 sums
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < CB; ++b) lo[r][b] = hi[r][b] = _mm512_setzero_ps();
  for (int64_t m = 0; m < pairs; ++m) {
    spread.advance(R * CB);
    const int8_t* a = v[2 * m] + c0;
    const int8_t* b = v[2 * m + 1] + c0;
    __m512i il[CB], ih[CB];
#pragma GCC unroll 16
    for (int cb = 0; cb < CB; ++cb) {
      // Interleaving bytes before widening keeps the shuffles 256 bits wide; lane halves
      // of il hold channels 0-7 / 16-23 of the chunk, those of ih channels 8-15 / 24-31.
      const __m256i va = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32 * cb));
      const __m256i vb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32 * cb));
      il[cb] = _mm512_cvtepi8_epi16(_mm256_unpacklo_epi8(va, vb));
      ih[cb] = _mm512_cvtepi8_epi16(_mm256_unpackhi_epi8(va, vb));
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512i wp = _mm512_set1_epi32(static_cast<int>(w[r][m]));
#pragma GCC unroll 16
      for (int cb = 0; cb < CB; ++cb) {
        lo[r][cb] = dpwssd(lo[r][cb], il[cb], wp);
        hi[r][cb] = dpwssd(hi[r][cb], ih[cb], wp);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const __m512 scale = _mm512_set1_ps(ws[r]);
#pragma GCC unroll 16
    for (int cb = 0; cb < CB; ++cb) {
      float* out = acc + r * dv + c0 + 32 * cb;
      const __m512i first = _mm512_castps_si512(_mm512_shuffle_f32x4(lo[r][cb], hi[r][cb], 0x44));  // channels 0-15
      const __m512i second = _mm512_castps_si512(_mm512_shuffle_f32x4(lo[r][cb], hi[r][cb], 0xEE));
      _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), _mm512_mul_ps(scale, _mm512_cvtepi32_ps(first))));
      _mm512_storeu_ps(out + 16,
                       _mm512_add_ps(_mm512_loadu_ps(out + 16), _mm512_mul_ps(scale, _mm512_cvtepi32_ps(second))));
    }
  }
}

}  // namespace

void pv_bf16_avx512(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc,
                    const Ahead& ahead) {
  if (n <= 0) return;
  const uint16_t* v[kTileKeys + 1];
  const int64_t pairs = pair_rows(vrows, n, v);
  Spread spread(ahead, 2 * dv, rows * (dv / 32) * pairs);
  const auto block = [&]<int R>(int64_t r0) {
    uint32_t w[R][kPairs];
    bf16_weight_pairs(p + r0 * kTileKeys, R, n, w);
    for_channel_blocks<kPvChunks<R>>(0, dv, [&]<int CB>(int64_t c0) {
      pv_bf16_block<R, CB>(w, v, pairs, c0, acc + r0 * dv, dv, spread);
    });
  };
  for_row_pairs(rows, block);
}

void pv_f16_avx512(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc,
                   const Ahead& ahead) {
  if (n <= 0) return;
  Spread spread(ahead, 2 * dv, rows * (dv / 16) * n);
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    for_channel_blocks<kF16Chunks<R>, 16>(0, dv, [&]<int CB>(int64_t c0) {
      pv_f16_block<R, CB>(p + r0 * kTileKeys, vrows, n, c0, acc + r0 * dv, dv, spread);
    });
  });
}

void pv_int8_avx512(const float* p, int64_t rows, const int8_t* const* vrows, const float* vscale, int64_t n,
                    int64_t dv, float* acc, const Ahead& ahead) {
  if (n <= 0) return;
  const int8_t* v[kTileKeys + 1];
  const int64_t pairs = pair_rows(vrows, n, v);
  Spread spread(ahead, dv, rows * (dv / 32) * pairs);
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    uint32_t w[R][kPairs];
    float ws[R];
    int8_weight_pairs(p + r0 * kTileKeys, R, vscale, n, w, ws);
    for_channel_blocks<kPvChunks<R>>(0, dv, [&]<int CB>(int64_t c0) {
      pv_int8_block<R, CB>(w, ws, v, pairs, c0, acc + r0 * dv, dv, spread);
    });
  });
}

}  // namespace attnkit::decode

#endif
