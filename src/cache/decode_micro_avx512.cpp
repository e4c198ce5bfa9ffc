// AVX-512 tile micro-kernels of the decode kernel (decode_micro.hpp), scores part; pv is in
// decode_micro_avx512_pv.cpp. Intrinsics, not Highway: Debian's Highway 1.0.3 has neither
// vdpbf16ps nor the VNNI dot products, and these kernels are built around them (vdpbf16ps
// for bf16, vpdpbusd for int8 keys against int8 queries, vpdpwssd for int4 codes widened to
// int16). Every kernel is compiled for
// AVX-512 through a target attribute and is called only after avx512_available(), so the
// library still builds for, and runs on, any x86-64; elsewhere the kernels throw.
//
// Lanes run along channels: one accumulator per (row, key) over the whole row. A block of
// R rows x KB keys, R * KB <= 16, is reduced by one transpose-and-add tree into a single
// vector (lane r * KB + j), scaled, and written with one masked store per row. Operand
// rounding (int16 q') is bit for bit that of the references (decode_micro_ref.cpp), so
// results differ from them by f32 summation order only. Rows are read with unaligned
// loads of exactly their bytes.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"
#include "cache/decode_micro.hpp"

#if defined(__x86_64__)
#include "cache/decode_micro_avx512.hpp"
#endif

namespace attnkit::decode {

bool avx512_supports(int64_t dk, int64_t dv, int64_t G) {
  auto width_ok = [](int64_t d) { return d >= 32 && d <= kMaxHeadDim && d % 32 == 0; };
  // G = 0: no int4 values involved.
  return width_ok(dk) && width_ok(dv) && G >= 0 && G % 16 == 0;
}

#if defined(__x86_64__)

bool avx512_available() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                         __builtin_cpu_supports("avx512bf16");
  return ok;
}

namespace {

using namespace avx512;

// ---- horizontal sums ----

template <bool Int>
ATTNKIT_AVX512_INLINE __m512 add_lanes(__m512 x, __m512 y) {
  if constexpr (Int) {
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(x), _mm512_castps_si512(y)));
  } else {
    return _mm512_add_ps(x, y);
  }
}

// Lane i of the result is the sum of the 16 lanes of a[i] (f32 lanes, or int32 when Int):
// each level adds pairs of vectors after moving their halves apart, so 16 sums cost 15
// adds and 30 shuffles instead of 16 full reductions. Level 1 adds 256-bit halves
// (pairing a[i], a[i + 4]), level 2 128-bit quarters (pairing i, i + 8), levels 3 and 4
// finish within 128-bit lanes (pairing i, i + 1 and i, i + 2).
template <bool Int>
ATTNKIT_AVX512_INLINE __m512 sum16(const __m512* a) {
  __m512 z[8];
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 4; ++i) {
      const __m512 x = a[8 * h + i], y = a[8 * h + i + 4];
      z[4 * h + i] = add_lanes<Int>(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
    }
  __m512 u[4];  // block b of u[i]: a[i + 4 b]
  for (int i = 0; i < 4; ++i)
    u[i] = add_lanes<Int>(_mm512_shuffle_f32x4(z[i], z[i + 4], 0x88), _mm512_shuffle_f32x4(z[i], z[i + 4], 0xDD));
  __m512 t[2];
  for (int i = 0; i < 2; ++i) {
    const __m512d x = _mm512_castps_pd(u[2 * i]), y = _mm512_castps_pd(u[2 * i + 1]);
    t[i] = add_lanes<Int>(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  return add_lanes<Int>(_mm512_shuffle_ps(t[0], t[1], _MM_SHUFFLE(2, 0, 2, 0)),
                        _mm512_shuffle_ps(t[0], t[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

template <bool Max>
ATTNKIT_AVX512_INLINE __m512 max_or_add(__m512 x, __m512 y) {
  return Max ? _mm512_max_ps(x, y) : _mm512_add_ps(x, y);
}

// Lane 4 r of the result: the sum (or max) of the 16 lanes of a[r], r < 4. One tree for four
// rows instead of four reductions: 13 instructions instead of about 40.
template <bool Max>
ATTNKIT_AVX512_INLINE __m512 reduce4(const __m512* a) {
  constexpr auto op = max_or_add<Max>;
  const __m512 x = op(_mm512_shuffle_f32x4(a[0], a[1], 0x44), _mm512_shuffle_f32x4(a[0], a[1], 0xEE));
  const __m512 y = op(_mm512_shuffle_f32x4(a[2], a[3], 0x44), _mm512_shuffle_f32x4(a[2], a[3], 0xEE));
  __m512 z = op(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));  // block r: a[r]
  z = op(z, _mm512_permute_ps(z, _MM_SHUFFLE(1, 0, 3, 2)));
  return op(z, _mm512_permute_ps(z, _MM_SHUFFLE(2, 3, 0, 1)));
}

// Lanes r * KB + j (j < keys) of v go to s[r][j0 + j], r < R.
template <int R, int KB>
ATTNKIT_AVX512_INLINE void store_scores(__m512 v, float* s, int64_t j0, int64_t keys) {
  const unsigned valid = (1u << keys) - 1;
  for (int r = 0; r < R; ++r)
    _mm512_mask_storeu_ps(s + r * kTileKeys + j0 - r * KB, static_cast<__mmask16>(valid << (r * KB)), v);
}

// ---- scores: bf16 ----

template <int R, int KB>
ATTNKIT_AVX512_INLINE void scores_bf16_block(const uint16_t* q, int64_t dk, const uint16_t* const* k, float* s,
                                             int64_t j0, int64_t keys) {
  __m512 acc[16];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  for (int64_t c = 0; c < dk; c += 32) {
    __m512bh qc[R];
    for (int r = 0; r < R; ++r) qc[r] = (__m512bh)_mm512_loadu_si512(q + r * dk + c);
    for (int j = 0; j < KB; ++j) {
      const __m512bh kc = (__m512bh)_mm512_loadu_si512(k[j] + c);
      for (int r = 0; r < R; ++r) acc[r * KB + j] = _mm512_dpbf16_ps(acc[r * KB + j], qc[r], kc);
    }
  }
  store_scores<R, KB>(sum16<false>(acc), s, j0, keys);
}

template <int R>
ATTNKIT_AVX512 void scores_bf16_rows(const uint16_t* q, int64_t dk, const uint16_t* const* krows, int64_t n, float* s,
                                     const Ahead& ahead) {
  constexpr int KB = 16 / R;
  const uint16_t* k[KB];
  for (int64_t j0 = 0; j0 < n; j0 += KB) {
    const int64_t keys = std::min<int64_t>(KB, n - j0);
    prefetch_ahead(ahead, j0, KB, n, 2 * dk);
    for (int j = 0; j < KB; ++j) k[j] = j < keys ? krows[j0 + j] : zero_row<uint16_t>();
    scores_bf16_block<R, KB>(q, dk, k, s, j0, keys);
  }
}

// ---- scores: int8 ----

// vpdpbusd multiplies unsigned by signed bytes: the key codes, in [-127, 127], become
// unsigned as code + 128 (one xor), and 128 * sum_c q8[r][c] is taken off each row's sums.
ATTNKIT_AVX512_INLINE __m512 dpbusd(__m512 acc, __m512i u8, __m512i s8) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));  // inline asm: see dpwssd
  return acc;
}

// Bytes [c, c + 64) of a row, or its last 32 zero-extended (dk is a multiple of 32).
ATTNKIT_AVX512_INLINE __m512i load_bytes(const int8_t* row, int64_t c, int64_t dk) {
  return c + 64 <= dk ? _mm512_loadu_si512(row + c)
                      : _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c)));
}

template <int R, int KB>
ATTNKIT_AVX512_INLINE void scores_int8_block(const int8_t* q8, __m512 row_scale, __m512i row_offset, int64_t dk,
                                             const int8_t* const* k, const float* kscale, float* s, int64_t j0,
                                             int64_t keys) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[16];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  for (int64_t c = 0; c < dk; c += 64) {
    __m512i qc[R];
    for (int r = 0; r < R; ++r) qc[r] = load_bytes(q8 + r * dk, c, dk);  // zero past dk
    for (int j = 0; j < KB; ++j) {
      const __m512i kc = _mm512_xor_si512(load_bytes(k[j], c, dk), flip);
      for (int r = 0; r < R; ++r) acc[r * KB + j] = dpbusd(acc[r * KB + j], kc, qc[r]);
    }
  }
  const __m512i sums = _mm512_sub_epi32(_mm512_castps_si512(sum16<true>(acc)), row_offset);
  const __m512 key_scale = _mm512_permutexvar_ps(_mm512_loadu_si512(kLaneKey<KB>.data()),
                                                 _mm512_maskz_loadu_ps(first_lanes(keys), kscale + j0));
  store_scores<R, KB>(_mm512_mul_ps(_mm512_mul_ps(row_scale, key_scale), _mm512_cvtepi32_ps(sums)), s, j0, keys);
}

template <int R>
ATTNKIT_AVX512 void scores_int8_rows(const int8_t* q8, const float* qs, int64_t dk, const int8_t* const* krows,
                                     const float* kscale, int64_t n, float* s, const Ahead& ahead) {
  constexpr int KB = 16 / R;
  // Per lane r * KB + j: the row's scale, and 128 * sum_c q8[r][c].
  alignas(64) int32_t offset[16] = {};
  for (int r = 0; r < R; ++r) {
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < dk; c += 64) sum = dpbusd(sum, _mm512_set1_epi8(1), load_bytes(q8 + r * dk, c, dk));
    offset[r] = 128 * _mm512_reduce_add_epi32(_mm512_castps_si512(sum));
  }
  const __m512i lane_row = _mm512_loadu_si512(kLaneRow<KB>.data());
  const __m512i row_offset = _mm512_permutexvar_epi32(lane_row, _mm512_load_si512(offset));
  const __m512 row_scale = _mm512_permutexvar_ps(lane_row, _mm512_maskz_loadu_ps(first_lanes(R), qs));
  const int8_t* k[KB];
  for (int64_t j0 = 0; j0 < n; j0 += KB) {
    const int64_t keys = std::min<int64_t>(KB, n - j0);
    prefetch_ahead(ahead, j0, KB, n, dk);
    for (int j = 0; j < KB; ++j) k[j] = j < keys ? krows[j0 + j] : zero_row<int8_t>();
    scores_int8_block<R, KB>(q8, row_scale, row_offset, dk, k, kscale, s, j0, keys);
  }
}

// ---- scores: int4 ----

// An int4 key row is split into chunks of 128 channels (64 bytes, 32 little-endian words);
// word w holds channels 4w .. 4w+3, one per nibble. Nibble t of every word is the vector of
// channels 4w + t, so the int16 query operand is stored in that order ("nibble order"): per
// chunk, four runs of 32 values, run t holding channels 4w + t. A last, partial chunk has
// fewer words; its runs are zero-padded to 32.

// Permutation tables of store_nibble_order, built at compile time.
struct NibbleOrderTables {
  int16_t gather[32];  // words 8 t + i of a 32-channel pair of int32 vectors: channel 4 i + t
  int16_t runs01[32];  // two such results -> runs 0 and 1 of 16 channels each
  int16_t runs23[32];  // -> runs 2 and 3
};
constexpr NibbleOrderTables make_nibble_order_tables() {
  NibbleOrderTables t{};
  for (int run = 0; run < 4; ++run)
    for (int i = 0; i < 8; ++i) {
      const int ch = 4 * i + run;  // low half of the int32 lane holding channel ch
      t.gather[8 * run + i] = static_cast<int16_t>(ch < 16 ? 2 * ch : 32 + 2 * (ch - 16));
    }
  for (int p = 0; p < 16; ++p) {
    const int from = 32 * (p / 8) + p % 8;
    t.runs01[p] = static_cast<int16_t>(from), t.runs01[16 + p] = static_cast<int16_t>(from + 8);
    t.runs23[p] = static_cast<int16_t>(from + 16), t.runs23[16 + p] = static_cast<int16_t>(from + 24);
  }
  return t;
}
alignas(64) constexpr NibbleOrderTables kNibbleOrder = make_nibble_order_tables();

// Stores the int16 values of 128 channels, given as 8 vectors of int32 (channel 16 v + l in
// lane l of in[v], |value| < 2^15), in nibble order: three levels of two-source permutes.
ATTNKIT_AVX512_INLINE void store_nibble_order(const __m512i (&in)[8], int16_t* out) {
  const __m512i gather = _mm512_load_si512(kNibbleOrder.gather);
  const __m512i runs01 = _mm512_load_si512(kNibbleOrder.runs01), runs23 = _mm512_load_si512(kNibbleOrder.runs23);
  __m512i a[4];  // a[m]: channels 32 m .. 32 m + 31, grouped by run
  for (int m = 0; m < 4; ++m) a[m] = _mm512_permutex2var_epi16(in[2 * m], gather, in[2 * m + 1]);
  const __m512i lo01 = _mm512_permutex2var_epi16(a[0], runs01, a[1]),
                lo23 = _mm512_permutex2var_epi16(a[0], runs23, a[1]);
  const __m512i hi01 = _mm512_permutex2var_epi16(a[2], runs01, a[3]),
                hi23 = _mm512_permutex2var_epi16(a[2], runs23, a[3]);
  _mm512_store_si512(out, _mm512_shuffle_i64x2(lo01, hi01, 0x44));
  _mm512_store_si512(out + 32, _mm512_shuffle_i64x2(lo01, hi01, 0xEE));
  _mm512_store_si512(out + 64, _mm512_shuffle_i64x2(lo23, hi23, 0x44));
  _mm512_store_si512(out + 96, _mm512_shuffle_i64x2(lo23, hi23, 0xEE));
}

// The query operands of the key groups a row block meets: slot i, row r is index i * R + r.
// A block of KB keys meets at most KB groups, so KB slots used round robin never evict one
// the block still needs.
struct Int4KeySlots {
  alignas(64) int16_t q16[16][kMaxHeadDim];
  float qs[16];
  float zterm[16];
};

// q'[r][c] = q[r][c] * kscale[c] rounded to int16 per row (round_int16 of the reference),
// in nibble order, and the zero term sum_c q[r][c] * kzero[c], for rows r < R. A product
// is NaN only when q or the scale is not finite (checked on the inputs, q once per call)
// and infinite only when that shows in the max.
template <int R>
ATTNKIT_AVX512 __attribute__((noinline)) void prepare_int4_keys(const float* q, const bool* q_finite, int64_t dk,
                                                                const uint16_t* kscale, const uint16_t* kzero,
                                                                int32_t limit, int16_t (*q16)[kMaxHeadDim], float* qs,
                                                                float* zterm) {
  // Rows run side by side: their max / sum chains are independent.
  alignas(64) float qk[R][kMaxHeadDim];  // q[r][c] * kscale[c]
  __m512 mx[4], z[4];                    // rows past R stay 0
  for (int r = 0; r < 4; ++r) mx[r] = z[r] = _mm512_setzero_ps();
  __mmask16 bad_scale = 0;
  for (int64_t c = 0; c < dk; c += 16) {
    const __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kscale + c)));
    const __m512 zr = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kzero + c)));
    bad_scale |= _mm512_cmp_ps_mask(abs_ps(sc), _mm512_set1_ps(std::numeric_limits<float>::max()), _CMP_NLE_UQ);
    for (int r = 0; r < R; ++r) {
      const __m512 qv = _mm512_loadu_ps(q + r * dk + c);
      const __m512 w = _mm512_mul_ps(qv, sc);
      _mm512_store_ps(qk[r] + c, w);
      mx[r] = _mm512_max_ps(mx[r], abs_ps(w));
      z[r] = _mm512_fmadd_ps(qv, zr, z[r]);
    }
  }
  alignas(64) float row_max[16], row_sum[16];
  _mm512_store_ps(row_max, reduce4<true>(mx));
  _mm512_store_ps(row_sum, reduce4<false>(z));
  for (int r = 0; r < R; ++r) {
    zterm[r] = row_sum[4 * r];
    float inv = 0;
    qs[r] = int16_scale(row_max[4 * r], q_finite[r] && bad_scale == 0, limit, &inv);
    if (!(qs[r] > 0)) {
      std::fill(q16[r], q16[r] + (dk + 127) / 128 * 128, int16_t{0});
      continue;
    }
    const __m512 iv = _mm512_set1_ps(inv);
    for (int64_t c0 = 0; c0 < dk; c0 += 128) {
      __m512i in[8];
      for (int v = 0; v < 8; ++v) {
        const int64_t c = c0 + 16 * v;
        in[v] = c < dk ? _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(qk[r] + c), iv)) : _mm512_setzero_si512();
      }
      store_nibble_order(in, q16[r] + c0);
    }
  }
}

// Channels 4w + t of the 32 words of x. Immediate shifts: with a shift count in a register,
// vpsrlw competes with vpdpwssd for the same unit on Zen 4.
ATTNKIT_AVX512_INLINE __m512i nibble(__m512i x, int t) {
  const __m512i low4 = _mm512_set1_epi16(0x000F);
  switch (t) {  // a constant once the caller's loop is unrolled
    case 0:
      return _mm512_and_si512(x, low4);
    case 1:
      return _mm512_and_si512(_mm512_srli_epi16(x, 4), low4);
    case 2:
      return _mm512_and_si512(_mm512_srli_epi16(x, 8), low4);
    default:
      return _mm512_srli_epi16(x, 12);
  }
}

// The 16, 32, 48 or 64 bytes of an int4 key row chunk, zero-extended to 64. Plain loads of
// exactly those bytes: GCC 12 keeps every array whose address is taken in memory around a
// masked load, which would spill the 16 accumulators once per step.
ATTNKIT_AVX512_INLINE __m512i load_codes(const uint8_t* p, int64_t bytes) {
  switch (bytes) {
    case 64:
      return _mm512_loadu_si512(p);
    case 48:
      return _mm512_inserti32x4(_mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
                                _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32)), 2);
    case 32:
      return _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    default:
      return _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
}

template <int R, int KB, bool Shared>
ATTNKIT_AVX512_INLINE void scores_int4_block(const Int4KeySlots& sl, const int* slot, int64_t dk,
                                             const uint8_t* const* k, float* s, int64_t j0, int64_t keys) {
  __m512 acc[16];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  for (int64_t c = 0; c < dk; c += 128) {
    const int64_t bytes = std::min<int64_t>(64, (dk - c) / 2);  // a last chunk may end early
    __m512i x[KB];
    for (int j = 0; j < KB; ++j) x[j] = load_codes(k[j] + c / 2, bytes);
      // Nibble t of every word holds channels c + 4w + t: 32 channels, like a step of the
      // int8 kernel, with the query operand at q16 + c + 32 t. Unrolled, so that nibble()
      // shifts by immediates.
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
      __m512i qc[R];
      if constexpr (Shared)
        for (int r = 0; r < R; ++r) qc[r] = _mm512_load_si512(sl.q16[slot[0] * R + r] + c + 32 * t);
      for (int j = 0; j < KB; ++j) {
        const __m512i kt = nibble(x[j], t);
        for (int r = 0; r < R; ++r) {
          const __m512i qq = Shared ? qc[r] : _mm512_load_si512(sl.q16[slot[j] * R + r] + c + 32 * t);
          acc[r * KB + j] = dpwssd(acc[r * KB + j], kt, qq);
        }
      }
    }
  }
  const __m512 dot = _mm512_cvtepi32_ps(_mm512_castps_si512(sum16<true>(acc)));
  __m512 qs, zterm;
  if constexpr (Shared) {
    const __m512i rows = _mm512_loadu_si512(kLaneRow<KB>.data());
    qs = _mm512_permutexvar_ps(rows, _mm512_maskz_loadu_ps(first_lanes(R), sl.qs + slot[0] * R));
    zterm = _mm512_permutexvar_ps(rows, _mm512_maskz_loadu_ps(first_lanes(R), sl.zterm + slot[0] * R));
  } else {
    alignas(64) float qs_l[16] = {}, z_l[16] = {};
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < KB; ++j)
        qs_l[r * KB + j] = sl.qs[slot[j] * R + r], z_l[r * KB + j] = sl.zterm[slot[j] * R + r];
    qs = _mm512_load_ps(qs_l);
    zterm = _mm512_load_ps(z_l);
  }
  store_scores<R, KB>(_mm512_add_ps(_mm512_mul_ps(qs, dot), zterm), s, j0, keys);
}

template <int R>
ATTNKIT_AVX512 void scores_int4_rows(const float* q, int64_t dk, const uint8_t* const* krows,
                                     const uint16_t* const* kscale, const uint16_t* const* kzero, int64_t n, float* s,
                                     Int4KeySlots& sl, const Ahead& ahead) {
  constexpr int KB = 16 / R;
  const int32_t limit = q16_limit(dk, 15);
  bool q_finite[R];
  for (int r = 0; r < R; ++r) {
    __m512 mx = _mm512_setzero_ps();
    for (int64_t c = 0; c < dk; c += 16) mx = _mm512_max_ps(mx, abs_ps(_mm512_loadu_ps(q + r * dk + c)));
    q_finite[r] = all_finite(mx);  // max_ps keeps a NaN of its second operand
  }
  const uint8_t* k[KB];
  int slot[KB];
  int cur = -1;
  const uint16_t* cur_scale = nullptr;
  const uint16_t* cur_zero = nullptr;
  for (int64_t j0 = 0; j0 < n; j0 += KB) {
    const int64_t keys = std::min<int64_t>(KB, n - j0);
    prefetch_ahead(ahead, j0, KB, n, dk / 2);
    bool shared = true;  // no group starts inside the block
    for (int j = 0; j < keys; ++j) {
      k[j] = krows[j0 + j];
      if (cur < 0 || kscale[j0 + j] != cur_scale || kzero[j0 + j] != cur_zero) {
        cur = (cur + 1) % KB;
        cur_scale = kscale[j0 + j];
        cur_zero = kzero[j0 + j];
        prepare_int4_keys<R>(q, q_finite, dk, cur_scale, cur_zero, limit, sl.q16 + cur * R, sl.qs + cur * R,
                             sl.zterm + cur * R);
        shared = shared && j == 0;
      }
      slot[j] = cur;
    }
    for (int j = static_cast<int>(keys); j < KB; ++j) k[j] = zero_row<uint8_t>(), slot[j] = cur;
    if (shared)
      scores_int4_block<R, KB, true>(sl, slot, dk, k, s, j0, keys);
    else
      scores_int4_block<R, KB, false>(sl, slot, dk, k, s, j0, keys);
  }
}

}  // namespace

void scores_bf16_avx512(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n,
                        float* s, const Ahead& ahead) {
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    scores_bf16_rows<R>(q + r0 * dk, dk, krows, n, s + r0 * kTileKeys, r0 == 0 ? ahead : Ahead{});
  });
}

void scores_int8_avx512(const int8_t* q8, const float* qs, int64_t rows, int64_t dk, const int8_t* const* krows,
                        const float* kscale, int64_t n, float* s, const Ahead& ahead) {
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    scores_int8_rows<R>(q8 + r0 * dk, qs + r0, dk, krows, kscale, n, s + r0 * kTileKeys, r0 == 0 ? ahead : Ahead{});
  });
}

void scores_int4_avx512(const float* q, int64_t rows, int64_t dk, const uint8_t* const* krows,
                        const uint16_t* const* kscale, const uint16_t* const* kzero, int64_t n, float* s,
                        const Ahead& ahead) {
  if (n <= 0) return;
  Int4KeySlots slots;
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    scores_int4_rows<R>(q + r0 * dk, dk, krows, kscale, kzero, n, s + r0 * kTileKeys, slots,
                        r0 == 0 ? ahead : Ahead{});
  });
}

#else  // not x86-64: no AVX-512 here

bool avx512_available() { return false; }

namespace {
[[noreturn]] void unavailable() { throw Error("decode: the AVX-512 micro-kernels need an x86-64 CPU"); }
}  // namespace

void scores_bf16_avx512(const uint16_t*, int64_t, int64_t, const uint16_t* const*, int64_t, float*, const Ahead&) {
  unavailable();
}
void pv_bf16_avx512(const float*, int64_t, const uint16_t* const*, int64_t, int64_t, float*, const Ahead&) {
  unavailable();
}
void scores_int8_avx512(const int8_t*, const float*, int64_t, int64_t, const int8_t* const*, const float*, int64_t,
                        float*, const Ahead&) {
  unavailable();
}
void pv_int8_avx512(const float*, int64_t, const int8_t* const*, const float*, int64_t, int64_t, float*, const Ahead&) {
  unavailable();
}
void scores_int4_avx512(const float*, int64_t, int64_t, const uint8_t* const*, const uint16_t* const*,
                        const uint16_t* const*, int64_t, float*, const Ahead&) {
  unavailable();
}
void pv_int4_avx512(const float*, int64_t, const uint8_t* const*, const uint16_t* const*, const uint16_t* const*,
                    int64_t, int64_t, int64_t, float*, const Ahead&) {
  unavailable();
}

#endif

}  // namespace attnkit::decode
