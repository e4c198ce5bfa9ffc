// AVX-512 tile micro-kernels of the decode kernel (decode_micro.hpp), scores part for bf16,
// f16 and int8; pv is in avx512_decode_pv.cpp, int4 in avx512_decode_int4.cpp.
// Intrinsics, not Highway: Debian's Highway 1.0.3 has neither vdpbf16ps nor the VNNI dot
// products, and these kernels are built around them (vdpbf16ps for bf16, vpdpbusd for int8
// keys, vpdpwssd for int8 values, vpdpbusd for int4). Every kernel is compiled for AVX-512
// through a target attribute and is called only after avx512_available(), so the library
// still builds for, and runs on, any x86-64; elsewhere the kernels throw.
//
// Lanes run along channels: one accumulator per (row, key) over the whole row. A block of
// R rows x KB keys, R * KB <= 16, is reduced by one transpose-and-add tree into a single
// vector (lane r * KB + j), scaled, and written with one masked store per row. Operand
// rounding (int8 q) is bit for bit that of the references (decode_micro_ref.cpp), so
// results differ from them by f32 summation order only. Rows are read with unaligned
// loads of exactly their bytes.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"
#include "kernels/decode_micro.hpp"

#if defined(__x86_64__)
#include "kernels/avx512_decode.hpp"
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

ATTNKIT_AVX512 void fill_rows_avx512(const void* base, int64_t stride, int64_t n, const void** out) {
  alignas(64) int64_t first[8];
  for (int i = 0; i < 8; ++i) first[i] = reinterpret_cast<int64_t>(base) + i * stride;
  __m512i at = _mm512_load_si512(first);
  const __m512i step = _mm512_set1_epi64(8 * stride);
  int64_t x = 0;
  for (; x + 8 <= n; x += 8, at = _mm512_add_epi64(at, step)) _mm512_storeu_si512(out + x, at);
  if (x < n) _mm512_mask_storeu_epi64(out + x, static_cast<__mmask8>((1u << (n - x)) - 1), at);
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

// ---- scores: f16 ----

// As bf16, with 16 channels a step: vcvtph2ps widens the key's halves, exactly, and f32
// FMAs take the queries as they are.
template <int R, int KB>
ATTNKIT_AVX512_INLINE void scores_f16_block(const float* q, int64_t dk, const uint16_t* const* k, float* s, int64_t j0,
                                            int64_t keys) {
  __m512 acc[16];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  for (int64_t c = 0; c < dk; c += 16) {
    __m512 qc[R];
    for (int r = 0; r < R; ++r) qc[r] = _mm512_loadu_ps(q + r * dk + c);
    for (int j = 0; j < KB; ++j) {
      const __m512 kc = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k[j] + c)));
      for (int r = 0; r < R; ++r) acc[r * KB + j] = _mm512_fmadd_ps(qc[r], kc, acc[r * KB + j]);
    }
  }
  store_scores<R, KB>(sum16<false>(acc), s, j0, keys);
}

// The blocks of R rows x KB keys of a tile of 16-bit rows: bf16 (q bf16) or f16 (q f32).
template <int R, class Q>
ATTNKIT_AVX512 void scores_16bit_rows(const Q* q, int64_t dk, const uint16_t* const* krows, int64_t n, float* s,
                                      Spread& spread) {
  constexpr int KB = 16 / R;
  const uint16_t* k[KB];
  for (int64_t j0 = 0; j0 < n; j0 += KB) {
    const int64_t keys = std::min<int64_t>(KB, n - j0);
    spread.advance(R * keys);
    for (int j = 0; j < KB; ++j) k[j] = j < keys ? krows[j0 + j] : zero_row<uint16_t>();
    if constexpr (std::is_same_v<Q, float>)
      scores_f16_block<R, KB>(q, dk, k, s, j0, keys);
    else
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
                                     const float* kscale, int64_t n, float* s, Spread& spread) {
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
    spread.advance(R * keys);
    for (int j = 0; j < KB; ++j) k[j] = j < keys ? krows[j0 + j] : zero_row<int8_t>();
    scores_int8_block<R, KB>(q8, row_scale, row_offset, dk, k, kscale, s, j0, keys);
  }
}

}  // namespace

void scores_bf16_avx512(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n,
                        float* s, const Ahead& ahead) {
  Spread spread(ahead, 2 * dk, rows * n);
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    scores_16bit_rows<R>(q + r0 * dk, dk, krows, n, s + r0 * kTileKeys, spread);
  });
}

void scores_f16_avx512(const float* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n, float* s,
                       const Ahead& ahead) {
  Spread spread(ahead, 2 * dk, rows * n);
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    scores_16bit_rows<R>(q + r0 * dk, dk, krows, n, s + r0 * kTileKeys, spread);
  });
}

void scores_int8_avx512(const int8_t* q8, const float* qs, int64_t rows, int64_t dk, const int8_t* const* krows,
                        const float* kscale, int64_t n, float* s, const Ahead& ahead) {
  Spread spread(ahead, dk, rows * n);
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    scores_int8_rows<R>(q8 + r0 * dk, qs + r0, dk, krows, kscale, n, s + r0 * kTileKeys, spread);
  });
}

#else  // not x86-64: no AVX-512 here

bool avx512_available() { return false; }

namespace {
[[noreturn]] void unavailable() { throw Error("decode: the AVX-512 micro-kernels need an x86-64 CPU"); }
}  // namespace

void fill_rows_avx512(const void*, int64_t, int64_t, const void**) { unavailable(); }
void scores_bf16_avx512(const uint16_t*, int64_t, int64_t, const uint16_t* const*, int64_t, float*, const Ahead&) {
  unavailable();
}
void scores_f16_avx512(const float*, int64_t, int64_t, const uint16_t* const*, int64_t, float*, const Ahead&) {
  unavailable();
}
void pv_f16_avx512(const float*, int64_t, const uint16_t* const*, int64_t, int64_t, float*, const Ahead&) {
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
