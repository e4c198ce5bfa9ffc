// The one-row linear layer (matvec.hpp), written once with Highway.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "model/matvec_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include "model/matvec.hpp"

HWY_BEFORE_NAMESPACE();
namespace attnkit::model {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void Matvec(float* y, const float* w, const float* x, int64_t rows, int64_t cols, float beta) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t full = cols / lanes * lanes;
  const auto finish = [&](int64_t r, float dot) {
    for (int64_t c = full; c < cols; ++c) dot += w[r * cols + c] * x[c];
    y[r] = beta == 0.0f ? dot : beta * y[r] + dot;  // beta 0 ignores what y held, as BLAS
  };
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* w0 = w + r * cols;
    auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
    for (int64_t c = 0; c < full; c += lanes) {
      const auto xv = hn::LoadU(d, x + c);
      a0 = hn::MulAdd(hn::LoadU(d, w0 + c), xv, a0);
      a1 = hn::MulAdd(hn::LoadU(d, w0 + cols + c), xv, a1);
      a2 = hn::MulAdd(hn::LoadU(d, w0 + 2 * cols + c), xv, a2);
      a3 = hn::MulAdd(hn::LoadU(d, w0 + 3 * cols + c), xv, a3);
    }
    finish(r, hn::GetLane(hn::SumOfLanes(d, a0)));
    finish(r + 1, hn::GetLane(hn::SumOfLanes(d, a1)));
    finish(r + 2, hn::GetLane(hn::SumOfLanes(d, a2)));
    finish(r + 3, hn::GetLane(hn::SumOfLanes(d, a3)));
  }
  for (; r < rows; ++r) {
    auto a = hn::Zero(d);
    for (int64_t c = 0; c < full; c += lanes) a = hn::MulAdd(hn::LoadU(d, w + r * cols + c), hn::LoadU(d, x + c), a);
    finish(r, hn::GetLane(hn::SumOfLanes(d, a)));
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::model
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::model {
HWY_EXPORT(Matvec);

void matvec(float* y, const float* w, const float* x, int64_t rows, int64_t cols, float beta) {
  HWY_DYNAMIC_DISPATCH(Matvec)(y, w, x, rows, cols, beta);
}
}  // namespace attnkit::model
#endif
