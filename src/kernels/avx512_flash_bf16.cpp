// AVX-512 BF16 micro-kernels of the flash forward kernel (vdpbf16ps). Debian's Highway
// 1.0.3 predates the BF16 targets and never emits this instruction, so these two kernels
// use intrinsics behind a run-time CPU check; everything else stays in flash_simd.cpp.
// Layouts and blocking mirror the f32 kernels: lanes run along 16 query rows, 4 x 4
// accumulators per block.
#include <immintrin.h>

#include <cstring>

#include <hwy/targets.h>

#include "attnkit/shape.hpp"
#include "kernels/flash.hpp"

namespace attnkit::flash {

#if defined(__x86_64__)
namespace {

#define ATTNKIT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

ATTNKIT_BF16_TARGET inline __m512 dot2(__m512 acc, __m512i pairs, __m512i bcast) {
  return _mm512_dpbf16_ps(acc, (__m512bh)bcast, (__m512bh)pairs);
}

template <int CV>
ATTNKIT_BF16_TARGET void scores_block(const uint16_t* qt2, int64_t rp, int64_t pairs, const uint16_t* const* krow,
                                      const uint32_t* tail, int64_t r0, float scale, float* st, int64_t j0) {
  __m512 acc[4][CV];
  for (int jj = 0; jj < 4; ++jj)
    for (int c = 0; c < CV; ++c) acc[jj][c] = _mm512_setzero_ps();
  for (int64_t c2 = 0; c2 < pairs; ++c2) {
    __m512i q[CV];
    for (int c = 0; c < CV; ++c) q[c] = _mm512_load_si512(qt2 + (c2 * rp + r0 + c * 16) * 2);
    for (int jj = 0; jj < 4; ++jj) {
      uint32_t kp;
      if (tail && c2 == pairs - 1) {
        kp = tail[jj];
      } else {
        std::memcpy(&kp, krow[jj] + 2 * c2, sizeof kp);  // rows are only 2-byte aligned
      }
      const __m512i kb = _mm512_set1_epi32(static_cast<int>(kp));
      for (int c = 0; c < CV; ++c) acc[jj][c] = dot2(acc[jj][c], q[c], kb);
    }
  }
  const __m512 sv = _mm512_set1_ps(scale);
  for (int jj = 0; jj < 4; ++jj)
    for (int c = 0; c < CV; ++c) _mm512_store_ps(st + (j0 + jj) * rp + r0 + c * 16, _mm512_mul_ps(acc[jj][c], sv));
}

ATTNKIT_BF16_TARGET void scores(const uint16_t* qt2, int64_t rp, int64_t dqk, const uint16_t* k, int64_t k_stride,
                                int64_t width, float scale, float* st) {
  static const uint16_t zeros[1024] = {};
  static_assert(kMaxHeadDim <= 1024, "zeros must cover a key row");
  const int64_t pairs = (dqk + 1) / 2;
  for (int64_t j0 = 0; j0 < width; j0 += 4) {
    const uint16_t* krow[4];
    uint32_t tail[4] = {0, 0, 0, 0};
    for (int jj = 0; jj < 4; ++jj) {
      const uint16_t* row = j0 + jj < width ? k + (j0 + jj) * k_stride : zeros;
      krow[jj] = row;
      tail[jj] = row[dqk - 1];  // odd Dqk: the last pair is (K[dqk-1], 0), never read past the row
    }
    const uint32_t* t = dqk % 2 ? tail : nullptr;
    int64_t r0 = 0;
    for (; r0 + 64 <= rp; r0 += 64) scores_block<4>(qt2, rp, pairs, krow, t, r0, scale, st, j0);
    for (; r0 < rp; r0 += 16) scores_block<1>(qt2, rp, pairs, krow, t, r0, scale, st, j0);
  }
}

// Interleaves two rows of 16 f32 (keys j, j+1 for 16 query rows) into 16 bf16 pairs.
ATTNKIT_BF16_TARGET inline __m512i pair_rows(__m512 a, __m512 b) {
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                       5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

template <int RC, int CV>
ATTNKIT_BF16_TARGET void accumulate_block(float* ot, int64_t rp, const float* alpha, const uint16_t* p2,
                                          const uint16_t* v2, int64_t dv, int64_t key_pairs, int64_t c0, int64_t r0) {
  __m512 acc[RC][CV];
  for (int c = 0; c < CV; ++c) {
    const __m512 a = _mm512_load_ps(alpha + r0 + c * 16);
    for (int cc = 0; cc < RC; ++cc) acc[cc][c] = _mm512_mul_ps(a, _mm512_load_ps(ot + (c0 + cc) * rp + r0 + c * 16));
  }
  for (int64_t j2 = 0; j2 < key_pairs; ++j2) {
    __m512i p[CV];
    for (int c = 0; c < CV; ++c) p[c] = _mm512_load_si512(p2 + (j2 * rp + r0 + c * 16) * 2);
    for (int cc = 0; cc < RC; ++cc) {
      uint32_t vp;
      std::memcpy(&vp, v2 + (j2 * dv + c0 + cc) * 2, sizeof vp);
      const __m512i vb = _mm512_set1_epi32(static_cast<int>(vp));
      for (int c = 0; c < CV; ++c) acc[cc][c] = dot2(acc[cc][c], p[c], vb);
    }
  }
  for (int cc = 0; cc < RC; ++cc)
    for (int c = 0; c < CV; ++c) _mm512_store_ps(ot + (c0 + cc) * rp + r0 + c * 16, acc[cc][c]);
}

template <int RC>
ATTNKIT_BF16_TARGET void accumulate_channels(float* ot, int64_t rp, const float* alpha, const uint16_t* p2,
                                             const uint16_t* v2, int64_t dv, int64_t key_pairs, int64_t c0) {
  int64_t r0 = 0;
  for (; r0 + 64 <= rp; r0 += 64) accumulate_block<RC, 4>(ot, rp, alpha, p2, v2, dv, key_pairs, c0, r0);
  for (; r0 < rp; r0 += 16) accumulate_block<RC, 1>(ot, rp, alpha, p2, v2, dv, key_pairs, c0, r0);
}

ATTNKIT_BF16_TARGET void accumulate(float* ot, int64_t rp, int64_t dv, const float* alpha, const float* pt,
                                    const uint16_t* v, int64_t v_stride, int64_t width, uint16_t* scratch) {
  const int64_t key_pairs = (width + 1) / 2;
  uint16_t* p2 = scratch;                  // [key_pairs][rp][2]
  uint16_t* v2 = scratch + kBlockKeys * rp;  // [key_pairs][dv][2]
  for (int64_t j2 = 0; j2 < key_pairs; ++j2) {
    const bool odd = 2 * j2 + 1 >= width;  // the last key of an odd tile pairs with zero
    for (int64_t r = 0; r < rp; r += 16) {
      const __m512 a = _mm512_load_ps(pt + 2 * j2 * rp + r);
      const __m512 b = odd ? _mm512_setzero_ps() : _mm512_load_ps(pt + (2 * j2 + 1) * rp + r);
      _mm512_store_si512(p2 + (j2 * rp + r) * 2, pair_rows(a, b));
    }
    const uint16_t* va = v + 2 * j2 * v_stride;
    const uint16_t* vb = odd ? nullptr : v + (2 * j2 + 1) * v_stride;
    uint16_t* dst = v2 + j2 * dv * 2;
    for (int64_t c = 0; c < dv; ++c) {
      dst[2 * c] = va[c];
      dst[2 * c + 1] = vb ? vb[c] : 0;
    }
  }
  int64_t c0 = 0;
  for (; c0 + 4 <= dv; c0 += 4) accumulate_channels<4>(ot, rp, alpha, p2, v2, dv, key_pairs, c0);
  for (; c0 < dv; ++c0) accumulate_channels<1>(ot, rp, alpha, p2, v2, dv, key_pairs, c0);
}

}  // namespace

Bf16Ops bf16_ops() {
  Bf16Ops ops;
  // AVX3 must also be the dispatched target, so tests that disable AVX-512 exercise the
  // portable path here too.
  const int64_t targets = hwy::SupportedTargets();
  ops.available = __builtin_cpu_supports("avx512bf16") && (targets & HWY_AVX3) != 0;
  if (ops.available) {
    ops.scores = scores;
    ops.accumulate = accumulate;
  }
  return ops;
}

#else

Bf16Ops bf16_ops() { return {}; }

#endif

}  // namespace attnkit::flash
