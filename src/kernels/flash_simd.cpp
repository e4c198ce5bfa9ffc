// The SIMD tile operations of the flash forward kernel, written once with Highway and
// compiled for every x86 target (AVX-512, AVX2, SSE4, SSSE3, and the emulated baseline);
// the best one the CPU supports is chosen at run time. See flash.hpp for the layouts.
// Not for: control flow across tiles (flash_fwd.cpp) or anything that touches patterns.
//
// Register blocking. Lanes run along packed query rows. scores() keeps RK x CV
// accumulators: RK key rows broadcast from memory times CV vectors of Qt; accumulate()
// keeps RC x CV: RC output channels broadcast from V times CV vectors of P. Zen 5 has two
// 512-bit FMA pipes with 4-cycle latency, so at least 8 independent chains are needed;
// 4 x 4 = 16 chains leaves room for the loads and keeps 16 of 32 zmm registers for data.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/flash_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include "kernels/online_softmax-inl.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "attnkit/shape.hpp"
#include "attnkit/tensor.hpp"
#include "kernels/flash.hpp"

HWY_BEFORE_NAMESPACE();
namespace attnkit::flash {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
namespace sm = ::attnkit::HWY_NAMESPACE::softmax;

// A row of zeros that stands in for key rows past the end of a tile.
alignas(64) static const float kZeroRow[1024] = {};
static_assert(kMaxHeadDim <= 1024, "kZeroRow must cover a key row");
static_assert(kBlockKeys % 4 == 0, "scores() and accumulate() block keys by 4");

int64_t Lanes() { return static_cast<int64_t>(hn::Lanes(DF())); }
const char* Target() { return hwy::TargetName(HWY_TARGET); }

// St rows j0 .. j0+RK-1, query-row vectors r0 .. r0+CV-1.
template <int RK, int CV>
HWY_INLINE void ScoresBlock(DF d, const float* HWY_RESTRICT qt, int64_t rp, int64_t dqk, const float* const* krow,
                            int64_t r0, float* HWY_RESTRICT st, int64_t j0) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF acc[RK][CV];
  for (int jj = 0; jj < RK; ++jj)
    for (int c = 0; c < CV; ++c) acc[jj][c] = hn::Zero(d);
  for (int64_t k = 0; k < dqk; ++k) {
    VF q[CV];
    for (int c = 0; c < CV; ++c) q[c] = hn::Load(d, qt + k * rp + r0 + c * N);
    for (int jj = 0; jj < RK; ++jj) {
      const VF kb = hn::Set(d, krow[jj][k]);
      for (int c = 0; c < CV; ++c) acc[jj][c] = hn::MulAdd(kb, q[c], acc[jj][c]);
    }
  }
  for (int jj = 0; jj < RK; ++jj)
    for (int c = 0; c < CV; ++c) hn::Store(acc[jj][c], d, st + (j0 + jj) * rp + r0 + c * N);
}

void Scores(const float* qt, int64_t rp, int64_t dqk, const KvRows& kv, float* st) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  constexpr int RK = 4;
  for (int64_t j0 = 0; j0 < kv.width; j0 += RK) {
    const float* krow[RK];
    for (int jj = 0; jj < RK; ++jj) krow[jj] = j0 + jj < kv.width ? kv.k + (j0 + jj) * kv.k_stride : kZeroRow;
    int64_t r0 = 0;
    for (; r0 + 4 * N <= rp; r0 += 4 * N) ScoresBlock<RK, 4>(d, qt, rp, dqk, krow, r0, st, j0);
    for (; r0 + 2 * N <= rp; r0 += 2 * N) ScoresBlock<RK, 2>(d, qt, rp, dqk, krow, r0, st, j0);
    for (; r0 < rp; r0 += N) ScoresBlock<RK, 1>(d, qt, rp, dqk, krow, r0, st, j0);
  }
}

void ApplyMods(float* st, int64_t rp, int64_t width, const ScoreMods& mods) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const VF cap = hn::Set(d, mods.softcap), two_over_c = hn::Set(d, 2.0f / (mods.softcap > 0 ? mods.softcap : 1.0f));
  for (int64_t j = 0; j < width; ++j) {
    const VF jv = hn::Set(d, static_cast<float>(j));
    for (int64_t r = 0; r < rp; r += N) {
      VF s = hn::Load(d, st + j * rp + r);
      if (mods.softcap > 0) s = sm::Softcap(d, s, cap, two_over_c);
      if (mods.alibi) {
        const VF dist = hn::Abs(hn::Sub(hn::Load(d, mods.pos + r), jv));
        s = hn::NegMulAdd(hn::Load(d, mods.alibi + r), dist, s);
      }
      hn::Store(s, d, st + j * rp + r);
    }
  }
}

void ApplyMask(float* st, int64_t rp, int64_t width, const TileMask& mask) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const VF ninf = hn::Set(d, -HUGE_VALF);
  for (int64_t j = 0; j < width; ++j) {
    const VF jv = hn::Set(d, static_cast<float>(j));
    for (int64_t r = 0; r < rp; r += N) {
      auto allowed = hn::FirstN(d, 0);
      for (int64_t t = 0; t < mask.levels; ++t)
        allowed = hn::Or(allowed, hn::And(jv >= hn::Load(d, mask.lo + t * rp + r), jv < hn::Load(d, mask.hi + t * rp + r)));
      hn::Store(hn::IfThenElse(allowed, hn::Load(d, st + j * rp + r), ninf), d, st + j * rp + r);
    }
  }
}

// The online-softmax step (online_softmax-inl.h) with lanes along query rows: the max and
// the sum run element-wise down the tile's key rows.
void OnlineSoftmax(float* st, int64_t rp, int64_t width, float* m, float* l, float* alpha) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = 0; r < rp; r += N) {
    const VF m_old = hn::Load(d, m + r);
    VF m_new = m_old;
    for (int64_t j = 0; j < width; ++j) m_new = hn::Max(m_new, hn::Load(d, st + j * rp + r));
    const VF shift = sm::Shift(d, m_new);
    VF sum = hn::Zero(d);
    for (int64_t j = 0; j < width; ++j) {
      const VF p = sm::Prob(d, hn::Load(d, st + j * rp + r), shift);
      hn::Store(p, d, st + j * rp + r);
      sum = hn::Add(sum, p);
    }
    const VF a = sm::Alpha(d, m_old, shift);
    hn::Store(a, d, alpha + r);
    hn::Store(hn::MulAdd(a, hn::Load(d, l + r), sum), d, l + r);
    hn::Store(m_new, d, m + r);
  }
}

// Ot rows c0 .. c0+RC-1 (output channels), query-row vectors r0 .. r0+CV-1.
template <int RC, int CV>
HWY_INLINE void AccumulateBlock(DF d, float* HWY_RESTRICT ot, int64_t rp, const float* HWY_RESTRICT alpha,
                                const float* HWY_RESTRICT pt, const KvRows& kv, int64_t c0, int64_t r0) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF acc[RC][CV];
  for (int c = 0; c < CV; ++c) {
    const VF a = hn::Load(d, alpha + r0 + c * N);
    for (int cc = 0; cc < RC; ++cc) acc[cc][c] = hn::Mul(a, hn::Load(d, ot + (c0 + cc) * rp + r0 + c * N));
  }
  for (int64_t j = 0; j < kv.width; ++j) {
    VF p[CV];
    for (int c = 0; c < CV; ++c) p[c] = hn::Load(d, pt + j * rp + r0 + c * N);
    const float* vrow = kv.v + j * kv.v_stride + c0;
    for (int cc = 0; cc < RC; ++cc) {
      const VF vb = hn::Set(d, vrow[cc]);
      for (int c = 0; c < CV; ++c) acc[cc][c] = hn::MulAdd(vb, p[c], acc[cc][c]);
    }
  }
  for (int cc = 0; cc < RC; ++cc)
    for (int c = 0; c < CV; ++c) hn::Store(acc[cc][c], d, ot + (c0 + cc) * rp + r0 + c * N);
}

template <int RC>
HWY_INLINE void AccumulateChannels(DF d, float* ot, int64_t rp, const float* alpha, const float* pt, const KvRows& kv,
                                   int64_t c0) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t r0 = 0;
  for (; r0 + 4 * N <= rp; r0 += 4 * N) AccumulateBlock<RC, 4>(d, ot, rp, alpha, pt, kv, c0, r0);
  for (; r0 + 2 * N <= rp; r0 += 2 * N) AccumulateBlock<RC, 2>(d, ot, rp, alpha, pt, kv, c0, r0);
  for (; r0 < rp; r0 += N) AccumulateBlock<RC, 1>(d, ot, rp, alpha, pt, kv, c0, r0);
}

void Accumulate(float* ot, int64_t rp, int64_t dv, const float* alpha, const float* pt, const KvRows& kv) {
  const DF d;
  constexpr int RC = 4;
  int64_t c0 = 0;
  for (; c0 + RC <= dv; c0 += RC) AccumulateChannels<RC>(d, ot, rp, alpha, pt, kv, c0);
  for (; c0 < dv; ++c0) AccumulateChannels<1>(d, ot, rp, alpha, pt, kv, c0);
}

// Whether any element of `rows` rows of `dim` values (row i at x + i * stride) has an
// all-ones exponent, i.e. is inf or NaN: with the sign cleared, those are exactly the bit
// patterns >= `limit` (0x7F800000 for f32; 0x7F80 bf16, 0x7C00 f16), so a running unsigned
// max, one AND and one MAX a vector, decides a whole V tile; the reduction waits to the end.
template <class T>
HWY_INLINE bool AnyAtLeast(const T* x, int64_t stride, int64_t rows, int64_t dim, T limit) {
  const hn::ScalableTag<T> du;
  using VU = hn::Vec<decltype(du)>;
  const int64_t N = static_cast<int64_t>(hn::Lanes(du));
  const T abs_mask = std::numeric_limits<T>::max() >> 1;  // every bit but the sign
  const VU mask = hn::Set(du, abs_mask);
  VU acc = hn::Zero(du);
  T tail = 0;
  for (int64_t j = 0; j < rows; ++j) {
    const T* row = x + j * stride;
    int64_t c = 0;
    for (; c + N <= dim; c += N) acc = hn::Max(acc, hn::And(hn::LoadU(du, row + c), mask));
    for (; c < dim; ++c) {
      T bits;  // memcpy: f32 rows are read through uint32_t
      std::memcpy(&bits, row + c, sizeof bits);
      tail = std::max<T>(tail, static_cast<T>(bits & abs_mask));
    }
  }
  HWY_ALIGN T lanes[HWY_MAX_BYTES / sizeof(T)];
  hn::Store(acc, du, lanes);
  for (int64_t i = 0; i < N; ++i) tail = std::max(tail, lanes[i]);
  return tail >= limit;
}

bool AnyNonFiniteF32(const float* x, int64_t stride, int64_t rows, int64_t dim) {
  return AnyAtLeast(reinterpret_cast<const uint32_t*>(x), stride, rows, dim, uint32_t{0x7F800000u});
}

bool AnyNonFinite16(const uint16_t* x, int64_t stride, int64_t rows, int64_t dim, uint16_t exponent) {
  return AnyAtLeast(x, stride, rows, dim, exponent);
}

void Bf16ToF32(const uint16_t* src, float* dst, int64_t n) {
  const DF d;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint16_t, DF> d16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, src + i)))), d, dst + i);
  for (; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &u, sizeof u);
  }
}

// IEEE half to float by bit manipulation, so every target (the emulated baseline too)
// shares one exact path: normal and subnormal halves are rescaled by 2^112 after
// placing their bits in a float's exponent/mantissa; inf and NaN get the all-ones exponent.
void F16ToF32(const uint16_t* src, float* dst, int64_t n) {
  const DF d;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint16_t, DF> d16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto h = hn::PromoteTo(du, hn::LoadU(d16, src + i));
    const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)));
    const auto mag = hn::ShiftLeft<13>(hn::And(h, hn::Set(du, 0x7FFFu)));
    const VF scaled = hn::Mul(hn::BitCast(d, mag), hn::Set(d, 5.192296858534828e+33f));  // 2^112
    const auto special = hn::BitCast(d, hn::Or(mag, hn::Set(du, 0x7F800000u)));
    const auto is_special = hn::RebindMask(d, hn::And(h, hn::Set(du, 0x7C00u)) == hn::Set(du, 0x7C00u));
    const VF mag_f = hn::IfThenElse(is_special, special, scaled);
    hn::StoreU(hn::Or(mag_f, hn::BitCast(d, sign)), d, dst + i);
  }
  for (; i < n; ++i) dst[i] = f16_to_float(src[i]);
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::flash
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::flash {

HWY_EXPORT(Lanes);
HWY_EXPORT(Target);
HWY_EXPORT(Scores);
HWY_EXPORT(ApplyMods);
HWY_EXPORT(ApplyMask);
HWY_EXPORT(OnlineSoftmax);
HWY_EXPORT(Accumulate);
HWY_EXPORT(AnyNonFiniteF32);
HWY_EXPORT(AnyNonFinite16);
HWY_EXPORT(Bf16ToF32);
HWY_EXPORT(F16ToF32);

SimdOps simd_ops() {
  // Highway 1.0.3 has no HWY_DYNAMIC_POINTER: choose the target the way its first
  // HWY_DYNAMIC_DISPATCH would (this honours hwy::DisableTargets), then read the tables.
  // CPU detection (cpuid, which traps under a hypervisor) only when Highway has not chosen
  // yet or was reset by DisableTargets / SetSupportedTargetsForTest.
  if (!hwy::GetChosenTarget().IsInitialized()) hwy::GetChosenTarget().Update(hwy::SupportedTargets());
  const size_t t = hwy::GetChosenTarget().GetIndex();
  SimdOps ops;
  ops.lanes = HWY_DISPATCH_TABLE(Lanes)[t];
  ops.scores = HWY_DISPATCH_TABLE(Scores)[t];
  ops.apply_mods = HWY_DISPATCH_TABLE(ApplyMods)[t];
  ops.apply_mask = HWY_DISPATCH_TABLE(ApplyMask)[t];
  ops.online_softmax = HWY_DISPATCH_TABLE(OnlineSoftmax)[t];
  ops.accumulate = HWY_DISPATCH_TABLE(Accumulate)[t];
  ops.any_nonfinite_f32 = HWY_DISPATCH_TABLE(AnyNonFiniteF32)[t];
  ops.any_nonfinite_16 = HWY_DISPATCH_TABLE(AnyNonFinite16)[t];
  ops.bf16_to_f32 = HWY_DISPATCH_TABLE(Bf16ToF32)[t];
  ops.f16_to_f32 = HWY_DISPATCH_TABLE(F16ToF32)[t];
  ops.target = HWY_DISPATCH_TABLE(Target)[t]();
  return ops;
}

}  // namespace attnkit::flash
#endif
