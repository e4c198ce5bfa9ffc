// Tests for the flash forward kernel against the reference, with the tolerance rule of
// ARCHITECTURE.md: the kernel's max error against the f64 oracle must be at most twice the
// error of the plain reference run in the input precision (plus 1e-7 absolute, for cases
// where that baseline happens to be exact). Also: split-KV equals one pass, bitwise
// identical results for any thread count, and every compiled SIMD target.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include <hwy/targets.h>

#include <gtest/gtest.h>

#include "attnkit/reference.hpp"
#include "kernels/flash.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;

using Case = testing::AttnCase;
using testing::describe;

struct Inputs {
  Tensor q, k, v;
  AttendOptions opts;
};

Inputs make_inputs(const Case& c, uint64_t seed) {
  Inputs in{random_tensor({c.b, c.hq, c.nq, c.dqk}, seed, c.dtype, 2.0), random_tensor({c.b, c.hkv, c.nk, c.dqk}, seed + 1, c.dtype, 2.0),
            random_tensor({c.b, c.hkv, c.nk, c.dv}, seed + 2, c.dtype), {}};
  in.opts.pattern = Pattern::parse(c.pattern);
  in.opts.softcap = c.softcap;
  if (c.alibi) in.opts.alibi_slopes = alibi_slopes(c.hq);
  return in;
}

struct Out {
  Tensor o, lse;
};

Out run_flash(const Inputs& in, const Case& c, const flash::FlashConfig& cfg = {}) {
  Out r{Tensor(DType::f32, {c.b, c.hq, c.nq, c.dv}), Tensor(DType::f32, {c.b, c.hq, c.nq})};
  flash::flash_forward(in.q.view(), in.k.view(), in.v.view(), in.opts, r.o.mut(), r.lse.mut(), cfg);
  return r;
}

Out run_ref(const Inputs& in, const Case& c, RefPrecision precision) {
  Out r{Tensor(DType::f64, {c.b, c.hq, c.nq, c.dv}), Tensor(DType::f64, {c.b, c.hq, c.nq})};
  RefOptions ro;
  ro.precision = precision;
  attention_reference(in.q.view(), in.k.view(), in.v.view(), in.opts, r.o.mut(), r.lse.mut(), ro);
  return r;
}

void expect_within_tolerance(const Case& c, uint64_t seed = 7) {
  const Inputs in = make_inputs(c, seed);
  const Out exact = run_ref(in, c, RefPrecision::f64);
  const Out baseline = run_ref(in, c, RefPrecision::input);
  const Out got = run_flash(in, c);
  const double bound = 2 * max_abs_diff(baseline.o.view(), exact.o.view()) + 1e-7;
  const double err = max_abs_diff(got.o.view(), exact.o.view());
  EXPECT_LE(err, bound) << describe(c);
  const double lse_bound = 2 * max_abs_diff(baseline.lse.view(), exact.lse.view()) + 1e-6;
  EXPECT_LE(max_abs_diff(got.lse.view(), exact.lse.view()), lse_bound) << describe(c);
}

const std::vector<std::string> kPatterns = {"none", "causal", "window:5,0", "window:2,3",
                                            "longformer:w=3,d=2,global=0", "bigbird:block=4,window=3,global=1,random=1,seed=5",
                                            "strided:stride=4", "fixed:stride=8,c=2"};

TEST(FlashForward, BlockMasksAndPredicates) {
  const Case c{1, 4, 2, 17, 23, 32, 32, "none"};
  Inputs in = make_inputs(c, 21);
  in.opts.pattern = Pattern::parse("blocks:bq=4,bk=8,mask=101/011/110/001/111");
  const Out exact = run_ref(in, c, RefPrecision::f64), base = run_ref(in, c, RefPrecision::input);
  EXPECT_LE(max_abs_diff(run_flash(in, c).o.view(), exact.o.view()), 2 * max_abs_diff(base.o.view(), exact.o.view()) + 1e-7);
  in.opts.pattern = Pattern::predicate([](int64_t q, int64_t k) { return (q * 7 + k * 3) % 5 != 0; }, "mod5");
  const Out exact2 = run_ref(in, c, RefPrecision::f64), base2 = run_ref(in, c, RefPrecision::input);
  EXPECT_LE(max_abs_diff(run_flash(in, c).o.view(), exact2.o.view()),
            2 * max_abs_diff(base2.o.view(), exact2.o.view()) + 1e-7);
}

TEST(FlashForward, LargeSoftcappedScoresKeepTheirSign) {
  // s / c up to ~100: 2 s log2(e) / c exceeds 127, where an unclamped 2^x would overflow.
  const Case c{1, 2, 1, 9, 33, 16, 16, "causal", DType::f32, 1.0};
  Inputs in = make_inputs(c, 13);
  for (Tensor* t : {&in.q, &in.k})
    for (int64_t i = 0; i < t->numel(); ++i) t->mut().store(i, 5.0 * t->view().load(i));
  const Out exact = run_ref(in, c, RefPrecision::f64), base = run_ref(in, c, RefPrecision::input);
  EXPECT_LE(max_abs_diff(run_flash(in, c).o.view(), exact.o.view()), 2 * max_abs_diff(base.o.view(), exact.o.view()) + 1e-6);
}

TEST(FlashForward, GroupsLargerThanATileAreSplit) {
  // MQA with 150 query heads: more heads than packed_rows, so a group spans three tiles.
  expect_within_tolerance({1, 150, 1, 3, 40, 16, 16, "causal"});
  expect_within_tolerance({1, 130, 1, 1, 70, 32, 32, "none", DType::bf16});
}

TEST(FlashForward, OddAndEvenSizesEveryPatternAndHeadLayout) {
  const std::vector<int64_t> lens = {1, 3, 17, 64, 97};
  for (const std::string& pattern : kPatterns)
    for (int64_t nq : lens)
      for (int64_t nk : lens) {
        if (pattern.rfind("bigbird", 0) == 0 && nq > nk) continue;
        for (auto [hq, hkv] : {std::pair{2, 2}, std::pair{6, 2}, std::pair{4, 1}})
          expect_within_tolerance({1, hq, hkv, nq, nk, 32, 32, pattern});
      }
}

TEST(FlashForward, HeadDimsIncludingOddAndMla) {
  for (auto [dqk, dv] : {std::pair{59, 59}, std::pair{64, 64}, std::pair{128, 128}, std::pair{256, 256},
                         std::pair{576, 512}, std::pair{24, 40}, std::pair{1, 3}})
    for (const char* pattern : {"none", "causal"}) expect_within_tolerance({1, 4, 2, 17, 97, dqk, dv, pattern});
}

TEST(FlashForward, LongSequence) {
  expect_within_tolerance({1, 2, 1, 1025, 1025, 32, 32, "causal"});
  expect_within_tolerance({1, 1, 1, 64, 1025, 32, 32, "window:100,0"});
  expect_within_tolerance({1, 1, 1, 1025, 1025, 16, 16, "longformer:w=8,global=0+500"});
}

TEST(FlashForward, EveryPatternInEveryDtype) {
  for (const std::string& pattern : kPatterns)
    for (DType t : {DType::bf16, DType::f16})
      for (auto [hq, hkv] : {std::pair{2, 2}, std::pair{6, 2}, std::pair{4, 1}})
        expect_within_tolerance({1, hq, hkv, 29, 70, 32, 32, pattern, t});
}

TEST(FlashForward, LowPrecisionInputs) {
  for (DType t : {DType::bf16, DType::f16})
    for (const char* pattern : {"none", "causal", "window:7,0"}) {
      expect_within_tolerance({2, 4, 2, 33, 97, 64, 64, pattern, t});
      expect_within_tolerance({1, 2, 2, 17, 17, 128, 128, pattern, t});
    }
}

TEST(FlashForward, NativeBf16OddHeadDimsAndTiles) {
  std::printf("native bf16 dot products: %s\n", flash::bf16_ops().available ? "yes" : "no (f32 path)");
  for (auto [dqk, dv] : {std::pair{59, 59}, std::pair{1, 3}, std::pair{576, 512}, std::pair{128, 128}, std::pair{33, 17}})
    for (const char* pattern : {"none", "causal", "longformer:w=4,d=3,global=2"})
      expect_within_tolerance({1, 6, 2, 19, 67, dqk, dv, pattern, DType::bf16, 0.0, true});
}

TEST(FlashForward, ScoreModifiers) {
  for (const char* pattern : {"none", "causal", "window:9,2"}) {
    expect_within_tolerance({1, 4, 2, 33, 40, 32, 32, pattern, DType::f32, 0.0, true});
    expect_within_tolerance({1, 4, 2, 33, 40, 32, 32, pattern, DType::f32, 2.5, false});
    expect_within_tolerance({1, 4, 2, 33, 40, 32, 32, pattern, DType::f32, 1.0, true});
  }
}

TEST(FlashForward, EmptyRowsAndNonFiniteInputs) {
  const Case c{1, 2, 1, 9, 3, 16, 16, "causal"};  // rows 0..5 see no key
  Inputs in = make_inputs(c, 3);
  const Out got = run_flash(in, c);
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ(got.lse.view().get(0, 1, i), -INFINITY);
    EXPECT_EQ(got.o.view().get(0, 1, i, 5), 0.0);
  }
  const Case empty{1, 2, 1, 4, 0, 16, 16, "none"};
  const Out none = run_flash(make_inputs(empty, 3), empty);
  EXPECT_EQ(none.lse.view().get(0, 0, 3), -INFINITY);
  EXPECT_EQ(none.o.view().get(0, 0, 3, 0), 0.0);
  const Case nan_case{1, 1, 1, 5, 5, 8, 8, "none"};
  Inputs nan_in = make_inputs(nan_case, 4);
  nan_in.q.mut().set(NAN, 0, 0, 2, 3);
  const Out poisoned = run_flash(nan_in, nan_case);
  EXPECT_TRUE(std::isnan(poisoned.o.view().get(0, 0, 2, 0)));
  EXPECT_FALSE(std::isnan(poisoned.o.view().get(0, 0, 1, 0)));
}

TEST(FlashForward, SplitKvEqualsOnePass) {
  for (const char* pattern : {"none", "causal", "window:40,0", "longformer:w=16,global=3"}) {
    const Case c{1, 4, 1, 3, 1025, 64, 64, pattern};
    const Inputs in = make_inputs(c, 11);
    flash::FlashConfig one_pass, split;
    one_pass.min_work_items = 1;  // never split
    split.min_work_items = 64;    // 1 item -> 64 chunks
    const Out a = run_flash(in, c, one_pass), b = run_flash(in, c, split);
    EXPECT_LT(max_abs_diff(a.o.view(), b.o.view()), 1e-6) << pattern;
    EXPECT_LT(max_abs_diff(a.lse.view(), b.lse.view()), 1e-5) << pattern;
    expect_within_tolerance(c);
  }
}

TEST(FlashForward, BitwiseIdenticalForAnyThreadCount) {
  const int saved = omp_get_max_threads();
  for (const char* pattern : {"causal", "bigbird:block=16,window=3,global=1,random=2"}) {
    for (auto [nq, dtype] : {std::pair{int64_t{2}, DType::f32}, std::pair{int64_t{300}, DType::f32},
                             std::pair{int64_t{2}, DType::bf16}, std::pair{int64_t{300}, DType::bf16}}) {
      const Case c{2, 4, 2, nq, 300, 32, 32, pattern, dtype};
      const Inputs in = make_inputs(c, 5);
      omp_set_num_threads(1);
      const Out one = run_flash(in, c);
      for (int threads : {2, 3}) {
        omp_set_num_threads(threads);
        const Out many = run_flash(in, c);
        EXPECT_EQ(std::memcmp(one.o.data(), many.o.data(), one.o.nbytes()), 0) << pattern << " threads=" << threads;
        EXPECT_EQ(std::memcmp(one.lse.data(), many.lse.data(), one.lse.nbytes()), 0) << pattern;
      }
    }
  }
  omp_set_num_threads(saved);
}

TEST(FlashForward, EverySimdTargetIncludingTheBaseline) {
  std::vector<std::string> seen;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    seen.push_back(flash::simd_ops().target);
    expect_within_tolerance({1, 4, 2, 37, 70, 40, 24, "causal", DType::f32, 0.0, true});
    expect_within_tolerance({1, 2, 1, 17, 66, 64, 64, "longformer:w=5,d=2,global=1", DType::bf16});
    expect_within_tolerance({1, 2, 2, 9, 33, 16, 16, "window:4,1", DType::f16, 3.0});
  }
  hwy::SetSupportedTargetsForTest(0);
  ASSERT_GE(seen.size(), 2u) << "at least the best target and the baseline";
  EXPECT_TRUE(seen.back() == "EMU128" || seen.back() == "SCALAR") << "the last target is the portable baseline";
  std::string all;
  for (const std::string& s : seen) all += s + " ";
  std::printf("SIMD targets tested: %s\n", all.c_str());
}

// The V scan behind the hidden-NaN guard (flash.hpp any_nonfinite_*): 3 rows of 37 values
// with stride 40 (a full vector and a scalar tail on every target; the padding holds NaN,
// which must not be read). Finite extremes of either sign give false; inf, -inf or NaN at
// the start, in a vector's body or in the tail give true.
TEST(FlashForward, NonFiniteScanEveryTarget) {
  const int64_t rows = 3, dim = 37, stride = 40;
  const std::vector<std::pair<int64_t, int64_t>> spots = {{0, 0}, {1, 16}, {2, 31}, {2, 36}, {1, 33}};
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const flash::SimdOps ops = flash::simd_ops();
    {
      std::vector<float> x(rows * stride, std::numeric_limits<float>::quiet_NaN());
      const float finite[] = {std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(), -0.0f, 1e-40f,
                              -1.5f};
      for (int64_t j = 0; j < rows; ++j)
        for (int64_t c = 0; c < dim; ++c) x[j * stride + c] = finite[(j + c) % 5];
      EXPECT_FALSE(ops.any_nonfinite_f32(x.data(), stride, rows, dim)) << ops.target;
      for (const auto& [j, c] : spots)
        for (float bad : {HUGE_VALF, -HUGE_VALF, -std::numeric_limits<float>::quiet_NaN()}) {
          const float keep = x[j * stride + c];
          x[j * stride + c] = bad;
          EXPECT_TRUE(ops.any_nonfinite_f32(x.data(), stride, rows, dim)) << ops.target << " " << j << " " << c;
          x[j * stride + c] = keep;
        }
    }
    struct Format {
      uint16_t exponent, nan;
      std::vector<uint16_t> finite, bad;
    };
    const Format formats[] = {{0x7F80, 0x7FC0, {0x7F7F, 0xFF7F, 0x8000, 0x0001, 0xBFC0}, {0x7F80, 0xFF80, 0xFFC1}},
                              {0x7C00, 0x7E00, {0x7BFF, 0xFBFF, 0x8000, 0x0001, 0xBE00}, {0x7C00, 0xFC00, 0xFC01}}};
    for (const Format& f : formats) {
      std::vector<uint16_t> x(rows * stride, f.nan);
      for (int64_t j = 0; j < rows; ++j)
        for (int64_t c = 0; c < dim; ++c) x[j * stride + c] = f.finite[(j + c) % 5];
      EXPECT_FALSE(ops.any_nonfinite_16(x.data(), stride, rows, dim, f.exponent)) << ops.target << " " << f.exponent;
      for (const auto& [j, c] : spots)
        for (uint16_t bad : f.bad) {
          const uint16_t keep = x[j * stride + c];
          x[j * stride + c] = bad;
          EXPECT_TRUE(ops.any_nonfinite_16(x.data(), stride, rows, dim, f.exponent))
              << ops.target << " " << f.exponent << " " << j << " " << c;
          x[j * stride + c] = keep;
        }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(FlashForward, StridedBnhdInputsAndBf16Output) {
  const int64_t B = 1, N = 33, H = 4, D = 32;
  const Tensor mem = random_tensor({B, N, H, D}, 9);
  const TensorView bnhd(mem.data(), DType::f32, {B, H, N, D}, {N * H * D, D, H * D, 1});
  AttendOptions opts;
  opts.pattern = Pattern::causal();
  opts.kernel = Kernel::flash;
  const Output got = attend(bnhd, bnhd, bnhd, opts, DType::bf16);
  Tensor want(DType::f64, {B, H, N, D}), lse(DType::f64, {B, H, N});
  attention_reference(bnhd, bnhd, bnhd, opts, want.mut(), lse.mut());
  EXPECT_LT(max_abs_diff(got.o.view(), want.view()), 1e-2);  // bf16 output rounding
  EXPECT_LT(max_abs_diff(got.lse.view(), lse.view()), 1e-5);
}

}  // namespace
}  // namespace attnkit
