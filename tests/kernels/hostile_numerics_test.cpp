// Regression tests for inputs that once gave wrong results: scores far beyond the usual
// range (f16 inputs at +-65504, f32 scores near 1e9 and beyond), and inf / NaN in V at keys
// a row may not see, which must reach no such row (on every pattern, in attend() on every
// SIMD target). Judged against the f64 reference, which is exact here.
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include <hwy/targets.h>

#include <gtest/gtest.h>

#include "attnkit/reference.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::random_tensor;

struct Result {
  Tensor o, lse;
};

Result run(const Tensor& q, const Tensor& k, const Tensor& v, const AttendOptions& opts) {
  const int64_t b = q.shape()[0], h = q.shape()[1], n = q.shape()[2], dv = v.shape()[3];
  Result r{Tensor(DType::f64, {b, h, n, dv}), Tensor(DType::f64, {b, h, n})};
  attend_into(q.view(), k.view(), v.view(), opts, r.o.mut(), r.lse.mut());
  return r;
}

// Scores of magnitude `big` on a few keys, ordinary ones elsewhere: the softmax is nearly
// one-hot on the largest, and LSE is about that score. q = e_0 * a, k_j = e_0 * c_j.
void expect_huge_scores_exact(DType dtype, double a, double c_max) {
  const int64_t n = 130, d = 32;  // three KV tiles, the largest key in the last
  Tensor q(dtype, {1, 2, 3, d}), k(dtype, {1, 2, n, d});
  Tensor v = random_tensor({1, 2, n, d}, 5, dtype);
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t i = 0; i < 3; ++i) q.mut().set(i == 1 ? -a : a, 0, h, i, 0);
    for (int64_t j = 0; j < n; ++j) k.mut().set(j % 7 == 3 ? c_max * (j == 129 ? 1.0 : -0.5) : 0.25 * j, 0, h, j, 0);
  }
  for (const char* pattern : {"none", "causal"}) {
    AttendOptions opts;
    opts.pattern = Pattern::parse(pattern);
    opts.scale = 1.0;
    AttendOptions ref = opts;
    ref.kernel = Kernel::ref;
    const Result got = run(q, k, v, opts), want = run(q, k, v, ref);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < 3; ++i) {
        const double lw = want.lse.view().get(0, h, i), lg = got.lse.view().get(0, h, i);
        ASSERT_TRUE(std::isfinite(lw)) << pattern;
        EXPECT_TRUE(std::isfinite(lg)) << pattern << " row " << i << " lse " << lg;
        EXPECT_LE(std::abs(lg - lw), 1e-6 * std::abs(lw) + 1e-5) << pattern << " row " << i;
        for (int64_t c = 0; c < d; ++c)
          EXPECT_NEAR(got.o.view().get(0, h, i, c), want.o.view().get(0, h, i, c), 2e-3)
              << pattern << " row " << i << " ch " << c;
      }
  }
}

TEST(HostileNumerics, F16AtMaxMagnitudeGivesFiniteExactLse) {
  expect_huge_scores_exact(DType::f16, 65504.0, 65504.0);  // scores up to 4.3e9
}

TEST(HostileNumerics, F32ScoresNear3e9GiveFiniteExactLse) { expect_huge_scores_exact(DType::f32, 1e5, 3e4); }

TEST(HostileNumerics, F32ScoresNear1e30GiveFiniteExactLse) { expect_huge_scores_exact(DType::f32, 1e15, 1e15); }

// Every row that cannot see key `bad` must equal the reference (finite); every row that
// can must be NaN (or inf) as in the reference. Each pattern, f32 and bf16, every target;
// the value sits in channel `col` of head dim `d` (past the last full vector when d is odd).
void expect_hidden_nan_contained(const std::string& pattern, DType dtype, int64_t n, int64_t bad, double value,
                                 int64_t d = 32, int64_t col = 5) {
  Tensor q = random_tensor({1, 2, n, d}, 11, dtype), k = random_tensor({1, 1, n, d}, 12, dtype);
  Tensor v = random_tensor({1, 1, n, d}, 13, dtype);
  v.mut().set(value, 0, 0, bad, col);
  AttendOptions opts;
  opts.pattern = Pattern::parse(pattern);
  AttendOptions ref = opts;
  ref.kernel = Kernel::ref;
  const Result want = run(q, k, v, ref);
  const BoundPattern bp = opts.pattern.bind(n, n);
  const int64_t targets = static_cast<int64_t>(hwy::SupportedTargets());
  for (int64_t t = targets; t != 0; t &= t - 1) {
    hwy::SetSupportedTargetsForTest(t & -t);
    const Result got = run(q, k, v, opts);
    int64_t hidden_rows = 0;
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < n; ++i) {
        const bool sees = bp.allow(i, bad);
        hidden_rows += !sees;
        for (int64_t c = 0; c < d; ++c) {
          const double g = got.o.view().get(0, h, i, c), w = want.o.view().get(0, h, i, c);
          const auto where = [&] {
            return fmt::format("{} {} value {} target {} row {} ch {}", pattern, dtype_name(dtype), value,
                               hwy::TargetName(t & -t), i, c);
          };
          if (!sees) {
            ASSERT_TRUE(std::isfinite(g)) << where();
            ASSERT_NEAR(g, w, 2e-2) << where();
          } else if (c == col) {
            ASSERT_FALSE(std::isfinite(g)) << where() << ": the row sees the bad key";
          }
        }
      }
    EXPECT_GT(hidden_rows, 0) << pattern << ": the case must hide the key from some row";
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(HostileNumerics, NanOrInfInHiddenValuesReachNoRowThatCannotSeeThem) {
  const int64_t n = 140;  // three KV tiles
  const std::vector<std::pair<std::string, int64_t>> cases = {
      {"causal", n - 1},  {"causal", 70},  {"window:16,0", 100}, {"window:5,9", 60},
      {"longformer:w=4,d=2,global=0+120", 70}, {"bigbird:block=16,window=3,global=1,random=1,seed=3", 90},
      {"strided:stride=16", 120}, {"fixed:stride=16,c=4", 37}};
  for (const auto& [pattern, bad] : cases) {
    expect_hidden_nan_contained(pattern, DType::f32, n, bad, std::numeric_limits<double>::quiet_NaN());
    expect_hidden_nan_contained(pattern, DType::bf16, n, bad, std::numeric_limits<double>::infinity());
  }
  // f16 (its own exponent field), -inf, and the value in the scalar tail of an odd head dim.
  expect_hidden_nan_contained("causal", DType::f16, n, 70, -std::numeric_limits<double>::infinity(), 37, 36);
  expect_hidden_nan_contained("window:16,0", DType::f32, n, 100, std::numeric_limits<double>::infinity(), 37, 36);
  expect_hidden_nan_contained("window:5,9", DType::bf16, n, 60, std::numeric_limits<double>::quiet_NaN(), 37, 36);
}

}  // namespace
}  // namespace attnkit
