// The storage-independent SIMD steps of the decode kernel, written once with Highway and
// dispatched at run time: S = Q K^T and O += P V on f32 tiles (the generic path: any
// storage dequantised into a scratch tile), and the online softmax of one tile.
// Layouts as decode_micro.hpp: s / p [rows][kTileKeys], acc [rows][dv], key j's row at
// krows[j]. Lanes run along channels (a decode tile has few query rows, often 4, so lanes
// along rows as in the flash kernel would sit mostly idle).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cache/decode_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

#include <cmath>
#include <limits>

#include "cache/decode_simd.hpp"

HWY_BEFORE_NAMESPACE();
namespace attnkit::decode {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Dot products of up to 4 query rows with one key row, channels [0, dk) in lane-wide
// steps and a masked tail.
template <int R>
HWY_INLINE void DotRows(DF d, const float* const* q, const float* HWY_RESTRICT k, int64_t dk, float* out) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF acc[R];
  for (int r = 0; r < R; ++r) acc[r] = hn::Zero(d);
  int64_t c = 0;
  for (; c + N <= dk; c += N) {
    const VF kv = hn::LoadU(d, k + c);
    for (int r = 0; r < R; ++r) acc[r] = hn::MulAdd(hn::LoadU(d, q[r] + c), kv, acc[r]);
  }
  if (c < dk) {
    const auto m = hn::FirstN(d, static_cast<size_t>(dk - c));
    const VF kv = hn::MaskedLoad(m, d, k + c);
    for (int r = 0; r < R; ++r) acc[r] = hn::MulAdd(hn::MaskedLoad(m, d, q[r] + c), kv, acc[r]);
  }
  for (int r = 0; r < R; ++r) out[r] = hn::GetLane(hn::SumOfLanes(d, acc[r]));
}

void ScoresF32(const float* q, int64_t rows, int64_t dk, const float* const* krows, int64_t n, float* s) {
  const DF d;
  float dots[4];
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {
    const int64_t rr = rows - r0 < 4 ? rows - r0 : 4;
    const float* qr[4];
    for (int64_t r = 0; r < 4; ++r) qr[r] = q + (r0 + (r < rr ? r : 0)) * dk;
    for (int64_t j = 0; j < n; ++j) {
      if (rr == 4) {
        DotRows<4>(d, qr, krows[j], dk, dots);
      } else if (rr >= 2) {
        DotRows<2>(d, qr, krows[j], dk, dots);
        if (rr == 3) DotRows<1>(d, qr + 2, krows[j], dk, dots + 2);
      } else {
        DotRows<1>(d, qr, krows[j], dk, dots);
      }
      for (int64_t r = 0; r < rr; ++r) s[(r0 + r) * kTileKeys + j] = dots[r];
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

// One tile of the online softmax, per row: x = mods(scale * s) + bias, m' = max(m, max x),
// p = exp(x - m'), alpha = exp(m - m'), l = alpha l + sum p; p overwrites s. A row with
// nothing visible so far keeps m = -inf, p = 0, alpha = 1.
void SoftmaxTile(float* s, int64_t rows, int64_t n, const SoftmaxParams& prm, const float* bias, float* m, float* l,
                 float* alpha) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const VF scale = hn::Set(d, prm.scale), neg_inf = hn::Set(d, kNegInf);
  const bool cap = prm.softcap > 0;
  const VF c = hn::Set(d, prm.softcap), inv_c2 = hn::Set(d, 2.0f / (cap ? prm.softcap : 1.0f));
  const VF one = hn::Set(d, 1.0f), two = hn::Set(d, 2.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float* x = s + r * kTileKeys;
    const float* b = bias ? bias + r * kTileKeys : nullptr;
    VF mx = neg_inf;
    for (int64_t j = 0; j < n; j += N) {
      const auto in = hn::FirstN(d, static_cast<size_t>(n - j));
      VF v = hn::Mul(hn::LoadU(d, x + j), scale);
      if (cap) {  // c tanh(v / c) = c (1 - 2 / (exp(2 v / c) + 1)), saturating cleanly
        const VF e = hn::Exp(d, hn::Min(hn::Mul(v, inv_c2), hn::Set(d, 80.0f)));
        v = hn::Mul(c, hn::Sub(one, hn::Div(two, hn::Add(e, one))));
      }
      if (b) v = hn::Add(v, hn::LoadU(d, b + j));
      v = hn::IfThenElse(in, v, neg_inf);
      hn::StoreU(v, d, x + j);
      mx = hn::Max(mx, v);
    }
    const float m_new = std::max(m[r], hn::GetLane(hn::MaxOfLanes(d, mx)));
    if (m_new == kNegInf) {
      for (int64_t j = 0; j < n; ++j) x[j] = 0;
      alpha[r] = 1;
      continue;
    }
    const VF shift = hn::Set(d, m_new);
    VF sum = hn::Zero(d);
    for (int64_t j = 0; j < n; j += N) {
      const VF p = hn::Exp(d, hn::Sub(hn::LoadU(d, x + j), shift));  // exp(-inf) = 0
      hn::StoreU(p, d, x + j);
      sum = hn::Add(sum, p);
    }
    alpha[r] = m[r] == kNegInf ? 0.0f : std::exp(m[r] - m_new);
    l[r] = l[r] * alpha[r] + hn::GetLane(hn::SumOfLanes(d, sum));
    m[r] = m_new;
  }
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
HWY_EXPORT(Target);

SimdOps simd_ops() {
  // As flash::simd_ops(): Highway 1.0.3 has no HWY_DYNAMIC_POINTER.
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
  const size_t t = hwy::GetChosenTarget().GetIndex();
  SimdOps ops;
  ops.scores_f32 = HWY_DISPATCH_TABLE(ScoresF32)[t];
  ops.pv_f32 = HWY_DISPATCH_TABLE(PvF32)[t];
  ops.softmax_tile = HWY_DISPATCH_TABLE(SoftmaxTile)[t];
  ops.rescale_rows = HWY_DISPATCH_TABLE(RescaleRows)[t];
  ops.target = HWY_DISPATCH_TABLE(Target)[t]();
  return ops;
}

}  // namespace attnkit::decode
#endif
