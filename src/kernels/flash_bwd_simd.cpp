// The SIMD tile operations that only the flash backward needs (flash_bwd.hpp), written once
// with Highway for every x86 target; the products are the forward's (flash_simd.cpp). The
// exponential is the one online-softmax step's (online_softmax-inl.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/flash_bwd_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include "kernels/online_softmax-inl.h"

#include <cmath>

#include "kernels/flash_bwd.hpp"

HWY_BEFORE_NAMESPACE();
namespace attnkit::flash {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
namespace sm = ::attnkit::HWY_NAMESPACE::softmax;

// P = e^(S - LSE): the forward's probabilities, recomputed from its saved LSE. A row whose
// lse is +inf (no gradient) gets e^(-inf) = 0. Hidden keys (S = -inf) get exactly 0 even
// in a row whose LSE is NaN: P^T dO must not carry that row's NaN to keys it cannot see.
void Probabilities(const float* st, int64_t rp, int64_t width, const float* lse, float* pt) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const VF ninf = hn::Set(d, -HUGE_VALF);
  for (int64_t r = 0; r < rp; r += N) {
    const VF l = hn::Load(d, lse + r);
    for (int64_t j = 0; j < width; ++j) {
      const VF s = hn::Load(d, st + j * rp + r);
      hn::Store(hn::IfThenZeroElse(hn::Eq(s, ninf), sm::Prob(d, s, l)), d, pt + j * rp + r);
    }
  }
}

// dS = P (dP - D) mods'. The select keeps hidden keys and dead rows at exactly 0, so a
// non-finite dP there (inf or NaN in V at a key the row cannot see) reaches nothing.
void ScoreGrads(const float* st, const float* pt, float* dpt, int64_t rp, int64_t width, const BwdRows& rows,
                float softcap, const float* slopes, const float* pos) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const VF ninf = hn::Set(d, -HUGE_VALF), pinf = hn::Set(d, HUGE_VALF), one = hn::Set(d, 1.0f);
  const VF inv_c = hn::Set(d, softcap > 0 ? 1.0f / softcap : 0.0f);
  for (int64_t r = 0; r < rp; r += N) {
    const VF dr = hn::Load(d, rows.d + r);
    const auto dead = hn::Eq(hn::Load(d, rows.lse + r), pinf);
    for (int64_t j = 0; j < width; ++j) {
      const VF s = hn::Load(d, st + j * rp + r);
      VF ds = hn::Mul(hn::Load(d, pt + j * rp + r), hn::Sub(hn::Load(d, dpt + j * rp + r), dr));
      if (softcap > 0) {
        VF capped = s;
        if (slopes) {
          const VF dist = hn::Abs(hn::Sub(hn::Load(d, pos + r), hn::Set(d, static_cast<float>(j))));
          capped = hn::MulAdd(hn::Load(d, slopes + r), dist, s);
        }
        const VF t = hn::Mul(capped, inv_c);
        ds = hn::Mul(ds, hn::NegMulAdd(t, t, one));
      }
      hn::Store(hn::IfThenZeroElse(hn::Or(dead, hn::Eq(s, ninf)), ds), d, dpt + j * rp + r);
    }
  }
}

void Add(float* dst, const float* src, int64_t n) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t i = 0; i < n; i += N) hn::Store(hn::Add(hn::Load(d, dst + i), hn::Load(d, src + i)), d, dst + i);
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::flash
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::flash {

HWY_EXPORT(Probabilities);
HWY_EXPORT(ScoreGrads);
HWY_EXPORT(Add);

BwdSimdOps bwd_simd_ops() {
  // The same choice of target as simd_ops() (flash_simd.cpp), which honours DisableTargets.
  // CPU detection (cpuid, which traps under a hypervisor) only when Highway has not chosen
  // yet or was reset by DisableTargets / SetSupportedTargetsForTest.
  if (!hwy::GetChosenTarget().IsInitialized()) hwy::GetChosenTarget().Update(hwy::SupportedTargets());
  const size_t t = hwy::GetChosenTarget().GetIndex();
  BwdSimdOps ops;
  ops.probabilities = HWY_DISPATCH_TABLE(Probabilities)[t];
  ops.score_grads = HWY_DISPATCH_TABLE(ScoreGrads)[t];
  ops.add = HWY_DISPATCH_TABLE(Add)[t];
  return ops;
}

}  // namespace attnkit::flash
#endif
