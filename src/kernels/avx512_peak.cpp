// The AVX-512 BF16 pieces of hwinfo: the runtime CPU check and the vdpbf16ps throughput loop.
// This is the one file compiled for avx512bf16 (by target attribute, not by a global -m
// flag, so the rest of the library still runs on any x86-64). Not for: kernels.
#include "attnkit/hwinfo.hpp"
#include "kernels/avx512_peak.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ATTNKIT_X86 1
#else
#define ATTNKIT_X86 0
#endif

namespace attnkit {

bool cpu_has_avx512bf16() {
#if ATTNKIT_X86
  // libgcc's check includes the OS's XCR0 state for zmm registers, not just the CPUID bit.
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

namespace detail {

#if ATTNKIT_X86
// 16 chains, because vdpbf16ps has a longer latency than a plain FMA: on this Zen 4 one
// chain reaches 1/6 of the peak (6 cycles latency, one zmm instruction per cycle) and 8
// chains reach it. A core issuing 2 per cycle would need 12; 16 accumulators plus the 2
// operands still fit in the 32 zmm registers, so the loop never spills.
__attribute__((target("avx512f,avx512bf16"))) float bf16_dot_chains(int64_t iters, float a, float b) {
  const __m512bh va = _mm512_cvtne2ps_pbh(_mm512_set1_ps(a), _mm512_set1_ps(a));
  const __m512bh vb = _mm512_cvtne2ps_pbh(_mm512_set1_ps(b), _mm512_set1_ps(b));
  // Distinct starting values keep the compiler from merging chains. Each step adds 2ab per
  // lane; with |ab| small the sums stay far from overflow and vdpbf16ps flushes denormals
  // itself, so no slow paths are hit.
  __m512 c0 = _mm512_set1_ps(0.0f), c1 = _mm512_set1_ps(1.0f), c2 = _mm512_set1_ps(2.0f), c3 = _mm512_set1_ps(3.0f);
  __m512 c4 = _mm512_set1_ps(4.0f), c5 = _mm512_set1_ps(5.0f), c6 = _mm512_set1_ps(6.0f), c7 = _mm512_set1_ps(7.0f);
  __m512 c8 = _mm512_set1_ps(8.0f), c9 = _mm512_set1_ps(9.0f), c10 = _mm512_set1_ps(10.0f), c11 = _mm512_set1_ps(11.0f);
  __m512 c12 = _mm512_set1_ps(12.0f), c13 = _mm512_set1_ps(13.0f), c14 = _mm512_set1_ps(14.0f), c15 = _mm512_set1_ps(15.0f);
  static_assert(kBf16Chains == 16, "the loop body below has 16 chains");
  for (int64_t i = 0; i < iters; ++i) {
    c0 = _mm512_dpbf16_ps(c0, va, vb), c1 = _mm512_dpbf16_ps(c1, va, vb);
    c2 = _mm512_dpbf16_ps(c2, va, vb), c3 = _mm512_dpbf16_ps(c3, va, vb);
    c4 = _mm512_dpbf16_ps(c4, va, vb), c5 = _mm512_dpbf16_ps(c5, va, vb);
    c6 = _mm512_dpbf16_ps(c6, va, vb), c7 = _mm512_dpbf16_ps(c7, va, vb);
    c8 = _mm512_dpbf16_ps(c8, va, vb), c9 = _mm512_dpbf16_ps(c9, va, vb);
    c10 = _mm512_dpbf16_ps(c10, va, vb), c11 = _mm512_dpbf16_ps(c11, va, vb);
    c12 = _mm512_dpbf16_ps(c12, va, vb), c13 = _mm512_dpbf16_ps(c13, va, vb);
    c14 = _mm512_dpbf16_ps(c14, va, vb), c15 = _mm512_dpbf16_ps(c15, va, vb);
  }
  const __m512 s = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                    _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7))),
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)),
                    _mm512_add_ps(_mm512_add_ps(c12, c13), _mm512_add_ps(c14, c15))));
  // Stored and summed by hand: GCC 12's _mm512_reduce_add_ps trips -Wuninitialized.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float total = 0;
  for (float x : lanes) total += x;
  return total;
}
#else
float bf16_dot_chains(int64_t, float, float) { return 0.0f; }
#endif

}  // namespace detail
}  // namespace attnkit
