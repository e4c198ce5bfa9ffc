// The one online-softmax step of every attention kernel, per Highway target. Each kernel's
// SIMD file (flash_simd.cpp, decode_simd.cpp) includes it inside its HWY_NAMESPACE, so the
// exponential, the softcap and the recurrence below exist once and are compiled for every
// target the file is. Scalar halves of the same step are in online_softmax.hpp.
//
// Per query row, for one tile of scores x_j (scaled and modified; -inf where the pattern
// hides the key):
//   m'    = max(m, max_j x_j)                  the running max
//   shift = m', or 0 while m' = -inf           a row that has seen nothing keeps p = 0
//   p_j   = e^(x_j - shift)                    in [0, 1]
//   alpha = e^(m - shift)                      rescales O and l accumulated so far
//   l'    = alpha l + sum_j p_j,  O' = alpha O + sum_j p_j V_j
// and at the end O / l, LSE = m + log l (online_softmax.hpp).
//
// x - shift is formed before the exponential, in f32. With scores near 1e9 and beyond
// (f16 inputs at +-65504, say) the difference is still exact where it matters (Sterbenz:
// x within a factor 2 of m), where folding log2(e) into one FMA, x log2e - m log2e, left
// an error of ulp(m log2e) / 2 in the exponent: hundreds at |m| = 3e9, so the row's
// largest p came out as 0 or 2^127 (NaN / -inf LSE).
// Not for: the layouts (kernels loop over rows or keys as suits them).

// Include guard per target, Highway's convention for -inl headers.
#if defined(ATTNKIT_ONLINE_SOFTMAX_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATTNKIT_ONLINE_SOFTMAX_INL_H_
#undef ATTNKIT_ONLINE_SOFTMAX_INL_H_
#else
#define ATTNKIT_ONLINE_SOFTMAX_INL_H_
#endif

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace HWY_NAMESPACE {
namespace softmax {
namespace hn = hwy::HWY_NAMESPACE;

// e^x for any f32 x: 0 below -87.3 (under the smallest normal), e^88 (finite, "huge")
// above 88, NaN kept NaN (a NaN score poisons its row, as in a plain softmax). x = n ln 2
// + r with n an integer and |r| <= ln 2 / 2 (ln 2 in two parts, so that r is exact enough
// at x near -87), e^r by its Taylor series to degree 7, 2^n put in the exponent bits:
// relative error about 2e-7.
// The upper clamp is a select, not Min, which would turn NaN into the bound on x86; a NaN
// then runs through as NaN (r and p are NaN). There is no lower clamp: below -87.3 the
// arithmetic may give anything, and the final select makes it 0 (-inf included).
// n comes from one FMA against 1.5 * 2^23 + 127: the sum is rounded to an integer whose low
// bits are n + 127 (in [1, 254] for x in [-87.3, 88]), shifted straight into the exponent
// field, and subtracting the constant again gives n. Round, ConvertTo with its overflow
// fix-up and the bias add took eight instructions for that; with the lower clamp and the
// NaN select also gone, flash's softmax loop (AVX-512, g++ 12) runs 28 instructions a
// vector of scores instead of 36 (33 before the exponential was shared), and callgrind
// (AVX2) counts its OnlineSoftmax at 37.5 M Ir against 46.4 M on causal f32 2048. n is now
// rounded once (x log2 e exact inside the FMA) instead of twice, so it can differ by one
// where x log2 e lies within an ulp of a half-integer; e^r covers that |r| as well.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V Exp(D d, V x) {
  const hn::RebindToUnsigned<D> du;
  const V hi = hn::Set(d, 88.0f), magic = hn::Set(d, 12583039.0f);  // 1.5 * 2^23 + 127
  const auto under = hn::Lt(x, hn::Set(d, -87.3f));
  const V xc = hn::IfThenElse(hn::Gt(x, hi), hi, x);
  const V k = hn::MulAdd(xc, hn::Set(d, 1.44269504f), magic);  // n + 127 in the low bits
  const V n = hn::Sub(k, magic);
  V r = hn::MulAdd(n, hn::Set(d, -0.693359375f), xc);
  r = hn::MulAdd(n, hn::Set(d, 2.12194440e-4f), r);
  V p = hn::Set(d, 1.98412698e-4f);
  p = hn::MulAdd(p, r, hn::Set(d, 1.38888889e-3f));
  p = hn::MulAdd(p, r, hn::Set(d, 8.33333333e-3f));
  p = hn::MulAdd(p, r, hn::Set(d, 4.16666667e-2f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.66666667e-1f));
  p = hn::MulAdd(p, r, hn::Set(d, 0.5f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  const V two_n = hn::BitCast(d, hn::ShiftLeft<23>(hn::BitCast(du, k)));
  return hn::IfThenZeroElse(under, hn::Mul(p, two_n));
}

// c tanh(s / c) = c (1 - 2 / (e^(2 s / c) + 1)): saturates to +-c cleanly (e^(2s/c) is 0 or
// huge, never inf), keeps NaN. two_over_c = 2 / c.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V Softcap(D d, V s, V c, V two_over_c) {
  const V one = hn::Set(d, 1.0f);
  const V e = Exp(d, hn::Mul(s, two_over_c));
  return hn::Mul(c, hn::Sub(one, hn::Div(hn::Set(d, 2.0f), hn::Add(e, one))));
}

// The shift of a row whose new running max is m_new: m_new, or 0 while it is -inf (then
// every p = e^(-inf - 0) = 0 rather than e^(-inf + inf) = NaN).
template <class D, class V = hn::Vec<D>>
HWY_INLINE V Shift(D d, V m_new) {
  return hn::IfThenZeroElse(hn::Eq(m_new, hn::Set(d, -HUGE_VALF)), m_new);
}

// p = e^(x - shift).
template <class D, class V = hn::Vec<D>>
HWY_INLINE V Prob(D d, V x, V shift) {
  return Exp(d, hn::Sub(x, shift));
}

// alpha = e^(m_old - shift): 0 for a row that had seen nothing (m_old = -inf).
template <class D, class V = hn::Vec<D>>
HWY_INLINE V Alpha(D d, V m_old, V shift) {
  return Exp(d, hn::Sub(m_old, shift));
}

}  // namespace softmax
}  // namespace HWY_NAMESPACE
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#endif  // ATTNKIT_ONLINE_SOFTMAX_INL_H_
