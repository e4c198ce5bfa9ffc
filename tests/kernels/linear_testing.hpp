// Shared helpers of the linear-attention tests: inputs, runs of the kernel and of the
// reference, and the tolerance rule of ARCHITECTURE.md applied to a method's own definition.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include <gtest/gtest.h>

#include "attnkit/linear.hpp"
#include "test_util.hpp"

namespace attnkit::testing {

struct LinearCase {
  int64_t b = 1, hq = 2, hkv = 2, n = 37, dk = 16, dv = 24;
  DType dtype = DType::f32;
};

inline std::string describe(const LinearCase& c, const LinearMethod& m) {
  return fmt::format("{} B={} Hq={} Hkv={} N={} Dk={} Dv={} {}", linear_method_string(m), c.b, c.hq, c.hkv, c.n, c.dk,
                     c.dv, dtype_name(c.dtype));
}

struct LinearInputs {
  Tensor q, k, v;
};

// q and k in [-amp, amp), v in [-1, 1), rounded to the case's dtype.
inline LinearInputs linear_inputs(const LinearCase& c, uint64_t seed, double amp = 1.0) {
  return {random_tensor({c.b, c.hq, c.n, c.dk}, seed, c.dtype, amp), random_tensor({c.b, c.hkv, c.n, c.dk}, seed + 1, c.dtype, amp),
          random_tensor({c.b, c.hkv, c.n, c.dv}, seed + 2, c.dtype)};
}

inline Tensor run_linear(const LinearInputs& in, const LinearMethod& m, DType out = DType::f32) {
  return linear_attend(in.q.view(), in.k.view(), in.v.view(), m, out);
}

inline Tensor run_linear_ref(const LinearInputs& in, const LinearMethod& m, RefPrecision precision,
                             LinearRefForm form = LinearRefForm::parallel) {
  Tensor o(DType::f64, {in.q.shape()[0], in.q.shape()[1], in.q.shape()[2], in.v.shape()[3]});
  linear_reference(in.q.view(), in.k.view(), in.v.view(), m, o.mut(), precision, form);
  return o;
}

// The tolerance rule: |got - exact| <= 2 |baseline - exact| + slack, baseline the plain
// definition run in the input precision.
inline void expect_within_rule(const TensorView& got, const TensorView& exact, const TensorView& baseline,
                               const std::string& what, double slack = 4e-7) {
  const double err = max_abs_diff(got, exact), bound = two_x_bound(baseline, exact, slack);
  EXPECT_LE(err, bound) << what << " (baseline error " << max_abs_diff(baseline, exact) << ")";
}

}  // namespace attnkit::testing
