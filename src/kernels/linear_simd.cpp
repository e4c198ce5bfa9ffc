// The vector loops of linear_simd.hpp, compiled for every Highway target; the exponential is
// the one every attention kernel shares (online_softmax-inl.h). Each loop is the plain
// formula over whole vectors plus a masked tail, so results do not depend on where a
// caller's rows start.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/linear_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include "kernels/online_softmax-inl.h"

#include <algorithm>
#include <cmath>

#include "kernels/linear_simd.hpp"

HWY_BEFORE_NAMESPACE();
namespace attnkit::linear::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
namespace sm = ::attnkit::HWY_NAMESPACE::softmax;

// out[i] = body(in[0][i], in[1][i], ...) over [0, n): whole vectors, then the tail one lane
// at a time through a one-lane tag (no load or store past n; Highway 1.0.3 has no LoadN).
// body(d, v) gets the tag and the loaded vectors.
template <size_t kArrays, class Body>
HWY_INLINE void ForVectors(int64_t n, const float* const (&in)[kArrays], float* out, const Body& body) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    VF v[kArrays];
    for (size_t a = 0; a < kArrays; ++a) v[a] = hn::LoadU(d, in[a] + i);
    hn::StoreU(body(d, v), d, out + i);
  }
  const hn::CappedTag<float, 1> d1;
  for (; i < n; ++i) {
    hn::Vec<decltype(d1)> v[kArrays];
    for (size_t a = 0; a < kArrays; ++a) v[a] = hn::LoadU(d1, in[a] + i);
    hn::StoreU(body(d1, v), d1, out + i);
  }
}

void Elu1(const float* x, float* f, int64_t n) {
  ForVectors<1>(n, {x}, f, [](auto d, const auto* v) {
    return hn::IfThenElse(hn::Gt(v[0], hn::Zero(d)), hn::Add(v[0], hn::Set(d, 1.0f)), sm::Exp(d, v[0]));
  });
}

void Elu1Grad(const float* x, const float* f, const float* df, float* dx, int64_t n) {
  ForVectors<3>(n, {x, f, df}, dx, [](auto d, const auto* v) {
    return hn::IfThenElse(hn::Gt(v[0], hn::Zero(d)), v[2], hn::Mul(v[2], v[1]));
  });
}

void ExpShift(float* x, int64_t n, float shift, float mul) {
  ForVectors<1>(n, {x}, x, [&](auto d, const auto* v) {
    return hn::Mul(hn::Set(d, mul), sm::Exp(d, hn::Sub(v[0], hn::Set(d, shift))));
  });
}

void AddScaled(float* x, const float* y, int64_t n, float alpha) {
  ForVectors<2>(n, {x, y}, x, [&](auto d, const auto* v) { return hn::MulAdd(hn::Set(d, alpha), v[1], v[0]); });
}

float Max(const float* x, int64_t n) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF acc = hn::Set(d, -HUGE_VALF);
  bool nan = false;
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const VF v = hn::LoadU(d, x + i);
    nan |= !hn::AllFalse(d, hn::IsNaN(v));
    acc = hn::Max(acc, v);
  }
  float m = hn::GetLane(hn::MaxOfLanes(d, acc));
  for (; i < n; ++i) {
    nan |= std::isnan(x[i]);
    m = std::max(m, x[i]);
  }
  return nan ? NAN : m;
}

void Mul(float* a, const float* t, int64_t n) {
  ForVectors<2>(n, {a, t}, a, [](auto, const auto* v) { return hn::Mul(v[0], v[1]); });
}

void MulInto(const float* a, const float* t, float* out, int64_t n) {
  ForVectors<2>(n, {a, t}, out, [](auto, const auto* v) { return hn::Mul(v[0], v[1]); });
}

// Row by row; the columns past the last full vector (the normaliser's, for W = Dv + 1) on
// scalars, which for one column costs less than ForVectors' padded copy, once per row.
void Rank1(float* s, int64_t rows, int64_t cols, float alpha, const float* kf, const float* vx) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const VF a = hn::Set(d, alpha);
  for (int64_t r = 0; r < rows; ++r) {
    const VF k = hn::Set(d, kf[r]);
    float* row = s + r * cols;
    int64_t c = 0;
    for (; c + N <= cols; c += N) hn::StoreU(hn::MulAdd(k, hn::LoadU(d, vx + c), hn::Mul(a, hn::LoadU(d, row + c))), d, row + c);
    for (; c < cols; ++c) row[c] = kf[r] * vx[c] + alpha * row[c];
  }
}

// u = qf^T s, four state rows at a time into four independent FMA chains (a vector of u
// per pass over the rows), for full vectors of columns; a last partial vector of columns
// runs the same sum on scalars.
void Vecmat(const float* qf, const float* s, int64_t rows, int64_t cols, float* u) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t c = 0;
  for (; c + N <= cols; c += N) {
    VF acc[4] = {hn::Zero(d), hn::Zero(d), hn::Zero(d), hn::Zero(d)};
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
      for (int t = 0; t < 4; ++t) acc[t] = hn::MulAdd(hn::Set(d, qf[r + t]), hn::LoadU(d, s + (r + t) * cols + c), acc[t]);
    for (; r < rows; ++r) acc[0] = hn::MulAdd(hn::Set(d, qf[r]), hn::LoadU(d, s + r * cols + c), acc[0]);
    hn::StoreU(hn::Add(hn::Add(acc[0], acc[1]), hn::Add(acc[2], acc[3])), d, u + c);
  }
  for (; c < cols; ++c) {
    float acc = 0;
    for (int64_t r = 0; r < rows; ++r) acc += qf[r] * s[r * cols + c];
    u[c] = acc;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::linear::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::linear::simd {
HWY_EXPORT(Elu1);
HWY_EXPORT(Elu1Grad);
HWY_EXPORT(ExpShift);
HWY_EXPORT(AddScaled);
HWY_EXPORT(Max);
HWY_EXPORT(Mul);
HWY_EXPORT(MulInto);
HWY_EXPORT(Rank1);
HWY_EXPORT(Vecmat);

void elu1(const float* x, float* f, int64_t n) { HWY_DYNAMIC_DISPATCH(Elu1)(x, f, n); }
void elu1_grad(const float* x, const float* f, const float* df, float* dx, int64_t n) {
  HWY_DYNAMIC_DISPATCH(Elu1Grad)(x, f, df, dx, n);
}
void exp_shift(float* x, int64_t n, float shift, float mul) { HWY_DYNAMIC_DISPATCH(ExpShift)(x, n, shift, mul); }
void add_scaled(float* x, const float* y, int64_t n, float alpha) { HWY_DYNAMIC_DISPATCH(AddScaled)(x, y, n, alpha); }
float max(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(Max)(x, n); }
void mul(float* a, const float* t, int64_t n) { HWY_DYNAMIC_DISPATCH(Mul)(a, t, n); }
void mul_into(const float* a, const float* t, float* out, int64_t n) { HWY_DYNAMIC_DISPATCH(MulInto)(a, t, out, n); }
void rank1(float* s, int64_t rows, int64_t cols, float alpha, const float* kf, const float* vx) {
  HWY_DYNAMIC_DISPATCH(Rank1)(s, rows, cols, alpha, kf, vx);
}
void vecmat(const float* qf, const float* s, int64_t rows, int64_t cols, float* u) {
  HWY_DYNAMIC_DISPATCH(Vecmat)(qf, s, rows, cols, u);
}
}  // namespace attnkit::linear::simd
#endif
