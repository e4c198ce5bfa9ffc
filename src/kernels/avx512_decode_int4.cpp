// AVX-512 tile micro-kernels of the decode kernel (decode_micro.hpp) for int4 storage
// (kv_quant.hpp layouts): S = Q K^T and O += P V. Why intrinsics, and the dispatch, are
// described in avx512_decode.cpp.
//
// Both products are built on vpdpbusd: per int32 lane, the sum of 4 products of unsigned by
// signed bytes, 64 products per instruction. The codes (0 .. 15) are one operand as stored,
// split into low and high nibbles by masks (and an immediate shift); the other is the query
// (scores) or the weights (pv) rounded to 8 bits once per key group or tile, not per key.
// That rounding is bit for bit the references' (decode_micro_ref.cpp), so results differ
// from them by f32 summation order only. (vpdpwssd on int16 operands, the nibbles widened to
// words, does half the products per instruction.)
//
// Scores: lanes run along keys. A block of 16 keys is transposed in 32-bit words (4 code
// bytes, 8 channels of one key per lane), so that vector kk holds word kk of every key; its
// low / high nibbles meet the matching 4 even / odd channels of q', broadcast from memory.
// Every (row, key) dot product ends in its own lane: no horizontal sums.
//
// PV: lanes run along value channels, bytes along keys. Four key rows are interleaved byte by
// byte, so that a 32-bit lane holds one code byte of each of the four keys, and each vector
// is arranged to cover 16 channels of a single value group (G is a multiple of 16): its
// weights, four bytes per row, are one broadcast 32-bit value.
//
// Measured on Zen 4 (512-bit ops double-pumped, one vpdpbusd per cycle): the dot products
// are the floor (8 vpdpbusd per key for each product at 4 rows x 128 channels), 128-bit lane
// shuffles (vshufi32x4) compete with them and in-lane unpacks hardly do, and GCC 12 spilling
// general registers into vector ones (vmovq) costs more than the shuffles it feeds.
#if defined(__x86_64__)

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "kernels/decode_micro.hpp"
#include "kernels/avx512_decode.hpp"

// The body of a static_for: compiled for AVX-512 and always inlined, like the helpers.
#define ATTNKIT_AVX512_LAMBDA ATTNKIT_AVX512 __attribute__((always_inline))

namespace attnkit::decode {
namespace {

using namespace avx512;

constexpr int64_t kMaxSlices = kMaxHeadDim / 64;  // value groups (G >= 16) are weighed four at a time
constexpr int64_t kQuads = kTileKeys / 4;         // pv handles keys four at a time

// acc + per int32 lane the 4 products of the unsigned bytes of u and the signed bytes of s.
// Inline assembly, for the reason given at dpwssd (avx512_decode.hpp).
ATTNKIT_AVX512_INLINE __m512i dpbusd(__m512i acc, __m512i u, __m512i s) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
  return acc;
}

// The same with the signed bytes the 4 at base + At in every lane, and only `lanes` updated.
// Base register plus constant displacement, spelled out: given a memory operand, GCC 12
// computes every address of a loop once, up front, and spills them.
template <int At>
ATTNKIT_AVX512_INLINE __m512i dpbusd_bcast(__m512i acc, __m512i u, const int8_t* base, __mmask16 lanes) {
  asm("vpdpbusd %c[at](%[base])%{1to16%}, %[u], %[acc]%{%[lanes]%}"
      : [acc] "+v"(acc)
      : [u] "v"(u), [at] "i"(At), [base] "r"(base), [lanes] "Yk"(lanes),
        "m"(*reinterpret_cast<const int8_t(*)[At + 4]>(base)));  // what it reads
  return acc;
}

// Lanes holding a NaN or an infinity.
ATTNKIT_AVX512_INLINE __mmask16 nonfinite(__m512 x) {
  return _mm512_cmp_ps_mask(abs_ps(x), _mm512_set1_ps(std::numeric_limits<float>::max()), _CMP_NLE_UQ);
}

// acc, made NaN in the lanes where x is not finite (x * 0 is NaN exactly then): one
// instruction per vector to check a whole array, tested once at the end with nonfinite.
ATTNKIT_AVX512_INLINE __m512 add_nan_of(__m512 acc, __m512 x) {
  return _mm512_fmadd_ps(x, _mm512_setzero_ps(), acc);
}

ATTNKIT_AVX512_INLINE __m512 load_f16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// ---- scores ----

// Even and odd channels of 32 (two vectors of 16): the order in which the query operand is
// made, so that it comes out split by nibble.
alignas(64) constexpr int32_t kEven[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
alignas(64) constexpr int32_t kOdd[16] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};

// The queries of a row block of R <= 4 rows and the operand of one key group (scale, zero):
// q'[r][c] = q[r][c] * kscale[c] rounded to int8 per row (the reference's round_int,
// q' ~= qs[r] * q8). Per 128-channel chunk, 512 bytes: 64 of even channels then 64 of odd
// ones for each row (so that all 8 are at fixed offsets from one pointer), each holding the
// 4 bytes that meet code word kk (channels 8 kk .. 8 kk + 7 of the chunk) at word
// word_slot(kk): the order two levels of saturating packs leave them in, which no shuffle
// then has to undo.
// The arrays are packed at the rows' width, not laid out for kMaxHeadDim.
class KeyOperand {
 public:
  explicit KeyOperand(int64_t dk) : dk_(dk), chunks_((dk + 127) / 128) {}

  const uint16_t* scale = nullptr;  // the group the operand was made for
  const uint16_t* zero = nullptr;
  float qs[4] = {};
  float zterm[4] = {};  // sum_c q[r][c] * kzero[c]
  bool finite[4] = {};  // the query rows

  // Row r's even (odd = 1) channels of chunk c.
  int8_t* bytes(int64_t c, int r, int odd) { return reinterpret_cast<int8_t*>(buf_) + c * 512 + (2 * r + odd) * 64; }
  const int8_t* chunk(int64_t c) const { return reinterpret_cast<const int8_t*>(buf_) + c * 512; }
  // The query rows, each 32-channel block as its 16 even then 16 odd channels.
  float* split(int r) { return buf_ + chunks_ * 128 + r * dk_; }
  const float* split(int r) const { return buf_ + chunks_ * 128 + r * dk_; }
  // Scratch of prepare_keys: q[r][c] * kscale[c], split the same way.
  float* product(int r) { return split(4 + r); }

 private:
  int64_t dk_, chunks_;
  alignas(64) float buf_[kMaxHeadDim + 8 * kMaxHeadDim];  // operand bytes, split queries, products
};

constexpr int word_slot(int kk) { return 4 * (kk % 4) + kk / 4; }

// f(std::integral_constant<int, i>{}) for i = 0 .. N-1: loops whose index must be a
// constant (an instruction's displacement).
template <class F, int... I>
ATTNKIT_AVX512_INLINE void static_for(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
ATTNKIT_AVX512_INLINE void static_for(F&& f) {
  static_for(f, std::make_integer_sequence<int, N>{});
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

template <int R>
ATTNKIT_AVX512 void split_queries(const float* q, int64_t dk, KeyOperand& op) {
  const __m512i even = _mm512_load_si512(kEven), odd = _mm512_load_si512(kOdd);
  float* const split = op.split(0);
  for (int r = 0; r < R; ++r) {
    __m512 nan = _mm512_setzero_ps();
    for (int64_t c = 0; c < dk; c += 32) {
      const __m512 a = _mm512_loadu_ps(q + r * dk + c), b = _mm512_loadu_ps(q + r * dk + c + 16);
      nan = add_nan_of(add_nan_of(nan, a), b);
      _mm512_store_ps(split + r * dk + c, _mm512_permutex2var_ps(a, even, b));
      _mm512_store_ps(split + r * dk + c + 16, _mm512_permutex2var_ps(a, odd, b));
    }
    op.finite[r] = nonfinite(nan) == 0;
  }
}

// ws and inv of int16_scale (avx512_decode.hpp) for every lane at once: m = the lane's
// max, `bad` lanes not finite.
ATTNKIT_AVX512_INLINE __m512 lane_scales(__m512 m, __mmask16 bad, float limit, __m512* inv) {
  const __mmask16 nan = bad | nonfinite(m);
  const __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(kInt16TinyMax), _CMP_GE_OQ);
  const auto ok = static_cast<__mmask16>(~nan & big);
  const __m512 lim = _mm512_set1_ps(limit);
  *inv = _mm512_maskz_div_ps(ok, lim, m);
  const __m512 qnan = _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN());
  return _mm512_mask_mov_ps(_mm512_maskz_div_ps(ok, m, lim), nan, qnan);
}

// Makes op the operand of group (kscale, kzero). Rows run side by side: their max / sum
// chains are independent, and one load of the group's parameters serves all of them.
// Computing the products q * kscale again for the rounding, instead of storing and loading
// them, measured slower.
template <int R>
ATTNKIT_AVX512 __attribute__((noinline)) void prepare_keys(const float* q, int64_t dk, const uint16_t* kscale,
                                                           const uint16_t* kzero, KeyOperand& op) {
  op.scale = kscale;
  op.zero = kzero;
  // Pointers taken up front: every vector store may alias op, whose fields GCC would reload.
  const float* const split = op.split(0);  // row r at r * dk
  float* const product = op.product(0);    // q[r][c] * kscale[c], split; row r at r * dk
  int8_t* const bytes = op.bytes(0, 0, 0);  // chunk c, row r, odd at c * 512 + (2 r + odd) * 64
  const __m512i even = _mm512_load_si512(kEven), odd = _mm512_load_si512(kOdd);
  __m512 mx[4], z[4];  // rows past R stay 0
  for (int r = 0; r < 4; ++r) mx[r] = z[r] = _mm512_setzero_ps();
  __m512 nan = _mm512_setzero_ps();
  for (int64_t c = 0; c < dk; c += 32) {
    const __m512 s0 = load_f16(kscale + c), s1 = load_f16(kscale + c + 16);
    const __m512 z0 = load_f16(kzero + c), z1 = load_f16(kzero + c + 16);
    nan = add_nan_of(add_nan_of(nan, s0), s1);
    const __m512 se = _mm512_permutex2var_ps(s0, even, s1), so = _mm512_permutex2var_ps(s0, odd, s1);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 we = _mm512_mul_ps(_mm512_load_ps(split + r * dk + c), se);
      const __m512 wo = _mm512_mul_ps(_mm512_load_ps(split + r * dk + c + 16), so);
      _mm512_store_ps(product + r * dk + c, we);
      _mm512_store_ps(product + r * dk + c + 16, wo);
      mx[r] = _mm512_max_ps(mx[r], _mm512_max_ps(abs_ps(we), abs_ps(wo)));
      z[r] = _mm512_fmadd_ps(_mm512_loadu_ps(q + r * dk + c), z0, z[r]);
      z[r] = _mm512_fmadd_ps(_mm512_loadu_ps(q + r * dk + c + 16), z1, z[r]);
    }
  }
  const bool scale_finite = nonfinite(nan) == 0;
  const __m512 row_max = reduce4<true>(mx), row_sum = reduce4<false>(z);  // lane 4 r: row r's
  float maxima[4], sums[4];
  static_for<R>([&](auto r) ATTNKIT_AVX512_LAMBDA {
    maxima[r] = _mm_cvtss_f32(_mm512_extractf32x4_ps(row_max, decltype(r)::value));
    sums[r] = _mm_cvtss_f32(_mm512_extractf32x4_ps(row_sum, decltype(r)::value));
  });
  for (int r = 0; r < R; ++r) {
    op.zterm[r] = sums[r];
    float inv = 0;
    // A product is NaN only when q or the scale is not finite (checked on the inputs) and
    // infinite only when that shows in the max.
    op.qs[r] = int16_scale(maxima[r], op.finite[r] && scale_finite, 127, &inv);
    const bool some = op.qs[r] > 0;
    const __m512 iv = _mm512_set1_ps(inv);
    for (int64_t c0 = 0; c0 < dk; c0 += 128) {
      __m512i e[4], o[4];  // channel block m: its even and odd channels, rounded
      for (int m = 0; m < 4; ++m) {
        const int64_t c = c0 + 32 * m;
        const bool in = some && c < dk;
        const float* x = product + r * dk + c;
        e[m] = in ? _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(x), iv)) : _mm512_setzero_si512();
        o[m] = in ? _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(x + 16), iv)) : _mm512_setzero_si512();
      }
      // Byte 16 L + 4 m + i of a pack: lane 4 L + i of block m, i.e. channel 32 m + 8 L + 2 i
      // (+1 for odd), which meets code word kk = 4 m + L at word 4 L + m = word_slot(kk).
      int8_t* const to = bytes + c0 / 128 * 512 + 2 * r * 64;
      _mm512_store_si512(to, _mm512_packs_epi16(_mm512_packs_epi32(e[0], e[1]), _mm512_packs_epi32(e[2], e[3])));
      _mm512_store_si512(to + 64, _mm512_packs_epi16(_mm512_packs_epi32(o[0], o[1]), _mm512_packs_epi32(o[2], o[3])));
    }
  }
}

// The Bytes (16, 32, 48 or 64) bytes of a code row chunk at p, zero-extended to 64.
template <int Bytes>
ATTNKIT_AVX512_INLINE __m512i load_codes(const uint8_t* p) {
  if constexpr (Bytes == 64) {
    return _mm512_loadu_si512(p);
  } else if constexpr (Bytes == 48) {
    return _mm512_inserti32x4(_mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
                              _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32)), 2);
  } else if constexpr (Bytes == 32) {
    return _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else {
    return _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
}

// acc[0][r] / acc[1][r] (lane j: key j) += the dot products of the low / 16 x the high
// nibbles of the 16 keys' codes in chunk `c` (Bytes bytes: 128 channels, or fewer at the end
// of a row) with the even / odd operand of row r, in `lanes` only. A 16 x 16 transpose of
// 32-bit words (two unpack levels, two 128-bit shuffle levels), in two halves of 8 words so
// that fewer vectors are live; each word then costs 2 R vpdpbusd. High nibbles are only
// masked, not shifted: acc[1] is shifted once at the end instead. The chunk width is a
// template argument: with a run-time width GCC 12 spills the loop's vectors.
template <int R, int Bytes>
ATTNKIT_AVX512_INLINE void dot_chunk(const uint8_t* const* k, int64_t c, const KeyOperand& op, __mmask16 lanes,
                                     __m512i (&acc)[2][4]) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), high4 = _mm512_set1_epi8(static_cast<char>(0xF0));
  const int64_t off = 64 * c;
  const int8_t* operand = op.chunk(c);
  static_for<2>([&](auto half) ATTNKIT_AVX512_LAMBDA {
    // The row pointers and rows loaded again where needed, not kept from before: GCC would
    // spill them (to the stack, or into vector registers).
    asm volatile("" : "+r"(k)::"memory");
    __m512i u[8];  // u[2 i + m], lane block L: keys 4 i .. 4 i + 3, word 4 L + 2 half + m
    static_for<4>([&](auto i) ATTNKIT_AVX512_LAMBDA {
      const __m512i a = load_codes<Bytes>(k[4 * i] + off), b = load_codes<Bytes>(k[4 * i + 1] + off);
      const __m512i c = load_codes<Bytes>(k[4 * i + 2] + off), d = load_codes<Bytes>(k[4 * i + 3] + off);
      const __m512i ab = half ? _mm512_unpackhi_epi32(a, b) : _mm512_unpacklo_epi32(a, b);
      const __m512i cd = half ? _mm512_unpackhi_epi32(c, d) : _mm512_unpacklo_epi32(c, d);
      u[2 * i] = _mm512_unpacklo_epi64(ab, cd);
      u[2 * i + 1] = _mm512_unpackhi_epi64(ab, cd);
    });
    static_for<2>([&](auto m) ATTNKIT_AVX512_LAMBDA {
      const __m512i v0 = _mm512_shuffle_i32x4(u[m], u[2 + m], 0x44), v1 = _mm512_shuffle_i32x4(u[m], u[2 + m], 0xEE);
      const __m512i v2 = _mm512_shuffle_i32x4(u[4 + m], u[6 + m], 0x44),
                    v3 = _mm512_shuffle_i32x4(u[4 + m], u[6 + m], 0xEE);
      const __m512i t[4] = {_mm512_shuffle_i32x4(v0, v2, 0x88), _mm512_shuffle_i32x4(v0, v2, 0xDD),
                            _mm512_shuffle_i32x4(v1, v3, 0x88), _mm512_shuffle_i32x4(v1, v3, 0xDD)};
      static_for<4>([&](auto L) ATTNKIT_AVX512_LAMBDA {
        constexpr int kk = 4 * L + 2 * half + m;  // t[L], lane j: code word kk of key j
        if constexpr (4 * kk < Bytes) {
          const __m512i lo = _mm512_and_si512(t[L], low4), hi = _mm512_and_si512(t[L], high4);
          constexpr int at = 4 * word_slot(kk);
          static_for<R>([&](auto r) ATTNKIT_AVX512_LAMBDA {
            acc[0][r] = dpbusd_bcast<128 * r + at>(acc[0][r], lo, operand, lanes);
            acc[1][r] = dpbusd_bcast<128 * r + 64 + at>(acc[1][r], hi, operand, lanes);
          });
        }
      });
    });
  });
}

// dot_chunk over the whole rows of width dk.
template <int R>
ATTNKIT_AVX512_INLINE void dot_keys(const uint8_t* const* k, int64_t dk, const KeyOperand& op, __mmask16 lanes,
                                    __m512i (&acc)[2][4]) {
  const int64_t whole = dk / 128;
  for (int64_t c = 0; c < whole; ++c) dot_chunk<R, 64>(k, c, op, lanes, acc);
  switch (dk % 128) {  // dk is a multiple of 32
    case 96:
      dot_chunk<R, 48>(k, whole, op, lanes, acc);
      break;
    case 64:
      dot_chunk<R, 32>(k, whole, op, lanes, acc);
      break;
    case 32:
      dot_chunk<R, 16>(k, whole, op, lanes, acc);
      break;
    default:
      break;
  }
}

// The end of the run of keys from j on (< keys) whose group is that of key j: those with
// the same scale and zero pointers, found 8 at a time.
ATTNKIT_AVX512_INLINE int run_end(const uint16_t* const* kscale, const uint16_t* const* kzero, int j, int keys) {
  const __m512i s = _mm512_set1_epi64(reinterpret_cast<int64_t>(kscale[j]));
  const __m512i z = _mm512_set1_epi64(reinterpret_cast<int64_t>(kzero[j]));
  unsigned same = 0;  // bit i: key i of the block is in key j's group
  for (int i = 0; i < 16; i += 8) {
    const __mmask8 in = static_cast<__mmask8>(keys - i >= 8 ? 0xFF : keys > i ? (1u << (keys - i)) - 1 : 0);
    const __mmask8 eq = _mm512_mask_cmpeq_epi64_mask(in, _mm512_maskz_loadu_epi64(in, kscale + i), s) &
                        _mm512_mask_cmpeq_epi64_mask(in, _mm512_maskz_loadu_epi64(in, kzero + i), z);
    same |= static_cast<unsigned>(eq) << i;
  }
  const unsigned differ = ~same & ~((1u << j) - 1);  // from j on; bits past `keys` are set
  return std::min(keys, __builtin_ctz(differ));
}

template <int R>
ATTNKIT_AVX512 void scores_int4_rows(const float* q, int64_t dk, const uint8_t* const* krows,
                                     const uint16_t* const* kscale, const uint16_t* const* kzero, int64_t n, float* s,
                                     KeyOperand& op, Spread& shared) {
  Spread spread = shared;  // a local copy, kept in registers (vector stores may alias the caller's)
  split_queries<R>(q, dk, op);
  op.scale = op.zero = nullptr;
  const uint8_t* last[16];  // a last, partial block's rows, padded with the zero row
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int keys = static_cast<int>(std::min<int64_t>(16, n - j0));
    spread.advance(R * keys);
    const uint8_t* const* k = krows + j0;
    if (keys < 16) {
      for (int j = 0; j < 16; ++j) last[j] = j < keys ? k[j] : zero_row<uint8_t>();
      k = last;
    }
    __m512i acc[2][4];
    __m512 qs[4], zterm[4];  // lane j: of key j's group
    for (int r = 0; r < 4; ++r) {
      acc[0][r] = acc[1][r] = _mm512_setzero_si512();
      qs[r] = zterm[r] = _mm512_setzero_ps();
    }
    // Each run of keys of one group is a pass over the block with only its lanes; with
    // tiles and groups aligned to 16 keys, a block is one run.
    for (int j = 0; j < keys;) {
      const int e = run_end(kscale + j0, kzero + j0, j, keys);
      if (kscale[j0 + j] != op.scale || kzero[j0 + j] != op.zero)
        prepare_keys<R>(q, dk, kscale[j0 + j], kzero[j0 + j], op);
      const auto lanes = static_cast<__mmask16>(((1u << e) - 1) & ~((1u << j) - 1));
      dot_keys<R>(k, dk, op, lanes, acc);
      for (int r = 0; r < R; ++r) {
        qs[r] = _mm512_mask_mov_ps(qs[r], lanes, _mm512_set1_ps(op.qs[r]));
        zterm[r] = _mm512_mask_mov_ps(zterm[r], lanes, _mm512_set1_ps(op.zterm[r]));
      }
      j = e;
    }
    for (int r = 0; r < R; ++r) {
      // Exact: acc[1] holds 16 x the high-nibble sums, and |dot| < 2^24.
      const __m512i dot = _mm512_add_epi32(acc[0][r], _mm512_srai_epi32(acc[1][r], 4));
      const __m512 v = _mm512_fmadd_ps(qs[r], _mm512_cvtepi32_ps(dot), zterm[r]);
      _mm512_mask_storeu_ps(s + r * kTileKeys + j0, first_lanes(keys), v);
    }
  }
  shared = spread;
}

// ---- pv ----

// The value group of each 16 channels of a row.
struct ValueLayout {
  int64_t groups = 0, slices = 0;  // slices of 4 groups
  int32_t group[kMaxHeadDim / 16];
};

ValueLayout value_layout(int64_t G, int64_t dv) {
  ValueLayout lay;
  lay.groups = (dv + G - 1) / G;
  lay.slices = (lay.groups + 3) / 4;
  for (int64_t v = 0, g = 0; v < dv / 16; ++v) {
    if (16 * v >= (g + 1) * G) ++g;  // G >= 16: at most one step per 16 channels
    lay.group[v] = static_cast<int32_t>(g);
  }
  return lay;
}

// The weights of a row block of R <= 4 rows: w[r][j][g] = p[r][j] * vscale_j[g] rounded to
// uint8 per (row, group) over the tile (the reference's round_int, w ~= ws * w8), 4 keys
// per 32-bit word: word(q)[16 s + 4 g + r], byte b = w8[r][4 q + b][4 s + g]. ws(s, r)[4 g]
// and zsum(s, r)[4 g] = sum_j p[r][j] * vzero_j[g] are those of group 4 s + g. Packed at
// the tile's size, as KeyOperand is.
class ValueWeights {
 public:
  ValueWeights(int64_t n, const ValueLayout& lay)
      : quads_((n + 3) / 4), slices_(lay.slices), ws_(quads_ * 16), zsum_(ws_ + slices_ * 64),
        word_(zsum_ + slices_ * 64) {}

  int64_t quads() const { return quads_; }
  // Scratch of value_weights: the scales of quad q of the slice at hand (see quad_params).
  float* scale(int64_t q) { return buf_ + q * 16; }
  float* ws(int64_t s, int r) { return buf_ + ws_ + (s * 4 + r) * 16; }
  float* zsum(int64_t s, int r) { return buf_ + zsum_ + (s * 4 + r) * 16; }
  uint32_t* word(int64_t q) { return reinterpret_cast<uint32_t*>(buf_ + word_) + q * slices_ * 16; }
  const float* ws(int64_t s, int r) const { return buf_ + ws_ + (s * 4 + r) * 16; }
  const float* zsum(int64_t s, int r) const { return buf_ + zsum_ + (s * 4 + r) * 16; }
  const uint32_t* word(int64_t q) const { return reinterpret_cast<const uint32_t*>(buf_ + word_) + q * slices_ * 16; }

 private:
  int64_t quads_, slices_;
  int64_t ws_, zsum_, word_;  // offsets in buf_, in 4-byte elements
  alignas(64) float buf_[kQuads * 16 + kMaxSlices * 128 + kQuads * kMaxSlices * 16];
};

// Lanes 4 g + b of a vector of a key quad's parameters come from lane 4 b + g (key-major).
alignas(32) constexpr int16_t kGroupMajor[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

// The parameters of slice s (groups 4 s .. 4 s + 3) of the keys of quad q as f32, lane 4 g + b
// holding key 4 q + b, group 4 s + g; 0 past n and past the groups. `whole`: the quad and
// the slice are complete, and plain 8-byte loads do (masked loads cost their masks).
ATTNKIT_AVX512_INLINE __m512 quad_params(const uint16_t* const* params, int64_t q, int64_t s, int64_t n,
                                         __mmask8 slice_words, bool whole) {
  __m256i keys;  // lane 4 b + g
  if (whole) {
    int64_t x[4];
    for (int b = 0; b < 4; ++b) std::memcpy(&x[b], params[4 * q + b] + 4 * s, 8);
    keys = _mm256_set_epi64x(x[3], x[2], x[1], x[0]);
  } else {
    __m128i x[4];
    for (int b = 0; b < 4; ++b) {
      const int64_t j = 4 * q + b;
      x[b] = _mm_maskz_loadu_epi16(j < n ? slice_words : 0, params[std::min(j, n - 1)] + 4 * s);
    }
    keys = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi64(x[0], x[1])),
                                   _mm_unpacklo_epi64(x[2], x[3]), 1);
  }
  const __m256i group_major = _mm256_load_si256(reinterpret_cast<const __m256i*>(kGroupMajor));
  return _mm512_cvtph_ps(_mm256_permutexvar_epi16(group_major, keys));
}

// p[4 q .. 4 q + 3] in every 128-bit lane (lane 4 g + b: p[4 q + b]), 0 past n.
ATTNKIT_AVX512_INLINE __m512 quad_p(const float* p, int64_t q, int64_t n) {
  const __m128 x = 4 * q + 4 <= n ? _mm_loadu_ps(p + 4 * q)
                                  : _mm_maskz_loadu_ps(static_cast<__mmask8>(first_lanes(n - 4 * q) & 0xF), p + 4 * q);
  return _mm512_broadcast_f32x4(x);
}

// The weights of rows r < R for n keys. Per slice of 4 groups, key quads run along the
// vectors (lane 4 g + b: key 4 q + b, group g of the slice), so that p is a 4-float broadcast
// and the maxima and zero sums per (row, group) need only an in-lane reduction at the end.
// The weights are computed twice, for the maxima and for the rounding, rather than stored
// (a 512-bit store takes two cycles on Zen 4, a multiply one). The next tile's rows are
// prefetched here, spread over the quads, rather than in the product's loop, whose general
// registers are all taken.
template <int R>
ATTNKIT_AVX512 __attribute__((noinline)) void value_weights(const float* p, const uint16_t* const* vscale,
                                                            const uint16_t* const* vzero, int64_t n,
                                                            const ValueLayout& lay, ValueWeights& w,
                                                            Spread& shared) {
  Spread spread = shared;  // a local copy, kept in registers (vector stores may alias the caller's)
  const int64_t quads = w.quads(), slices = lay.slices, groups = lay.groups;
  // Pointers taken up front: every vector store may alias w, whose fields GCC would reload.
  float* const scales = w.scale(0);   // quad q at q * 16
  uint32_t* const word = w.word(0);  // quad q, slice s at (q * slices + s) * 16
  __mmask16 row_bad[R];
  for (int r = 0; r < R; ++r) {
    __m512 nan = _mm512_setzero_ps();
    for (int64_t i = 0; i < kTileKeys; i += 16)
      nan = add_nan_of(nan, _mm512_maskz_loadu_ps(first_lanes(n - i), p + r * kTileKeys + i));
    row_bad[r] = nonfinite(nan) ? 0xFFFF : 0;
  }
  for (int64_t s = 0; s < slices; ++s) {
    const auto slice_words = static_cast<__mmask8>((1u << std::min<int64_t>(4, groups - 4 * s)) - 1);
    __m512 mx[R], zs[R];
    for (int r = 0; r < R; ++r) mx[r] = zs[r] = _mm512_setzero_ps();
    __m512 nan = _mm512_setzero_ps();
    for (int64_t q = 0; q < quads; ++q) {
      if (s == 0) spread.advance(R);
      const bool whole = slice_words == 0xF && 4 * q + 4 <= n;
      const __m512 scale = quad_params(vscale, q, s, n, slice_words, whole);
      const __m512 zero = quad_params(vzero, q, s, n, slice_words, whole);
      _mm512_store_ps(scales + q * 16, scale);
      nan = add_nan_of(nan, scale);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 pq = quad_p(p + r * kTileKeys, q, n);
        mx[r] = _mm512_max_ps(mx[r], _mm512_mul_ps(pq, scale));  // weights are >= 0 (decode_micro.hpp)
        zs[r] = _mm512_fmadd_ps(pq, zero, zs[r]);
      }
    }
    // A group is not finite when any of its 4 key lanes met a non-finite scale.
    const __mmask16 bad_scale = nonfinite(nan);
    __mmask16 group_bad = 0;
    for (int g = 0; g < 4; ++g)
      if ((bad_scale >> (4 * g)) & 0xF) group_bad |= static_cast<__mmask16>(0xF << (4 * g));
    __m512 inv[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      if (r >= R) {
        inv[r] = _mm512_setzero_ps();
        continue;
      }
      // Max and sum over the 4 key lanes of each group: every lane then holds its group's.
      __m512 m = _mm512_max_ps(mx[r], _mm512_permute_ps(mx[r], _MM_SHUFFLE(2, 3, 0, 1)));
      m = _mm512_max_ps(m, _mm512_permute_ps(m, _MM_SHUFFLE(1, 0, 3, 2)));
      __m512 z = _mm512_add_ps(zs[r], _mm512_permute_ps(zs[r], _MM_SHUFFLE(2, 3, 0, 1)));
      z = _mm512_add_ps(z, _mm512_permute_ps(z, _MM_SHUFFLE(1, 0, 3, 2)));
      _mm512_store_ps(w.ws(s, r), lane_scales(m, row_bad[r] | group_bad, 255, &inv[r]));
      _mm512_store_ps(w.zsum(s, r), z);
    }
    for (int64_t q = 0; q < quads; ++q) {
      const __m512 scale = _mm512_load_ps(scales + q * 16);
      __m512i x[4];  // rows past R: 0
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const __m512 wq = r < R ? _mm512_mul_ps(quad_p(p + r * kTileKeys, q, n), scale) : _mm512_setzero_ps();
        x[r] = _mm512_cvtps_epi32(_mm512_mul_ps(wq, inv[r]));
      }
      // Byte 16 g + 4 r + b of the packs: lane 4 g + b of row r (saturation keeps 0 .. 255,
      // which a weight >= 0 never leaves), i.e. word 4 g + r, byte b.
      _mm512_store_si512(word + (q * slices + s) * 16,
                         _mm512_packus_epi16(_mm512_packs_epi32(x[0], x[1]), _mm512_packs_epi32(x[2], x[3])));
    }
  }
  shared = spread;
}

// The 32-bit word at base + 4 (index + At), broadcast. Base plus index plus displacement
// spelled out, as at dpbusd_bcast: left to itself GCC 12 adds each row's offset to the
// index and spills the sums into vector registers.
template <int At>
ATTNKIT_AVX512_INLINE __m512i bcast_word(const uint32_t* base, int64_t index) {
  __m512i x;
  asm("vpbroadcastd %c[at](%[base], %[index], 4), %[x]"
      : [x] "=v"(x)
      : [at] "i"(4 * At), [base] "r"(base), [index] "r"(index), "m"(*base));
  return x;
}

// Lane 4 L + k of a pv sum holds channel 2 k + (L odd) + 8 (L >= 2) of its 16: this puts
// them back in order.
alignas(64) constexpr int32_t kUnscramble[16] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};

// acc[r][c0 .. c0 + 32 P) += the tile's P V for rows r < R. Per key quad and 64 channels:
// the 4 keys' 32 code bytes are interleaved by two unpack levels (in 256 bits); per 16
// channels one 128-bit shuffle then makes [t, t, t', t'] of the words of 4 bytes each, whose
// lanes 0, 2 keep the low nibbles and 1, 3 the high ones (a masked immediate shift):
// channels 2 k, 2 k + 1, 8 + 2 k, 9 + 2 k, of one group. (Broadcasting each key's 16 bytes
// to the four lanes and blending instead, with no 128-bit shuffle, measured slower: its
// unpacks are twice as wide.)
template <int R, int P>
ATTNKIT_AVX512 void pv_int4_block(const ValueWeights& w, const ValueLayout& lay, const uint8_t* const* v,
                                  int64_t c0, float* acc, int64_t dv) {
  constexpr int NV = 2 * P;  // 16-channel vectors per row
  // The weights of vector i, row r, quad q: word(q)[at[i] + r].
  int64_t at[NV];
  for (int i = 0; i < NV; ++i) {
    const int32_t g = lay.group[c0 / 16 + i];
    at[i] = g / 4 * 16 + g % 4 * 4;
  }
  __m512i sum[R][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int i = 0; i < NV; ++i) sum[r][i] = _mm512_setzero_si512();
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const int64_t off = c0 / 2, quads = w.quads();
  for (int64_t q = 0; q < quads; ++q) {
    const uint8_t* const* k = v + 4 * q;
    const uint32_t* wq = w.word(q);
    __m512i code[NV];
#pragma GCC unroll 8
    for (int u = 0; u < (P + 1) / 2; ++u) {
      const bool half = 2 * u + 1 == P;  // 32 channels: 16 bytes per key
      __m256i x[4];
#pragma GCC unroll 4
      for (int b = 0; b < 4; ++b) {
        const uint8_t* from = k[b] + off + 32 * u;
        x[b] = half ? _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(from)))
                    : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from));
      }
      // t[i], 128-bit lane L: bytes 16 L + 4 i .. 16 L + 4 i + 3 of the 4 keys, key b in byte b of each word.
      const __m256i ab_lo = _mm256_unpacklo_epi8(x[0], x[1]), ab_hi = _mm256_unpackhi_epi8(x[0], x[1]);
      const __m256i cd_lo = _mm256_unpacklo_epi8(x[2], x[3]), cd_hi = _mm256_unpackhi_epi8(x[2], x[3]);
      const __m512i t[4] = {_mm512_castsi256_si512(_mm256_unpacklo_epi16(ab_lo, cd_lo)),
                            _mm512_castsi256_si512(_mm256_unpackhi_epi16(ab_lo, cd_lo)),
                            _mm512_castsi256_si512(_mm256_unpacklo_epi16(ab_hi, cd_hi)),
                            _mm512_castsi256_si512(_mm256_unpackhi_epi16(ab_hi, cd_hi))};
#pragma GCC unroll 2
      for (int L = 0; L < 2; ++L)
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          if (half && L) continue;
          // Channels 64 u + 32 L + 16 h .. + 15: bytes 16 L + 8 h .. + 7, in t[2 h] and t[2 h + 1].
          // The shuffle's selector is an immediate at any optimisation level, hence two calls.
          const __m512i y = L ? _mm512_shuffle_i32x4(t[2 * h], t[2 * h + 1], 0x55)
                              : _mm512_shuffle_i32x4(t[2 * h], t[2 * h + 1], 0x00);
          code[4 * u + 2 * L + h] = _mm512_and_si512(_mm512_mask_srli_epi16(y, 0xFF00FF00, y, 4), low4);
        }
    }
    static_for<R>([&](auto r) ATTNKIT_AVX512_LAMBDA {
      static_for<NV>([&](auto i) ATTNKIT_AVX512_LAMBDA {
        sum[r][i] = dpbusd(sum[r][i], bcast_word<r>(wq, at[i]), code[i]);
      });
    });
  }
  const __m512i unscramble = _mm512_load_si512(kUnscramble);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int i = 0; i < NV; ++i) {
      const int32_t g = lay.group[c0 / 16 + i];
      const __m512 x = _mm512_cvtepi32_ps(_mm512_permutexvar_epi32(unscramble, sum[r][i]));  // exact: < 2^24
      const __m512 t = _mm512_fmadd_ps(_mm512_set1_ps(w.ws(g / 4, r)[g % 4 * 4]), x,
                                       _mm512_set1_ps(w.zsum(g / 4, r)[g % 4 * 4]));
      float* out = acc + r * dv + c0 + 16 * i;
      _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), t));
    }
}

// pv blocks keep at most 16 accumulators: pieces of 32 channels per block.
template <int R>
constexpr int kPvPieces = 8 / R;

// Calls body.template operator()<P>(c0) on blocks of P pieces of 32 channels from c0 on,
// then on the remainder with halved blocks.
template <int P, class Body>
void for_pieces(int64_t c0, int64_t dv, Body&& body) {
  for (; c0 + 32 * P <= dv; c0 += 32 * P) body.template operator()<P>(c0);
  if constexpr (P > 1) for_pieces<P / 2>(c0, dv, body);
}

}  // namespace

void scores_int4_avx512(const float* q, int64_t rows, int64_t dk, const uint8_t* const* krows,
                        const uint16_t* const* kscale, const uint16_t* const* kzero, int64_t n, float* s,
                        const Ahead& ahead) {
  if (n <= 0) return;
  KeyOperand op(dk);
  Spread spread(ahead, dk / 2, rows * n);
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    scores_int4_rows<R>(q + r0 * dk, dk, krows, kscale, kzero, n, s + r0 * kTileKeys, op, spread);
  });
}

void pv_int4_avx512(const float* p, int64_t rows, const uint8_t* const* vrows, const uint16_t* const* vscale,
                    const uint16_t* const* vzero, int64_t G, int64_t n, int64_t dv, float* acc,
                    const Ahead& ahead) {
  if (n <= 0) return;
  const ValueLayout lay = value_layout(G, dv);
  ValueWeights w(n, lay);
  const uint8_t* v[kTileKeys];  // padded to whole quads with the zero row
  for (int64_t j = 0; j < 4 * w.quads(); ++j) v[j] = j < n ? vrows[j] : zero_row<uint8_t>();
  Spread spread(ahead, dv / 2, rows * w.quads());
  for_row_blocks(rows, [&]<int R>(int64_t r0) {
    value_weights<R>(p + r0 * kTileKeys, vscale, vzero, n, lay, w, spread);
    for_pieces<kPvPieces<R>>(0, dv, [&]<int P>(int64_t c0) {
      pv_int4_block<R, P>(w, lay, v, c0, acc + r0 * dv, dv);
    });
  });
}

}  // namespace attnkit::decode

#endif
