// Tests for the exact LSE merge: attention over keys split into arbitrary chunks and merged
// equals one pass, for every pattern; empty parts are neutral.
#include "attnkit/merge.hpp"

#include <limits>

#include <gtest/gtest.h>

#include "attnkit/reference.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;
using testing::slice_keys;

TEST(Merge, SplitKvMergedEqualsOnePassForEveryPattern) {
  const int64_t B = 2, Hq = 4, Hkv = 2, Nq = 13, Nk = 29, D = 8;
  const Tensor q = random_tensor({B, Hq, Nq, D}, 1), k = random_tensor({B, Hkv, Nk, D}, 2), v = random_tensor({B, Hkv, Nk, D}, 3);
  for (const char* text : {"none", "causal", "window:5,0", "longformer:w=2,d=2,global=3", "strided:stride=5",
                           "bigbird:block=4,window=3,global=1,random=2,seed=9"}) {
    AttendOptions opts;
    opts.pattern = Pattern::parse(text);
    opts.softcap = 5.0;
    Tensor want_o(DType::f64, {B, Hq, Nq, D}), want_lse(DType::f64, {B, Hq, Nq});
    attention_reference(q.view(), k.view(), v.view(), opts, want_o.mut(), want_lse.mut());
    const BoundPattern whole = opts.pattern.bind(Nq, Nk);
    for (std::vector<int64_t> cuts : {std::vector<int64_t>{0, 29}, {0, 1, 29}, {0, 7, 8, 20, 29}, {0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 29}}) {
      Tensor acc_o(DType::f64, {B, Hq, Nq, D}), acc_lse(DType::f64, {B, Hq, Nq});
      for (int64_t i = 0; i < acc_lse.numel(); ++i) acc_lse.mut().store(i, -std::numeric_limits<double>::infinity());
      for (size_t c = 0; c + 1 < cuts.size(); ++c) {
        const int64_t lo = cuts[c], hi = cuts[c + 1];
        // The chunk sees the pairs the whole pattern allows, with keys shifted by lo.
        AttendOptions part = opts;
        part.pattern = Pattern::predicate([whole, lo](int64_t i, int64_t j) { return whole.allow(i, j + lo); });
        Tensor o(DType::f64, {B, Hq, Nq, D}), lse(DType::f64, {B, Hq, Nq});
        attention_reference(q.view(), slice_keys(k, lo, hi).view(), slice_keys(v, lo, hi).view(), part, o.mut(), lse.mut());
        merge_attention(acc_o.view(), acc_lse.view(), o.view(), lse.view(), acc_o.mut(), acc_lse.mut());
      }
      EXPECT_LT(max_abs_diff(acc_o.view(), want_o.view()), 1e-13) << text << " chunks " << cuts.size() - 1;
      EXPECT_LT(max_abs_diff(acc_lse.view(), want_lse.view()), 1e-13) << text;
    }
  }
}

TEST(Merge, EmptyPartsAreNeutral) {
  const double ninf = -std::numeric_limits<double>::infinity();
  double o[2] = {0.5, -1.0}, lse = 0.3;
  const double o2[2] = {9.0, 9.0};
  merge_row(o, lse, o2, ninf, 2);
  EXPECT_EQ(o[0], 0.5);
  EXPECT_EQ(lse, 0.3);
  double e[2] = {7.0, 7.0}, el = ninf;
  merge_row(e, el, o, lse, 2);
  EXPECT_EQ(e[1], -1.0);
  EXPECT_EQ(el, 0.3);
  double z[2] = {7.0, 7.0}, zl = ninf;
  merge_row(z, zl, o2, ninf, 2);
  EXPECT_EQ(z[0], 0.0);
  EXPECT_EQ(zl, ninf);
}

TEST(Merge, EqualHalvesAverage) {
  double o[1] = {1.0}, lse = std::log(2.0);
  const double o2[1] = {3.0};
  merge_row(o, lse, o2, std::log(2.0), 1);
  EXPECT_DOUBLE_EQ(o[0], 2.0);
  EXPECT_DOUBLE_EQ(lse, std::log(4.0));
}

TEST(Merge, ShapeMismatchIsAnError) {
  Tensor a(DType::f32, {1, 1, 2, 3}), la(DType::f32, {1, 1, 2}), b(DType::f32, {1, 1, 2, 4});
  EXPECT_THROW(merge_attention(a.view(), la.view(), b.view(), la.view(), a.mut(), la.mut()), Error);
}

}  // namespace
}  // namespace attnkit
