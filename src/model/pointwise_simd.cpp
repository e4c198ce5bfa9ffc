// SwiGLU's gate (pointwise.hpp), written once with Highway.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "model/pointwise_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include <algorithm>

#include "model/pointwise.hpp"

#include "kernels/online_softmax-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::model {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// s = sigmoid(g) = 1 / (1 + e^-g): e^-g clamps at e^88 for g < -88 (s = 0 to f32) and is 0
// for g > 87.3 (s = 1); a NaN gate stays NaN.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V Sigmoid(D d, V g) {
  const V one = hn::Set(d, 1.0f);
  return hn::Div(one, hn::Add(one, attnkit::HWY_NAMESPACE::softmax::Exp(d, hn::Neg(g))));
}

// Runs body(x, y) over [0, count) a vector at a time: x[k] loaded from in[k], y[k] stored
// to out[k]. The last partial vector goes through zero-padded buffers, so it sees exactly
// the same arithmetic.
template <int kIn, int kOut, class D, class Body>
HWY_INLINE void ForEachVector(D d, int64_t count, const float* const (&in)[kIn], float* const (&out)[kOut],
                              Body body) {
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    hn::Vec<D> x[kIn];
    for (int k = 0; k < kIn; ++k) x[k] = hn::LoadU(d, in[k] + i);
    hn::Vec<D> y[kOut];
    body(x, y);
    for (int k = 0; k < kOut; ++k) hn::StoreU(y[k], d, out[k] + i);
  }
  if (i == count) return;
  const int64_t rest = count - i;
  HWY_ALIGN float buf[kIn > kOut ? kIn : kOut][HWY_MAX_BYTES / sizeof(float)] = {};
  hn::Vec<D> x[kIn];
  for (int k = 0; k < kIn; ++k) {
    std::copy(in[k] + i, in[k] + count, buf[k]);
    x[k] = hn::Load(d, buf[k]);
  }
  hn::Vec<D> y[kOut];
  body(x, y);
  for (int k = 0; k < kOut; ++k) {
    hn::Store(y[k], d, buf[k]);
    std::copy(buf[k], buf[k] + rest, out[k] + i);
  }
}

void SwigluForward(float* out, const float* gate, const float* up, int64_t count) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  ForEachVector<2, 1>(d, count, {gate, up}, {out}, [&](const V* x, V* y) {
    y[0] = hn::Mul(hn::Mul(x[0], Sigmoid(d, x[0])), x[1]);
  });
}

// silu'(g) = s (1 + g (1 - s)).
void SwigluBackward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                    int64_t count) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  const V one = hn::Set(d, 1.0f);
  ForEachVector<3, 2>(d, count, {dout, gate, up}, {dgate, dup}, [&](const V* x, V* y) {
    const V s = Sigmoid(d, x[1]);
    y[1] = hn::Mul(hn::Mul(x[0], x[1]), s);
    const V dsilu = hn::Mul(s, hn::MulAdd(x[1], hn::Sub(one, s), one));
    y[0] = hn::Mul(hn::Mul(x[0], x[2]), dsilu);
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::model
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::model {
HWY_EXPORT(SwigluForward);
HWY_EXPORT(SwigluBackward);

void swiglu_forward_simd(float* out, const float* gate, const float* up, int64_t count) {
  HWY_DYNAMIC_DISPATCH(SwigluForward)(out, gate, up, count);
}

void swiglu_backward_simd(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                          int64_t count) {
  HWY_DYNAMIC_DISPATCH(SwigluBackward)(dgate, dup, dout, gate, up, count);
}
}  // namespace attnkit::model
#endif
