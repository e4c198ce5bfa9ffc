// AVX-512 tile micro-kernels of the decode kernel (decode_micro.hpp), pv part: O += P V.
// Why intrinsics, and the dispatch, are described in decode_micro_avx512.cpp.
//
// Lanes run along value channels, pairs along keys: rows j and j+1 are interleaved by
// unpack instructions (which stay within 128-bit lanes) and the weight pair (w_j, w_j+1)
// is broadcast as one 32-bit value into vdpbf16ps / vpdpwssd. The accumulators keep the
// unpacked channel order for the whole tile and are put back in order once, when added
// into acc. An odd n pairs the last key with a zero row. Operand rounding (bf16 p, int16
// weights) is bit for bit that of the references (decode_micro_ref.cpp), so results differ
// from them by f32 summation order only.
#if defined(__x86_64__)

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>

#include "cache/decode_micro.hpp"
#include "cache/decode_micro_avx512.hpp"

namespace attnkit::decode {
namespace {

using namespace avx512;

// Loops over rows, keys of a vector and 32-channel chunks are unrolled by pragma: GCC 12
// otherwise keeps some of them rolled, and their vector arrays in memory.

constexpr int64_t kMaxGroups = kMaxHeadDim / 16;  // int4 value groups per row (G >= 16)
constexpr int64_t kPairs = kTileKeys / 2;

// Calls body.template operator()<CB>(c0) on blocks of CB chunks of 32 channels from c0
// on, then on the remainder with halved blocks (CB is a power of two).
template <int CB, class Body>
void for_channel_blocks(int64_t c0, int64_t dv, Body&& body) {
  for (; c0 + 32 * CB <= dv; c0 += 32 * CB) body.template operator()<CB>(c0);
  if constexpr (CB > 1) for_channel_blocks<CB / 2>(c0, dv, body);
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
                                  float* acc, int64_t dv, const Ahead& ahead, int64_t prefetch_bytes) {
  __m512 lo[R][CB], hi[R][CB];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < CB; ++b) lo[r][b] = hi[r][b] = _mm512_setzero_ps();
  // The first block of a tile streams the rows in; the others find them in cache.
  for (int64_t m = 0; m < pairs; ++m) {
    if (prefetch_bytes) prefetch_ahead(ahead, 2 * m, 2, 2 * pairs, prefetch_bytes);
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

// ---- pv: int8 ----

// Weights w = p[r][j] * vscale[j] rounded to int16 per row (round_int16 of the reference),
// as pairs (w16[2m], w16[2m+1]) in 32-bit values, zero past n; ws[r] the row's scale.
ATTNKIT_AVX512 void int8_weight_pairs(const float* p, int R, const float* vscale, int64_t n, uint32_t (*w)[kPairs],
                                      float* ws) {
  for (int r = 0; r < R; ++r) {
    __m512 wv[4];
    __m512 mx = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int i = 0; i < 4; ++i) {
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
    for (int i = 0; i < 4; ++i) {
      const __m256i w16 = ws[r] > 0 ? round_int16(wv[i], iv) : _mm256_setzero_si256();
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w[r] + 8 * i), w16);
    }
  }
}

template <int R, int CB>
ATTNKIT_AVX512 void pv_int8_block(const uint32_t (*w)[kPairs], const float* ws, const int8_t* const* v, int64_t pairs,
                                  int64_t c0, float* acc, int64_t dv, const Ahead& ahead, int64_t prefetch_bytes) {
  __m512 lo[R][CB], hi[R][CB];  // int32 sums
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < CB; ++b) lo[r][b] = hi[r][b] = _mm512_setzero_ps();
  // The first block of a tile streams the rows in; the others find them in cache.
  for (int64_t m = 0; m < pairs; ++m) {
    if (prefetch_bytes) prefetch_ahead(ahead, 2 * m, 2, 2 * pairs, prefetch_bytes);
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

// ---- pv: int4 ----

// The f16 parameters of the tile's int4 value rows as f32 vectors whose lanes hold (key,
// group) pairs: a slice of up to 16 groups, GP lanes per key (the groups rounded up to a
// power of two), KP = 16 / GP keys per vector, zero past n and past the slice's groups.
// Groups beyond 16 take further slices with GP = 16. Laid out like this, the weights of all
// groups of KP keys come from one multiply, and key pairs from one permute.
struct Int4ValueParams {
  int slices = 1;
  int64_t vectors = 0;  // key vectors per slice: ceil(n / KP)
  bool finite = true;   // every scale is finite
  alignas(64) float scale[kMaxGroups / 16][kTileKeys][16];
  alignas(64) float zero[kMaxGroups / 16][kTileKeys][16];
};

// The weights of R rows: pair[r][slice][m * GP + g % 16] = (w16[2m][g], w16[2m+1][g]),
// ws[r] the row's int16 scale, zsum[r][g] = sum_j p[r][j] * vzero_j[g].
struct Int4ValueWeights {
  alignas(64) uint32_t pair[4][kMaxGroups / 16][kPairs * 16];
  float ws[4];
  alignas(64) float zsum[4][kMaxGroups];
};

template <int GP>
ATTNKIT_AVX512 void load_int4_value_params(const uint16_t* const* vscale, const uint16_t* const* vzero, int64_t groups,
                                           int64_t n, Int4ValueParams& prm) {
  constexpr int KP = 16 / GP;
  prm.vectors = (n + KP - 1) / KP;
  __mmask16 bad = 0;
  for (int s = 0; s < prm.slices; ++s) {
    const int64_t g0 = 16 * s;
    const unsigned slice_lanes = (1u << std::min<int64_t>(16, groups - g0)) - 1;
    for (int64_t kv = 0; kv < prm.vectors; ++kv) {
      __m256i sc = _mm256_setzero_si256(), zr = _mm256_setzero_si256();
#pragma GCC unroll 16
      for (int k = 0; k < KP; ++k) {
        // Lanes k GP .. take key kv KP + k (none past n): a masked load from where lane 0
        // would be if those parameters started at lane k GP. Masked-off lanes are never
        // accessed.
        const int64_t j = kv * KP + k;
        const __mmask16 lanes = static_cast<__mmask16>(j < n ? slice_lanes << (k * GP) : 0);
        const auto at = [&](const uint16_t* const* params) {
          const uint16_t* first = params[std::min(j, n - 1)] + g0;
          return reinterpret_cast<const uint16_t*>(reinterpret_cast<uintptr_t>(first) - 2 * k * GP);
        };
        sc = _mm256_or_si256(sc, _mm256_maskz_loadu_epi16(lanes, at(vscale)));
        zr = _mm256_or_si256(zr, _mm256_maskz_loadu_epi16(lanes, at(vzero)));
      }
      const __m512 scf = _mm512_cvtph_ps(sc);
      bad |= _mm512_cmp_ps_mask(abs_ps(scf), _mm512_set1_ps(std::numeric_limits<float>::max()), _CMP_NLE_UQ);
      _mm512_store_ps(prm.scale[s][kv], scf);
      _mm512_store_ps(prm.zero[s][kv], _mm512_cvtph_ps(zr));
    }
  }
  prm.finite = bad == 0;
}

// Word indices combining two key vectors A, B (2 KP keys) into KP pairs: dword m GP + g
// holds (low half of) the int32 of key 2m, group g, then that of key 2m + 1.
template <int GP>
constexpr std::array<int16_t, 32> make_pair_index() {
  constexpr int KP = 16 / GP;
  std::array<int16_t, 32> idx{};
  for (int m = 0; m < KP; ++m)
    for (int g = 0; g < GP; ++g)
      for (int h = 0; h < 2; ++h) {
        const int key = 2 * m + h;
        const int lane = (key % KP) * GP + g;
        idx[2 * (m * GP + g) + h] = static_cast<int16_t>(2 * lane + (key < KP ? 0 : 32));
      }
  return idx;
}
template <int GP>
alignas(64) constexpr std::array<int16_t, 32> kPairIndex = make_pair_index<GP>();

// Adds the KP key segments of a (key, group) vector: lanes 0 .. GP-1 get the group sums.
template <int GP>
ATTNKIT_AVX512_INLINE __m512 sum_keys(__m512 z) {
  for (int lanes = 8; lanes >= GP; lanes /= 2) {
    const __m512i up = _mm512_add_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                        _mm512_set1_epi32(lanes));
    z = _mm512_add_ps(z, _mm512_permutexvar_ps(up, z));
  }
  return z;
}

// Rows run side by side in the key loops: their max / sum chains are independent, and one
// load of the parameters serves all of them.
template <int GP, int R>
ATTNKIT_AVX512 void int4_value_weights(const float* p, int64_t n, const Int4ValueParams& prm, Int4ValueWeights& w) {
  constexpr int KP = 16 / GP;
  const __m512i key_of_lane = _mm512_loadu_si512(kLaneRow<GP>.data());
  const __m512 big = _mm512_set1_ps(std::numeric_limits<float>::max());
  // Lane (k, g) of key vector kv of row r: p[r][kv KP + k], 0 past n.
  const auto p_lanes = [&](int r, int64_t kv) ATTNKIT_AVX512 {
    const __m512 pv = _mm512_maskz_loadu_ps(first_lanes(n - kv * KP), p + r * kTileKeys + kv * KP);
    return _mm512_permutexvar_ps(key_of_lane, pv);
  };
  bool finite[R];
  __m512 mx[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    __m512 pmax = _mm512_setzero_ps();
    for (int64_t i = 0; i < kTileKeys; i += 16)
      pmax = _mm512_max_ps(pmax, abs_ps(_mm512_maskz_loadu_ps(first_lanes(n - i), p + r * kTileKeys + i)));
    finite[r] = prm.finite && _mm512_cmp_ps_mask(pmax, big, _CMP_NLE_UQ) == 0;
    mx[r] = _mm512_setzero_ps();
  }
  for (int s = 0; s < prm.slices; ++s) {
    __m512 z[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) z[r] = _mm512_setzero_ps();
    for (int64_t kv = 0; kv < prm.vectors; ++kv) {
      const __m512 scale = _mm512_load_ps(prm.scale[s][kv]), zero = _mm512_load_ps(prm.zero[s][kv]);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512 pk = p_lanes(r, kv);
        mx[r] = _mm512_max_ps(mx[r], abs_ps(_mm512_mul_ps(pk, scale)));
        z[r] = _mm512_fmadd_ps(pk, zero, z[r]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(w.zsum[r] + 16 * s, first_lanes(GP), sum_keys<GP>(z[r]));
  }
  __m512 inv[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    float i = 0;
    w.ws[r] = int16_scale(_mm512_reduce_max_ps(mx[r]), finite[r], 32767, &i);
    // 0 when ws is 0 or NaN: every weight then converts to 0, or to 0x80000000 (NaN) whose
    // low half, all the pair keeps, is 0 too.
    inv[r] = _mm512_set1_ps(i);
  }
  const __m512i pair_index = _mm512_load_si512(kPairIndex<GP>.data());
  for (int s = 0; s < prm.slices; ++s)
    for (int64_t kv = 0; kv < prm.vectors; kv += 2) {
      const bool second = kv + 1 < prm.vectors;
      const __m512 scale0 = _mm512_load_ps(prm.scale[s][kv]);
      const __m512 scale1 = second ? _mm512_load_ps(prm.scale[s][kv + 1]) : _mm512_setzero_ps();
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512i w0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_mul_ps(p_lanes(r, kv), scale0), inv[r]));
        const __m512i w1 = second ? _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_mul_ps(p_lanes(r, kv + 1), scale1), inv[r]))
                                  : _mm512_setzero_si512();
        _mm512_store_si512(w.pair[r][s] + kv * KP / 2 * GP, _mm512_permutex2var_epi16(w0, pair_index, w1));
      }
    }
}

// Even / odd channel lanes of a 32-channel chunk back to channels 0-15 and 16-31.
alignas(64) constexpr int32_t kEvenOddLo[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
alignas(64) constexpr int32_t kEvenOddHi[16] = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

// OneGroup: every 32-channel chunk lies in one group (G a multiple of 32); otherwise its
// two 16-channel halves may not, and the weight vector holds one pair per half.
template <int R, int CB, bool OneGroup>
ATTNKIT_AVX512 void pv_int4_block(const Int4ValueWeights& w, int gp, int64_t G, const uint8_t* const* v, int64_t pairs,
                                  int64_t c0, float* acc, int64_t dv, const Ahead& ahead, int64_t prefetch_bytes) {
  int64_t g_lo[CB], g_hi[CB];
  const uint32_t* w_lo[R][CB];  // pair m of the group of each half at [m * gp]
  const uint32_t* w_hi[R][CB];
#pragma GCC unroll 16
  for (int cb = 0; cb < CB; ++cb) {
    g_lo[cb] = (c0 + 32 * cb) / G, g_hi[cb] = (c0 + 32 * cb + 16) / G;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      w_lo[r][cb] = w.pair[r][g_lo[cb] / 16] + g_lo[cb] % 16;
      w_hi[r][cb] = w.pair[r][g_hi[cb] / 16] + g_hi[cb] % 16;
    }
  }
  __m512 ev[R][CB], od[R][CB];  // int32 sums
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < CB; ++b) ev[r][b] = od[r][b] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi16(0x000F);
  // The first block of a tile streams the rows in; the others find them in cache.
  for (int64_t m = 0; m < pairs; ++m) {
    if (prefetch_bytes) prefetch_ahead(ahead, 2 * m, 2, 2 * pairs, prefetch_bytes);
    const uint8_t* a = v[2 * m] + c0 / 2;
    const uint8_t* b = v[2 * m + 1] + c0 / 2;
    __m512i e[CB], o[CB];
#pragma GCC unroll 16
    for (int cb = 0; cb < CB; ++cb) {
      // 16 bytes of each row interleaved and widened: word pair i holds byte i of both
      // rows, i.e. channels 2i (low nibbles, e) and 2i+1 (high nibbles, o).
      const __m128i va = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 16 * cb));
      const __m128i vb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 * cb));
      const __m256i ab =
          _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(va, vb)), _mm_unpackhi_epi8(va, vb), 1);
      const __m512i words = _mm512_cvtepu8_epi16(ab);
      e[cb] = _mm512_and_si512(words, low4);
      o[cb] = _mm512_srli_epi16(words, 4);
    }
    const int64_t at = m * gp;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int cb = 0; cb < CB; ++cb) {
        __m512i wp;
        if constexpr (OneGroup) {
          wp = _mm512_set1_epi32(static_cast<int>(w_lo[r][cb][at]));
        } else {
          wp = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(static_cast<int>(w_lo[r][cb][at]))),
                                  _mm256_set1_epi32(static_cast<int>(w_hi[r][cb][at])), 1);
        }
        ev[r][cb] = dpwssd(ev[r][cb], e[cb], wp);
        od[r][cb] = dpwssd(od[r][cb], o[cb], wp);
      }
  }
  const __m512i idx_lo = _mm512_load_si512(kEvenOddLo), idx_hi = _mm512_load_si512(kEvenOddHi);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const __m512 scale = _mm512_set1_ps(w.ws[r]);
#pragma GCC unroll 16
    for (int cb = 0; cb < CB; ++cb) {
      float* out = acc + r * dv + c0 + 32 * cb;
      const __m512 first =
          _mm512_cvtepi32_ps(_mm512_castps_si512(_mm512_permutex2var_ps(ev[r][cb], idx_lo, od[r][cb])));
      const __m512 second =
          _mm512_cvtepi32_ps(_mm512_castps_si512(_mm512_permutex2var_ps(ev[r][cb], idx_hi, od[r][cb])));
      const __m512 t0 = _mm512_fmadd_ps(scale, first, _mm512_set1_ps(w.zsum[r][g_lo[cb]]));
      const __m512 t1 = _mm512_fmadd_ps(scale, second, _mm512_set1_ps(w.zsum[r][g_hi[cb]]));
      _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), t0));
      _mm512_storeu_ps(out + 16, _mm512_add_ps(_mm512_loadu_ps(out + 16), t1));
    }
  }
}

// Calls body.template operator()<GP>() with the lanes per key of `groups` groups.
template <class Body>
void with_group_lanes(int64_t groups, Body&& body) {
  if (groups > 8)
    body.template operator()<16>();
  else if (groups > 4)
    body.template operator()<8>();
  else if (groups > 2)
    body.template operator()<4>();
  else if (groups > 1)
    body.template operator()<2>();
  else
    body.template operator()<1>();
}

}  // namespace

void pv_bf16_avx512(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc,
                    const Ahead& ahead) {
  if (n <= 0) return;
  const uint16_t* v[kTileKeys + 1];
  const int64_t pairs = pair_rows(vrows, n, v);
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    uint32_t w[R][kPairs];
    bf16_weight_pairs(p + r0 * kTileKeys, R, n, w);
    for_channel_blocks<kPvChunks<R>>(0, dv, [&]<int CB>(int64_t c0) {
      pv_bf16_block<R, CB>(w, v, pairs, c0, acc + r0 * dv, dv, ahead, r0 + c0 == 0 ? 2 * dv : 0);
    });
  });
}

void pv_int8_avx512(const float* p, int64_t rows, const int8_t* const* vrows, const float* vscale, int64_t n,
                    int64_t dv, float* acc, const Ahead& ahead) {
  if (n <= 0) return;
  const int8_t* v[kTileKeys + 1];
  const int64_t pairs = pair_rows(vrows, n, v);
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    uint32_t w[R][kPairs];
    float ws[R];
    int8_weight_pairs(p + r0 * kTileKeys, R, vscale, n, w, ws);
    for_channel_blocks<kPvChunks<R>>(0, dv, [&]<int CB>(int64_t c0) {
      pv_int8_block<R, CB>(w, ws, v, pairs, c0, acc + r0 * dv, dv, ahead, r0 + c0 == 0 ? dv : 0);
    });
  });
}

void pv_int4_avx512(const float* p, int64_t rows, const uint8_t* const* vrows, const uint16_t* const* vscale,
                    const uint16_t* const* vzero, int64_t G, int64_t n, int64_t dv, float* acc,
                    const Ahead& ahead) {
  if (n <= 0) return;
  const int64_t groups = (dv + G - 1) / G;
  Int4ValueParams prm;
  prm.slices = static_cast<int>((groups + 15) / 16);
  const uint8_t* v[kTileKeys + 1];
  const int64_t pairs = pair_rows(vrows, n, v);
  with_group_lanes(groups, [&]<int GP>() {
    load_int4_value_params<GP>(vscale, vzero, groups, n, prm);
    for_row_blocks(rows, [&]<int R>(int64_t r0) {
      Int4ValueWeights w;
      int4_value_weights<GP, R>(p + r0 * kTileKeys, n, prm, w);
      for_channel_blocks<kPvChunks<R>>(0, dv, [&]<int CB>(int64_t c0) {
        if (G % 32 == 0)
          pv_int4_block<R, CB, true>(w, GP, G, v, pairs, c0, acc + r0 * dv, dv, ahead, r0 + c0 == 0 ? dv / 2 : 0);
        else
          pv_int4_block<R, CB, false>(w, GP, G, v, pairs, c0, acc + r0 * dv, dv, ahead, r0 + c0 == 0 ? dv / 2 : 0);
      });
    });
  });
}

}  // namespace attnkit::decode

#endif
