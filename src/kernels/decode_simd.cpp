// The storage-independent SIMD steps of the decode kernel, written once with Highway and
// dispatched at run time: S = Q K^T and O += P V on f32 tiles (the generic path: any
// storage dequantised into a scratch tile), and the online softmax of one tile.
// Layouts as decode_micro.hpp: s / p [rows][kTileKeys], acc [rows][dv], key j's row at
// krows[j]. Lanes run along channels (a decode tile has few query rows, often 4, so lanes
// along rows as in the flash kernel would sit mostly idle).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/decode_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include "kernels/online_softmax-inl.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "attnkit/shape.hpp"
#include "attnkit/tensor.hpp"

#include "kernels/decode_simd.hpp"
#include "kernels/online_softmax.hpp"

HWY_BEFORE_NAMESPACE();
namespace attnkit::decode {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
namespace sm = ::attnkit::HWY_NAMESPACE::softmax;

alignas(64) static const float kZeroRow[1024] = {};
static_assert(kMaxHeadDim <= 1024, "kZeroRow must cover a key row");

// out[0..3] = the lane sums of a, b, c, e. Pairs of vectors are folded with interleaves
// (one add per pair level instead of a full reduction per vector), leaving each 128-bit
// block as [a, b, c, e] partial sums; the blocks are then summed in scalar.
HWY_INLINE void Reduce4(DF d, VF a, VF b, VF c, VF e, float* out) {
#if HWY_TARGET == HWY_SCALAR
  out[0] = hn::GetLane(a), out[1] = hn::GetLane(b), out[2] = hn::GetLane(c), out[3] = hn::GetLane(e);
  (void)d;
#else
  const hn::Repartition<uint64_t, DF> du;
  const VF ab = hn::Add(hn::InterleaveLower(d, a, b), hn::InterleaveUpper(d, a, b));
  const VF ce = hn::Add(hn::InterleaveLower(d, c, e), hn::InterleaveUpper(d, c, e));
  const auto lo = hn::InterleaveLower(du, hn::BitCast(du, ab), hn::BitCast(du, ce));
  const auto hi = hn::InterleaveUpper(du, hn::BitCast(du, ab), hn::BitCast(du, ce));
  alignas(64) float lanes[hn::MaxLanes(DF())];
  hn::Store(hn::Add(hn::BitCast(d, lo), hn::BitCast(d, hi)), d, lanes);
  const size_t n = hn::Lanes(d);
  for (int k = 0; k < 4; ++k) {
    float sum = 0;
    for (size_t blk = 0; blk < n; blk += 4) sum += lanes[blk + k];
    out[k] = sum;
  }
#endif
}

// s[r0 + r][j0 + jj] for 4 query rows x 4 keys: 16 accumulators along channels, each
// K and Q vector loaded once per block.
HWY_INLINE void ScoresBlock(DF d, const float* const* q, const float* const* k, int64_t dk, float out[4][4]) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF acc[4][4];
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = hn::Zero(d);
  const auto step = [&](int64_t c, auto load) {
    VF kv[4];
    for (int j = 0; j < 4; ++j) kv[j] = load(k[j] + c);
    for (int r = 0; r < 4; ++r) {
      const VF qv = load(q[r] + c);
      for (int j = 0; j < 4; ++j) acc[r][j] = hn::MulAdd(qv, kv[j], acc[r][j]);
    }
  };
  int64_t c = 0;
  for (; c + N <= dk; c += N) step(c, [&](const float* p) { return hn::LoadU(d, p); });
  if (c < dk) {
    const auto m = hn::FirstN(d, static_cast<size_t>(dk - c));
    step(c, [&](const float* p) { return hn::MaskedLoad(m, d, p); });
  }
  for (int r = 0; r < 4; ++r) Reduce4(d, acc[r][0], acc[r][1], acc[r][2], acc[r][3], out[r]);
}

void ScoresF32(const float* q, int64_t rows, int64_t dk, const float* const* krows, int64_t n, float* s) {
  const DF d;
  float out[4][4];
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {
    const int64_t rr = std::min<int64_t>(4, rows - r0);
    const float* qr[4];
    for (int64_t r = 0; r < 4; ++r) qr[r] = q + (r0 + std::min(r, rr - 1)) * dk;  // padding rows repeat the last
    for (int64_t j0 = 0; j0 < n; j0 += 4) {
      const int64_t jj = std::min<int64_t>(4, n - j0);
      const float* kr[4];
      for (int64_t j = 0; j < 4; ++j) kr[j] = j < jj ? krows[j0 + j] : kZeroRow;
      ScoresBlock(d, qr, kr, dk, out);
      for (int64_t r = 0; r < rr; ++r)
        for (int64_t j = 0; j < jj; ++j) s[(r0 + r) * kTileKeys + j0 + j] = out[r][j];
    }
  }
}

// acc[r][c0 .. c0 + CV*N) += sum_j p[r][j] v_j[...] for RB rows, the block held in registers.
template <int RB, int CV>
HWY_INLINE void PvBlock(DF d, const float* p, int64_t r0, const float* const* vrows, int64_t n, int64_t c0,
                        int64_t dv, float* acc) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF a[RB][CV];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CV; ++c) a[r][c] = hn::LoadU(d, acc + (r0 + r) * dv + c0 + c * N);
  for (int64_t j = 0; j < n; ++j) {
    VF v[CV];
    for (int c = 0; c < CV; ++c) v[c] = hn::LoadU(d, vrows[j] + c0 + c * N);
    for (int r = 0; r < RB; ++r) {
      const VF w = hn::Set(d, p[(r0 + r) * kTileKeys + j]);
      for (int c = 0; c < CV; ++c) a[r][c] = hn::MulAdd(w, v[c], a[r][c]);
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CV; ++c) hn::StoreU(a[r][c], d, acc + (r0 + r) * dv + c0 + c * N);
}

void PvF32(const float* p, int64_t rows, const float* const* vrows, int64_t n, int64_t dv, float* acc) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t c0 = 0;
  for (; c0 + 4 * N <= dv; c0 += 4 * N) {
    int64_t r0 = 0;
    for (; r0 + 4 <= rows; r0 += 4) PvBlock<4, 4>(d, p, r0, vrows, n, c0, dv, acc);
    for (; r0 < rows; ++r0) PvBlock<1, 4>(d, p, r0, vrows, n, c0, dv, acc);
  }
  for (; c0 + N <= dv; c0 += N)
    for (int64_t r0 = 0; r0 < rows; ++r0) PvBlock<1, 1>(d, p, r0, vrows, n, c0, dv, acc);
  for (; c0 < dv; ++c0)  // channels beyond the last full vector
    for (int64_t r = 0; r < rows; ++r) {
      float sum = acc[r * dv + c0];
      for (int64_t j = 0; j < n; ++j) sum += p[r * kTileKeys + j] * vrows[j][c0];
      acc[r * dv + c0] = sum;
    }
}

// One tile of the online softmax, per row: x = mods(scale * s) + bias (x = -inf where the
// bias is -inf, whatever s), m' = max(m, max x),
// p = exp(x - m'), alpha = exp(m - m'), l = alpha l + sum p; p overwrites s. A row with
// nothing visible so far keeps m = -inf, p = 0, alpha = 1.
// SoftmaxTile on R <= 4 rows at once: their max and sum reductions and exponentials are
// independent chains that overlap, where one row at a time waits on each reduction (it
// measured slower at 4 rows x 64 keys).
template <int R>
HWY_INLINE void SoftmaxRows(DF d, float* s, int64_t n, const SoftmaxParams& prm, const float* bias, float* m,
                            float* l, float* alpha) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const VF scale = hn::Set(d, prm.scale), neg_inf = hn::Set(d, kNegInf);
  const bool cap = prm.softcap > 0;
  const VF c = hn::Set(d, prm.softcap), two_over_c = hn::Set(d, 2.0f / (cap ? prm.softcap : 1.0f));
  VF mx[R];
  for (int r = 0; r < R; ++r) mx[r] = neg_inf;
  for (int64_t j = 0; j < n; j += N) {
    const auto in = hn::FirstN(d, static_cast<size_t>(n - j));
    for (int r = 0; r < R; ++r) {
      float* x = s + r * kTileKeys + j;
      VF v = hn::Mul(hn::LoadU(d, x), scale);
      if (cap) v = sm::Softcap(d, v, c, two_over_c);
      if (bias) {
        // A -inf bias hides the key: selected, not added, as NaN + -inf is NaN and a NaN or
        // inf score at a hidden key (from K) would poison the row.
        const VF b = hn::LoadU(d, bias + r * kTileKeys + j);
        v = hn::IfThenElse(b == neg_inf, neg_inf, hn::Add(v, b));
      }
      v = hn::IfThenElse(in, v, neg_inf);
      hn::StoreU(v, d, x);
      mx[r] = hn::Max(mx[r], v);
    }
  }
  // The online-softmax step (online_softmax-inl.h) with lanes along keys: the row's max is
  // reduced to a scalar, so alpha is the scalar half (online_softmax.hpp).
  VF shift[R], sum[R];
  float m_new[R];
  for (int r = 0; r < R; ++r) {
    m_new[r] = std::max(m[r], hn::GetLane(hn::MaxOfLanes(d, mx[r])));
    shift[r] = hn::Set(d, softmax::shift_of(m_new[r]));
    sum[r] = hn::Zero(d);
  }
  for (int64_t j = 0; j < n; j += N)
    for (int r = 0; r < R; ++r) {
      float* x = s + r * kTileKeys + j;
      const VF p = sm::Prob(d, hn::LoadU(d, x), shift[r]);
      hn::StoreU(p, d, x);
      sum[r] = hn::Add(sum[r], p);
    }
  for (int r = 0; r < R; ++r) {
    if (m_new[r] == kNegInf) {  // keeps m = -inf, p = 0 (even where a score was NaN), alpha = 1
      std::fill(s + r * kTileKeys, s + r * kTileKeys + n, 0.0f);
      alpha[r] = 1;
      continue;
    }
    alpha[r] = softmax::alpha_of(m[r], m_new[r]);  // 1 lets RescaleRows skip the row
    l[r] = l[r] * alpha[r] + hn::GetLane(hn::SumOfLanes(d, sum[r]));
    m[r] = m_new[r];
  }
}

void SoftmaxTile(float* s, int64_t rows, int64_t n, const SoftmaxParams& prm, const float* bias, float* m, float* l,
                 float* alpha) {
  const DF d;
  int64_t r0 = 0;
  const auto at = [&](int64_t r) { return bias ? bias + r * kTileKeys : nullptr; };
  for (; r0 + 4 <= rows; r0 += 4)
    SoftmaxRows<4>(d, s + r0 * kTileKeys, n, prm, at(r0), m + r0, l + r0, alpha + r0);
  for (; r0 < rows; ++r0) SoftmaxRows<1>(d, s + r0 * kTileKeys, n, prm, at(r0), m + r0, l + r0, alpha + r0);
}

void RescaleRows(float* acc, int64_t rows, int64_t dv, const float* alpha) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = 0; r < rows; ++r) {
    if (alpha[r] == 1.0f) continue;
    const VF a = hn::Set(d, alpha[r]);
    float* row = acc + r * dv;
    int64_t c = 0;
    for (; c + N <= dv; c += N) hn::StoreU(hn::Mul(hn::LoadU(d, row + c), a), d, row + c);
    for (; c < dv; ++c) row[c] *= alpha[r];
  }
}

// f16 rows to f32: vcvtph2ps where the target has F16C (AVX2, AVX-512), Highway's
// emulation elsewhere; one instruction per vector, where flash's bit-exact shared path
// spends about ten (it dominated the f16 decode profile). Highway 1.0.3's emulation (SSE4
// and below) turns inf / NaN into large finite values (a NaN scale of a poisoned int8 row
// would read as finite), so there lanes with an all-ones exponent are redone from their
// bits: sign, all-ones exponent, mantissa << 13.
void F16ToF32(const uint16_t* src, float* dst, int64_t n) {
  const DF d;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto* h = reinterpret_cast<const hwy::float16_t*>(src);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    VF x = hn::PromoteTo(d, hn::LoadU(dh, h + i));
#if HWY_TARGET >= HWY_SSE4 || defined(HWY_DISABLE_F16C)
    const hn::RebindToUnsigned<DF> du;
    const auto bits = hn::PromoteTo(du, hn::LoadU(hn::Rebind<uint16_t, DF>(), src + i));
    const auto special = hn::And(bits, hn::Set(du, 0x7C00u)) == hn::Set(du, 0x7C00u);
    const auto sign = hn::ShiftLeft<16>(hn::And(bits, hn::Set(du, 0x8000u)));
    const auto mantissa = hn::ShiftLeft<13>(hn::And(bits, hn::Set(du, 0x3FFu)));
    const auto inf_nan = hn::Or(hn::Or(sign, hn::Set(du, 0x7F800000u)), mantissa);
    x = hn::IfThenElse(hn::RebindMask(d, special), hn::BitCast(d, inf_nan), x);
#endif
    hn::StoreU(x, d, dst + i);
  }
  for (; i < n; ++i) dst[i] = f16_to_float(src[i]);
}

const char* Target() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::decode
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::decode {

HWY_EXPORT(ScoresF32);
HWY_EXPORT(PvF32);
HWY_EXPORT(SoftmaxTile);
HWY_EXPORT(RescaleRows);
HWY_EXPORT(F16ToF32);
HWY_EXPORT(Target);

SimdOps simd_ops() {
  // As flash::simd_ops(): Highway 1.0.3 has no HWY_DYNAMIC_POINTER.
  // CPU detection (cpuid, which traps under a hypervisor) only when Highway has not chosen
  // yet or was reset by DisableTargets / SetSupportedTargetsForTest.
  if (!hwy::GetChosenTarget().IsInitialized()) hwy::GetChosenTarget().Update(hwy::SupportedTargets());
  const size_t t = hwy::GetChosenTarget().GetIndex();
  SimdOps ops;
  ops.scores_f32 = HWY_DISPATCH_TABLE(ScoresF32)[t];
  ops.pv_f32 = HWY_DISPATCH_TABLE(PvF32)[t];
  ops.softmax_tile = HWY_DISPATCH_TABLE(SoftmaxTile)[t];
  ops.rescale_rows = HWY_DISPATCH_TABLE(RescaleRows)[t];
  ops.f16_to_f32 = HWY_DISPATCH_TABLE(F16ToF32)[t];
  ops.target = HWY_DISPATCH_TABLE(Target)[t]();
  return ops;
}

}  // namespace attnkit::decode
#endif
