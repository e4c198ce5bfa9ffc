// Tests for the reference attention: hand-computed cases, properties (rows of P sum to 1,
// GQA = MHA with repeated K/V, window = full attention on the sliced keys, Longformer
// global rows = full rows), empty rows, modifiers, strided layouts, dtypes and bad input.
#include "attnkit/reference.hpp"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;
using testing::repeat_kv_heads;
using testing::slice_keys;

struct Result {
  Tensor o, lse, probs;
};

Result run_ref(const Tensor& q, const Tensor& k, const Tensor& v, const AttendOptions& opts = {},
               RefPrecision precision = RefPrecision::f64) {
  const AttnShape s = AttnShape::from_views(q.view(), k.view(), v.view());
  Result r{Tensor(DType::f64, {s.batch, s.q_heads, s.q_len, s.d_v}), Tensor(DType::f64, {s.batch, s.q_heads, s.q_len}), {}};
  RefOptions ro;
  ro.precision = precision;
  ro.probs = &r.probs;
  attention_reference(q.view(), k.view(), v.view(), opts, r.o.mut(), r.lse.mut(), ro);
  return r;
}

Tensor from(std::vector<int64_t> shape, std::vector<double> values) {
  Tensor t(DType::f64, std::move(shape));
  for (size_t i = 0; i < values.size(); ++i) t.mut().store(static_cast<int64_t>(i), values[i]);
  return t;
}

TEST(ReferenceAttention, HandComputedTwoKeys) {
  // q = [1, 0]; keys [1, 0] and [0, 1]; scale 1: scores 1 and 0.
  const Tensor q = from({1, 1, 1, 2}, {1, 0});
  const Tensor k = from({1, 1, 2, 2}, {1, 0, 0, 1});
  const Tensor v = from({1, 1, 2, 3}, {1, 2, 3, 4, 5, 6});
  AttendOptions opts;
  opts.scale = 1.0;
  const Result r = run_ref(q, k, v, opts);
  const double e = std::exp(1.0), p0 = e / (e + 1), p1 = 1 / (e + 1);
  EXPECT_NEAR(r.o.view().get(0, 0, 0, 0), p0 * 1 + p1 * 4, 1e-15);
  EXPECT_NEAR(r.o.view().get(0, 0, 0, 2), p0 * 3 + p1 * 6, 1e-15);
  EXPECT_NEAR(r.lse.view().get(0, 0, 0), std::log(e + 1), 1e-15);
  EXPECT_NEAR(r.probs.view().get(0, 0, 0, 0), p0, 1e-15);
}

TEST(ReferenceAttention, DefaultScaleIsInverseSqrtDqk) {
  const Tensor q = from({1, 1, 1, 4}, {1, 1, 1, 1});
  const Tensor k = from({1, 1, 2, 4}, {1, 1, 1, 1, 0, 0, 0, 0});
  const Tensor v = from({1, 1, 2, 1}, {1, 0});
  const Result r = run_ref(q, k, v);  // scores 4 / 2 = 2 and 0
  EXPECT_NEAR(r.o.view().get(0, 0, 0, 0), std::exp(2.0) / (std::exp(2.0) + 1), 1e-15);
}

TEST(ReferenceAttention, CausalFirstRowCopiesFirstValue) {
  const Tensor q = random_tensor({1, 2, 5, 8}, 1), k = random_tensor({1, 2, 5, 8}, 2), v = random_tensor({1, 2, 5, 3}, 3);
  AttendOptions opts;
  opts.pattern = Pattern::causal();
  const Result r = run_ref(q, k, v, opts);
  for (int64_t c = 0; c < 3; ++c) EXPECT_DOUBLE_EQ(r.o.view().get(0, 1, 0, c), v.view().get(0, 1, 0, c));
  double s = 0;
  for (int64_t c = 0; c < 8; ++c) s += q.view().get(0, 1, 0, c) * k.view().get(0, 1, 0, c);
  EXPECT_NEAR(r.lse.view().get(0, 1, 0), s / std::sqrt(8.0), 1e-12);
}

TEST(ReferenceAttention, RowsOfPSumToOneAndRespectThePattern) {
  for (const char* text : {"none", "causal", "window:3,1", "longformer:w=2,d=2,global=0+9", "strided:stride=4",
                           "bigbird:block=4,window=3,global=1,random=1,seed=3"}) {
    const Tensor q = random_tensor({2, 2, 19, 16}, 4), k = random_tensor({2, 2, 19, 16}, 5), v = random_tensor({2, 2, 19, 16}, 6);
    AttendOptions opts;
    opts.pattern = Pattern::parse(text);
    const Result r = run_ref(q, k, v, opts);
    const BoundPattern b = opts.pattern.bind(19, 19);
    for (int64_t i = 0; i < 19; ++i) {
      double sum = 0;
      for (int64_t j = 0; j < 19; ++j) {
        const double p = r.probs.view().get(1, 1, i, j);
        if (!b.allow(i, j)) {
          EXPECT_EQ(p, 0.0) << text;
        }
        sum += p;
      }
      EXPECT_NEAR(sum, 1.0, 1e-12) << text << " row " << i;
    }
  }
}

TEST(ReferenceAttention, GqaEqualsMhaWithRepeatedKv) {
  const int64_t group = 3, hkv = 2;
  const Tensor q = random_tensor({2, hkv * group, 7, 12}, 7);
  const Tensor k = random_tensor({2, hkv, 9, 12}, 8), v = random_tensor({2, hkv, 9, 5}, 9);
  const Tensor k_rep = repeat_kv_heads(k, group), v_rep = repeat_kv_heads(v, group);
  for (const char* text : {"none", "causal", "window:2,0"}) {
    AttendOptions opts;
    opts.pattern = Pattern::parse(text);
    const Result gqa = run_ref(q, k, v, opts), mha = run_ref(q, k_rep, v_rep, opts);
    EXPECT_EQ(max_abs_diff(gqa.o.view(), mha.o.view()), 0.0) << text;
    EXPECT_EQ(max_abs_diff(gqa.lse.view(), mha.lse.view()), 0.0) << text;
  }
}

// MQA (one KV head for every query head) equals MHA over K / V repeated per head, and each
// head equals single-head attention of that head's queries over the one K / V: the values,
// not just the absence of an error, with masks, Nq != Nkv and score modifiers.
TEST(ReferenceAttention, MqaEqualsMhaWithKvRepeatedPerHead) {
  const int64_t heads = 4, nq = 5, nk = 8;
  const Tensor q = random_tensor({2, heads, nq, 6}, 12, DType::f32, 2.0);
  const Tensor k = random_tensor({2, 1, nk, 6}, 10), v = random_tensor({2, 1, nk, 3}, 11);
  const Tensor k_rep = repeat_kv_heads(k, heads), v_rep = repeat_kv_heads(v, heads);
  ASSERT_EQ(k_rep.shape(), (std::vector<int64_t>{2, heads, nk, 6}));
  for (const char* text : {"none", "causal", "window:2,1"})
    for (bool mods : {false, true}) {
      AttendOptions opts;
      opts.pattern = Pattern::parse(text);
      if (mods) {
        opts.softcap = 1.5;
        opts.alibi_slopes = alibi_slopes(heads);
      }
      const Result mqa = run_ref(q, k, v, opts), mha = run_ref(q, k_rep, v_rep, opts);
      EXPECT_EQ(max_abs_diff(mqa.o.view(), mha.o.view()), 0.0) << text << " mods " << mods;
      EXPECT_EQ(max_abs_diff(mqa.lse.view(), mha.lse.view()), 0.0) << text << " mods " << mods;
      // Heads differ (their queries and slopes do): the outputs are not one row repeated.
      EXPECT_GT(std::abs(mqa.o.view().get(0, 0, nq - 1, 0) - mqa.o.view().get(0, 1, nq - 1, 0)), 1e-6) << text;
      for (int64_t h = 0; h < heads; ++h) {
        Tensor qh(DType::f32, {2, 1, nq, 6});
        for (int64_t b = 0; b < 2; ++b)
          for (int64_t i = 0; i < nq; ++i)
            for (int64_t c = 0; c < 6; ++c) qh.mut().set(q.view().get(b, h, i, c), b, 0, i, c);
        AttendOptions one = opts;
        if (mods) one.alibi_slopes = {opts.alibi_slopes[static_cast<size_t>(h)]};
        const Result single = run_ref(qh, k, v, one);
        for (int64_t b = 0; b < 2; ++b)
          for (int64_t i = 0; i < nq; ++i) {
            for (int64_t c = 0; c < 3; ++c)
              EXPECT_EQ(mqa.o.view().get(b, h, i, c), single.o.view().get(b, 0, i, c)) << text << " head " << h;
            EXPECT_EQ(mqa.lse.view().get(b, h, i), single.lse.view().get(b, 0, i)) << text << " head " << h;
          }
      }
    }
}

Tensor slice_row(const Tensor& t, int64_t i) {
  const auto& s = t.shape();
  Tensor out(t.dtype(), {s[0], s[1], 1, s[3]});
  for (int64_t b = 0; b < s[0]; ++b)
    for (int64_t h = 0; h < s[1]; ++h)
      for (int64_t c = 0; c < s[3]; ++c) out.mut().set(t.view().get(b, h, i, c), b, h, 0, c);
  return out;
}

TEST(ReferenceAttention, WindowEqualsFullAttentionOnTheSlicedKeys) {
  const int64_t nq = 11, nk = 17, left = 4, right = 2;  // bottom-right: row i at position i + 6
  const Tensor q = random_tensor({1, 2, nq, 8}, 13), k = random_tensor({1, 2, nk, 8}, 14), v = random_tensor({1, 2, nk, 8}, 15);
  AttendOptions opts;
  opts.pattern = Pattern::window(left, right);
  const Result windowed = run_ref(q, k, v, opts);
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t p = i + nk - nq;
    const int64_t lo = std::max<int64_t>(0, p - left), hi = std::min(nk, p + right + 1);
    const Result full = run_ref(slice_row(q, i), slice_keys(k, lo, hi), slice_keys(v, lo, hi));
    for (int64_t h = 0; h < 2; ++h) {
      for (int64_t c = 0; c < 8; ++c) EXPECT_NEAR(windowed.o.view().get(0, h, i, c), full.o.view().get(0, h, 0, c), 1e-14);
      EXPECT_NEAR(windowed.lse.view().get(0, h, i), full.lse.view().get(0, h, 0), 1e-14);
    }
  }
}

TEST(ReferenceAttention, LongformerGlobalRowsEqualFullAttentionRows) {
  const Tensor q = random_tensor({1, 1, 23, 8}, 16), k = random_tensor({1, 1, 23, 8}, 17), v = random_tensor({1, 1, 23, 8}, 18);
  AttendOptions lf;
  lf.pattern = Pattern::parse("longformer:w=2,d=3,global=0+11");
  const Result sparse = run_ref(q, k, v, lf), full = run_ref(q, k, v);
  for (int64_t row : {0, 11}) {
    for (int64_t c = 0; c < 8; ++c) EXPECT_NEAR(sparse.o.view().get(0, 0, row, c), full.o.view().get(0, 0, row, c), 1e-15);
    EXPECT_NEAR(sparse.lse.view().get(0, 0, row), full.lse.view().get(0, 0, row), 1e-15);
  }
  double diff = 0;
  for (int64_t c = 0; c < 8; ++c) diff += std::abs(sparse.o.view().get(0, 0, 5, c) - full.o.view().get(0, 0, 5, c));
  EXPECT_GT(diff, 1e-6) << "a local row must differ from full attention";
}

TEST(ReferenceAttention, RowsWithNoVisibleKeyGiveZeroAndMinusInfinity) {
  const Tensor q = random_tensor({1, 1, 5, 4}, 19), k = random_tensor({1, 1, 2, 4}, 20), v = random_tensor({1, 1, 2, 4}, 21);
  AttendOptions opts;
  opts.pattern = Pattern::causal();  // rows 0..2 sit before the first key
  const Result r = run_ref(q, k, v, opts);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r.lse.view().get(0, 0, i), -std::numeric_limits<double>::infinity());
    for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(r.o.view().get(0, 0, i, c), 0.0);
  }
  EXPECT_TRUE(std::isfinite(r.lse.view().get(0, 0, 3)));
  const Tensor k0(DType::f32, {1, 1, 0, 4}), v0(DType::f32, {1, 1, 0, 4});
  const Result empty = run_ref(q, k0, v0);
  EXPECT_EQ(empty.lse.view().get(0, 0, 4), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(empty.o.view().get(0, 0, 4, 3), 0.0);
}

TEST(ReferenceAttention, NanAndInfPropagateWithoutCrashing) {
  Tensor q = random_tensor({1, 1, 3, 4}, 22);
  const Tensor k = random_tensor({1, 1, 3, 4}, 23), v = random_tensor({1, 1, 3, 4}, 24);
  q.mut().set(std::nan(""), 0, 0, 1, 2);
  q.mut().set(INFINITY, 0, 0, 2, 0);
  const Result r = run_ref(q, k, v);
  EXPECT_TRUE(std::isnan(r.o.view().get(0, 0, 1, 0)));
  EXPECT_TRUE(std::isnan(r.lse.view().get(0, 0, 1)));
  EXPECT_FALSE(std::isnan(r.o.view().get(0, 0, 0, 0))) << "other rows are unaffected";
}

TEST(ReferenceAttention, SoftcapAndAlibiFollowTheirDefinitions) {
  const Tensor q = random_tensor({1, 2, 4, 4}, 25, DType::f32, 3.0), k = random_tensor({1, 2, 6, 4}, 26, DType::f32, 3.0);
  const Tensor v = random_tensor({1, 2, 6, 4}, 27);
  AttendOptions opts;
  opts.softcap = 0.7;
  opts.alibi_slopes = {0.5, 0.25};
  opts.pattern = Pattern::causal();
  const Result r = run_ref(q, k, v, opts);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t p = i + 2;
      std::vector<double> s;
      for (int64_t j = 0; j <= p; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < 4; ++c) dot += q.view().get(0, h, i, c) * k.view().get(0, h, j, c);
        s.push_back(0.7 * std::tanh(dot / 2.0 / 0.7) - opts.alibi_slopes[h] * double(p - j));
      }
      double z = 0;
      for (double x : s) z += std::exp(x);
      for (int64_t j = 0; j <= p; ++j) EXPECT_NEAR(r.probs.view().get(0, h, i, j), std::exp(s[j]) / z, 1e-14);
      EXPECT_NEAR(r.lse.view().get(0, h, i), std::log(z), 1e-14);
    }
}

TEST(ReferenceAttention, StridedBnhdLayoutMatchesContiguous) {
  const int64_t B = 2, N = 9, H = 4, D = 6;
  const Tensor q = random_tensor({B, H, N, D}, 28), k = random_tensor({B, H, N, D}, 29), v = random_tensor({B, H, N, D}, 30);
  // The same values stored [B, N, H, D].
  auto to_bnhd = [&](const Tensor& t) {
    Tensor m(DType::f32, {B, N, H, D});
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < D; ++c) m.mut().set(t.view().get(b, h, n, c), b, n, h, c);
    return m;
  };
  const Tensor qm = to_bnhd(q), km = to_bnhd(k), vm = to_bnhd(v);
  auto view = [&](const Tensor& m) { return TensorView(m.data(), DType::f32, {B, H, N, D}, {N * H * D, D, H * D, 1}); };
  Tensor o(DType::f64, {B, H, N, D}), lse(DType::f64, {B, H, N});
  AttendOptions opts;
  opts.pattern = Pattern::causal();
  attention_reference(view(qm), view(km), view(vm), opts, o.mut(), lse.mut());
  const Result r = run_ref(q, k, v, opts);
  EXPECT_EQ(max_abs_diff(o.view(), r.o.view()), 0.0);
}

TEST(ReferenceAttention, LowPrecisionInputsAndTheInputPrecisionBaseline) {
  for (DType t : {DType::bf16, DType::f16}) {
    const Tensor q = random_tensor({1, 2, 33, 32}, 31, t), k = random_tensor({1, 2, 33, 32}, 32, t), v = random_tensor({1, 2, 33, 32}, 33, t);
    // f64 on the low-precision values equals f64 on their exact f32 images.
    const Result exact = run_ref(q, k, v), widened = run_ref(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32));
    EXPECT_EQ(max_abs_diff(exact.o.view(), widened.o.view()), 0.0);
    // The input-precision baseline is close but not exact, and its error shrinks with a
    // wider type: this is the yardstick of the kernels' tolerance rule.
    const Result low = run_ref(q, k, v, {}, RefPrecision::input);
    const Result f32 = run_ref(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32), {}, RefPrecision::input);
    const double err_low = max_abs_diff(low.o.view(), exact.o.view());
    const double err_f32 = max_abs_diff(f32.o.view(), exact.o.view());
    EXPECT_GT(err_low, 0.0);
    EXPECT_LT(err_low, t == DType::bf16 ? 2e-2 : 3e-3);
    EXPECT_LT(err_f32, err_low);
    EXPECT_LT(err_f32, 1e-6);
  }
}

TEST(ReferenceAttention, BadInputNamesTheArgument) {
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const Tensor q = random_tensor({1, 3, 4, 8}, 1), k = random_tensor({1, 2, 4, 8}, 2), v = random_tensor({1, 2, 4, 8}, 3);
  EXPECT_NE(message([&] { run_ref(q, k, v); }).find("q_heads (3) must be a multiple of kv_heads (2)"), std::string::npos);
  const Tensor q2 = random_tensor({1, 2, 4, 7}, 1);
  EXPECT_NE(message([&] { run_ref(q2, k, v); }).find("head dims of q and k"), std::string::npos);
  const Tensor v2 = random_tensor({1, 2, 5, 8}, 1);
  EXPECT_NE(message([&] { run_ref(random_tensor({1, 2, 4, 8}, 1), k, v2); }).find("sequence lengths of k and v"), std::string::npos);
  AttendOptions bad;
  bad.alibi_slopes = {1.0};
  EXPECT_NE(message([&] { run_ref(random_tensor({1, 2, 4, 8}, 1), k, v, bad); }).find("alibi_slopes has 1"), std::string::npos);
  bad = {};
  bad.softcap = -1;
  EXPECT_NE(message([&] { run_ref(random_tensor({1, 2, 4, 8}, 1), k, v, bad); }).find("softcap"), std::string::npos);
  const Tensor q3 = random_tensor({1, 2, 4, 8}, 1);
  Tensor o(DType::f32, {1, 2, 4, 7}), lse(DType::f32, {1, 2, 4});
  EXPECT_NE(message([&] { attention_reference(q3.view(), k.view(), v.view(), {}, o.mut(), lse.mut()); }).find("o must have shape"),
            std::string::npos);
  Tensor flat(DType::f32, {8});
  const MutTensorView overlapping(flat.data(), DType::f32, {1, 2, 4, 8}, {0, 0, 0, 1});  // every row aliases
  EXPECT_NE(message([&] { attention_reference(q3.view(), k.view(), v.view(), {}, overlapping, lse.mut()); }).find("overlap"),
            std::string::npos);
  const Tensor q4 = random_tensor({1, 2, 4}, 1);
  EXPECT_NE(message([&] { run_ref(q4, k, v); }).find("q [B, Hq, Nq, Dqk] must have 4 dimensions"), std::string::npos);
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

TEST(Alibi, StandardSlopes) {
  const std::vector<double> s8 = alibi_slopes(8);
  EXPECT_DOUBLE_EQ(s8[0], 0.5);
  EXPECT_DOUBLE_EQ(s8[7], 1.0 / 256);
  const std::vector<double> s12 = alibi_slopes(12);  // 8 slopes of 8, then 1st, 3rd, ... of 16
  ASSERT_EQ(s12.size(), 12u);
  EXPECT_DOUBLE_EQ(s12[8], std::exp2(-0.5));
  EXPECT_DOUBLE_EQ(s12[9], std::exp2(-1.5));
  EXPECT_THROW(alibi_slopes(0), Error);
}

}  // namespace
}  // namespace attnkit
