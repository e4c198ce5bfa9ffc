// Internal to avx512_decode.cpp (scores), avx512_decode_pv.cpp (pv) and
// avx512_decode_int4.cpp (int4): the target attribute, shared constants and small
// helpers of the AVX-512 tile micro-kernels. x86-64 only.
#pragma once

#if !defined(__x86_64__)
#error "avx512_decode.hpp is for x86-64 builds only"
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>

// GCC 12's AVX-512 headers initialise their "undefined" vectors with themselves, which
// -Wuninitialized reports at every inlined shuffle (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "attnkit/shape.hpp"
#include "kernels/decode_micro.hpp"

// Compiled for AVX-512 whatever the build's baseline; run only after avx512_available().
#define ATTNKIT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16")))
// Helpers whose vectors must stay in their caller's registers.
#define ATTNKIT_AVX512_INLINE ATTNKIT_AVX512 __attribute__((always_inline)) inline

namespace attnkit::decode::avx512 {

// Below this a vector's max counts as zero (as in decode_micro_ref.cpp's round_int).
inline constexpr float kInt16TinyMax = 0x1p-100f;

// The row of a padding key: past n in a scores block, or the partner of an odd last key.
alignas(64) inline constexpr uint8_t kZeroRow[2 * kMaxHeadDim] = {};
template <class T>
const T* zero_row() {
  return reinterpret_cast<const T*>(kZeroRow);
}

// Lane maps of a scores block: lane L holds row L / KB, key L % KB.
template <int KB>
constexpr std::array<int32_t, 16> lane_map(bool row) {
  std::array<int32_t, 16> a{};
  for (int L = 0; L < 16; ++L) a[L] = row ? L / KB : L % KB;
  return a;
}
template <int KB>
inline constexpr std::array<int32_t, 16> kLaneRow = lane_map<KB>(true);
template <int KB>
inline constexpr std::array<int32_t, 16> kLaneKey = lane_map<KB>(false);

inline __mmask16 first_lanes(int64_t count) {
  return static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << static_cast<unsigned>(std::max<int64_t>(count, 0))) - 1);
}

// Calls body.template operator()<R>(r0) on blocks of R = 4 rows, then on the remainder.
template <class Body>
void for_row_blocks(int64_t rows, Body&& body) {
  int64_t r0 = 0;
  for (; r0 + 4 <= rows; r0 += 4) body.template operator()<4>(r0);
  switch (rows - r0) {
    case 3:
      body.template operator()<3>(r0);
      break;
    case 2:
      body.template operator()<2>(r0);
      break;
    case 1:
      body.template operator()<1>(r0);
      break;
    default:
      break;
  }
}

// The integer rounding of decode_micro_ref.cpp (round_int: int16, and with limit 127 / 255
// int8 / uint8) once m = max |x| is known: returns the scale and sets *inv, or
// returns 0 / NaN when the integers must be all zero.
inline float int16_scale(float m, bool finite, int32_t limit, float* inv) {
  if (!finite || !(m <= std::numeric_limits<float>::max())) return std::numeric_limits<float>::quiet_NaN();
  if (m < kInt16TinyMax) return 0;
  const float lim = static_cast<float>(limit);
  *inv = lim / m;
  return m / lim;
}

ATTNKIT_AVX512_INLINE __m512 abs_ps(__m512 x) {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF)));
}

ATTNKIT_AVX512_INLINE bool all_finite(__m512 x) {
  return _mm512_cmp_ps_mask(abs_ps(x), _mm512_set1_ps(std::numeric_limits<float>::max()), _CMP_NLE_UQ) == 0;
}

// acc + the dot products of the int16 pairs of a and b, in int32 lanes. Inline assembly
// rather than _mm512_dpwssd_epi32: with the intrinsic, GCC 12 copies each accumulator to
// another register and back around every vpdpwssd in loops that carry many of them (twice
// the instructions). Integer sums live in __m512 variables, as the reduction tree takes.
ATTNKIT_AVX512_INLINE __m512 dpwssd(__m512 acc, __m512i a, __m512i b) {
  asm("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// Prefetches into L2 the next tile's rows (`bytes` each, every cache line) in proportion to
// the work of this tile done so far: a kernel with `work` units in all calls advance(u)
// after each step of u units, and the requests go out at the even rate of its compute,
// over every pass it makes, rather than in a burst in the first one. A burst can only
// overfill the core's miss queue, and it leaves the other passes with nothing in flight:
// spreading P V's prefetches over both of its row passes made bf16 decode 1-6 % faster on
// 2 threads and 10 % on 1, and int8 11 %. Rows only a few cache lines long, scattered by
// paging, give the hardware prefetcher little to go on, and a whole tile ahead (32 KiB
// per stream at d = 128, bf16) covers DRAM latency.
class Spread {
 public:
  Spread(const Ahead& ahead, int64_t bytes, int64_t work) : ahead_(ahead), bytes_(bytes), share_(ahead.n, work) {}

  ATTNKIT_AVX512_INLINE void advance(int64_t units) {
    if (!ahead_.rows) return;
    for (int64_t j = share_.next(), to = share_.advance(units); j < to; ++j) {
      const uintptr_t first = reinterpret_cast<uintptr_t>(ahead_.rows[j]);
      for (uintptr_t line = first & ~uintptr_t{63}; line < first + bytes_; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T1);
    }
  }

 private:
  Ahead ahead_;
  int64_t bytes_;
  EvenShare share_;
};

}  // namespace attnkit::decode::avx512
