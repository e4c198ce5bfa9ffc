// Tests for rotary position embeddings (include/attnkit/rope.hpp): hand-computed cases,
// the relative-position property, norm preservation, the rotate_half / interleaved
// permutation, partial rotary, fast path vs the double reference (f32, f64, bf16, f16,
// strided), the table, and bad input. Not for: timing (no timed assertions here).
#include "attnkit/rope.hpp"

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;

constexpr RopeStyle kStyles[] = {RopeStyle::rotate_half, RopeStyle::interleaved};

RopeConfig config(RopeStyle style, int64_t rotary_dim = 0, double base = 10000.0) {
  RopeConfig c;
  c.style = style;
  c.rotary_dim = rotary_dim;
  c.base = base;
  return c;
}

std::vector<int64_t> random_positions(int64_t count, int64_t below, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> u(0, below - 1);
  std::vector<int64_t> p(static_cast<size_t>(count));
  for (auto& x : p) x = u(rng);
  return p;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

// One head vector rotated by the reference in double: [1, 1, 1, D] f64.
std::vector<double> ref_rotated(const RopeConfig& cfg, std::vector<double> v, int64_t pos) {
  rope_reference(cfg, MutTensorView(v.data(), DType::f64, {1, 1, 1, static_cast<int64_t>(v.size())}), &pos);
  return v;
}

// The same vector rotated by the fast row kernel in f32, returned widened.
std::vector<double> fast_rotated(const RopeCache& cache, const std::vector<double>& v, int64_t pos) {
  std::vector<float> f(v.begin(), v.end());
  rope_row(cache, f.data(), static_cast<int64_t>(f.size()), pos);
  return {f.begin(), f.end()};
}

std::vector<double> random_vector(int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(static_cast<size_t>(d));
  for (auto& x : v) x = static_cast<float>(u(rng));  // exactly representable in f32 too
  return v;
}

// Expects `fn` to throw Error whose message contains `needle`.
template <class Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no Error thrown; wanted one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(RopeHand, PositionZeroIsIdentity) {
  for (RopeStyle style : kStyles)
    for (int64_t rot : {0, 2, 6}) {
      const RopeCache cache(config(style, rot), 8, 1);
      const Tensor x = random_tensor({2, 3, 5, 8}, 11);
      Tensor y = x.to(DType::f32), r = x.to(DType::f64);
      const std::vector<int64_t> zeros(2 * 5, 0);
      apply_rope(cache, y.mut(), zeros.data());
      rope_reference(config(style, rot), r.mut(), zeros.data());
      EXPECT_EQ(std::memcmp(x.data(), y.data(), x.nbytes()), 0) << rope_style_name(style);
      EXPECT_EQ(max_abs_diff(r.view(), x.view()), 0.0);
    }
}

TEST(RopeHand, PositionOneByHandD4) {
  // D = 4, base 10000: inv_freq = [10000^0, 10000^(-2/4)] = [1, 0.01], so at pos 1 pair 0
  // turns by 1 rad and pair 1 by 0.01 rad.
  const double c1 = 0.5403023058681398, s1 = 0.8414709848078965;     // cos 1, sin 1
  const double c2 = 0.9999500004166653, s2 = 0.009999833334166664;   // cos 0.01, sin 0.01
  // x = (1, 2, 3, 4). rotate_half pairs (0, 2) and (1, 3):
  //   x'0 = 1 c1 - 3 s1, x'2 = 3 c1 + 1 s1, x'1 = 2 c2 - 4 s2, x'3 = 4 c2 + 2 s2.
  const double want_half[4] = {1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2};
  // interleaved pairs (0, 1) and (2, 3):
  //   x'0 = 1 c1 - 2 s1, x'1 = 1 s1 + 2 c1, x'2 = 3 c2 - 4 s2, x'3 = 3 s2 + 4 c2.
  const double want_inter[4] = {1 * c1 - 2 * s1, 1 * s1 + 2 * c1, 3 * c2 - 4 * s2, 3 * s2 + 4 * c2};
  EXPECT_NEAR(want_half[0], -1.9841106485555495, 1e-15);
  EXPECT_NEAR(want_inter[1], 1.922075596544176, 1e-15);
  for (RopeStyle style : kStyles) {
    const double* want = style == RopeStyle::rotate_half ? want_half : want_inter;
    const std::vector<double> x = {1, 2, 3, 4};
    const std::vector<double> ref = ref_rotated(config(style), x, 1);
    const RopeCache cache(config(style), 4, 2);
    const std::vector<double> fast = fast_rotated(cache, x, 1);
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(ref[static_cast<size_t>(i)], want[i], 1e-15) << rope_style_name(style) << " channel " << i;
      EXPECT_NEAR(fast[static_cast<size_t>(i)], want[i], 2e-6) << rope_style_name(style) << " channel " << i;
    }
    EXPECT_FLOAT_EQ(cache.cos(1)[1], static_cast<float>(c2));
    EXPECT_FLOAT_EQ(cache.sin(1)[0], static_cast<float>(s1));
  }
}

TEST(Rope, DotProductDependsOnlyOnRelativePosition) {
  // Pairs (m, n) grouped by m - n. The positions reach 70000 on purpose: the table's
  // angles are computed in double, so the property holds to 1e-5 there too. The
  // reference's own bound is looser than 1e-14 for the same reason in miniature: an angle
  // near 70000 rad carries ~1e-11 rad of double rounding.
  const std::vector<std::vector<std::pair<int64_t, int64_t>>> groups = {
      {{3, 0}, {10, 7}, {1003, 1000}, {70003, 70000}},
      {{0, 5}, {100, 105}, {65536, 65541}},
      {{0, 0}, {17, 17}, {69999, 69999}},
      {{40000, 1}, {40010, 11}},
  };
  for (RopeStyle style : kStyles)
    for (auto [d, rot] : {std::pair<int64_t, int64_t>{64, 0}, {48, 32}, {6, 2}})
      for (double base : {10000.0, 500000.0}) {
        const RopeConfig cfg = config(style, rot, base);
        const RopeCache cache(cfg, d, 70010);
        const std::vector<double> q = random_vector(d, 21), k = random_vector(d, 22);
        for (const auto& group : groups) {
          const double want_ref = dot(ref_rotated(cfg, q, group[0].first), ref_rotated(cfg, k, group[0].second));
          const double want_fast = dot(fast_rotated(cache, q, group[0].first), fast_rotated(cache, k, group[0].second));
          for (auto [m, n] : group) {
            const std::string where = std::string(rope_style_name(style)) + " d=" + std::to_string(d) +
                                      " m=" + std::to_string(m) + " n=" + std::to_string(n);
            EXPECT_NEAR(dot(ref_rotated(cfg, q, m), ref_rotated(cfg, k, n)), want_ref, 1e-9) << where;
            EXPECT_NEAR(dot(fast_rotated(cache, q, m), fast_rotated(cache, k, n)), want_fast, 1e-5) << where;
            EXPECT_NEAR(want_fast, want_ref, 1e-5) << where;
          }
        }
      }
}

TEST(Rope, PreservesNorm) {
  for (RopeStyle style : kStyles) {
    const int64_t B = 2, H = 3, N = 17, D = 64;
    const std::vector<int64_t> pos = random_positions(B * N, 5000, 31);
    const RopeCache cache(config(style), D, 5000);
    const Tensor x = random_tensor({B, H, N, D}, 32);
    Tensor fast = x.to(DType::f32), ref = x.to(DType::f64);
    apply_rope(cache, fast.mut(), pos.data());
    rope_reference(config(style), ref.mut(), pos.data());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < N; ++n) {
          double n0 = 0, nf = 0, nr = 0;
          for (int64_t c = 0; c < D; ++c) {
            n0 += x.view().get(b, h, n, c) * x.view().get(b, h, n, c);
            nf += fast.view().get(b, h, n, c) * fast.view().get(b, h, n, c);
            nr += ref.view().get(b, h, n, c) * ref.view().get(b, h, n, c);
          }
          EXPECT_NEAR(std::sqrt(nr), std::sqrt(n0), 1e-12 * std::sqrt(n0));
          EXPECT_NEAR(std::sqrt(nf), std::sqrt(n0), 1e-6 * std::sqrt(n0));
        }
  }
}

TEST(Rope, RotateHalfEqualsInterleavedUpToChannelPermutation) {
  // Interleaved channel 2i is rotate_half channel i, 2i + 1 is i + R/2; the tail stays.
  for (auto [d, rot] : {std::pair<int64_t, int64_t>{8, 0}, {64, 0}, {20, 12}}) {
    const int64_t r = rot == 0 ? d : rot, half = r / 2;
    auto to_halves = [&](const std::vector<double>& v) {
      std::vector<double> out = v;
      for (int64_t i = 0; i < half; ++i) {
        out[static_cast<size_t>(i)] = v[static_cast<size_t>(2 * i)];
        out[static_cast<size_t>(i + half)] = v[static_cast<size_t>(2 * i + 1)];
      }
      return out;
    };
    auto to_pairs = [&](const std::vector<double>& v) {
      std::vector<double> out = v;
      for (int64_t i = 0; i < half; ++i) {
        out[static_cast<size_t>(2 * i)] = v[static_cast<size_t>(i)];
        out[static_cast<size_t>(2 * i + 1)] = v[static_cast<size_t>(i + half)];
      }
      return out;
    };
    const RopeConfig inter = config(RopeStyle::interleaved, rot), halves = config(RopeStyle::rotate_half, rot);
    const RopeCache inter_cache(inter, d, 4096), halves_cache(halves, d, 4096);
    for (int64_t pos : {0, 1, 7, 4095}) {
      const std::vector<double> x = random_vector(d, 40 + static_cast<uint64_t>(pos));
      const std::vector<double> want_ref = ref_rotated(inter, x, pos);
      const std::vector<double> got_ref = to_pairs(ref_rotated(halves, to_halves(x), pos));
      const std::vector<double> want_fast = fast_rotated(inter_cache, x, pos);
      const std::vector<double> got_fast = to_pairs(fast_rotated(halves_cache, to_halves(x), pos));
      for (size_t c = 0; c < x.size(); ++c) {
        EXPECT_NEAR(got_ref[c], want_ref[c], 1e-14) << "d=" << d << " pos=" << pos << " channel " << c;
        EXPECT_NEAR(got_fast[c], want_fast[c], 1e-6) << "d=" << d << " pos=" << pos << " channel " << c;
      }
    }
  }
}

TEST(Rope, PartialRotaryLeavesTailUntouched) {
  const int64_t B = 1, H = 2, N = 9, D = 20, R = 8;
  const std::vector<int64_t> pos = random_positions(B * N, 100, 50);
  for (RopeStyle style : kStyles)
    for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
      const RopeCache cache(config(style, R), D, 100);
      // NaN and inf in the tail must come out bit for bit: the tail is never read.
      Tensor x = random_tensor({B, H, N, D}, 51, dt);
      x.mut().set(NAN, 0, 1, 3, R + 2);
      x.mut().set(INFINITY, 0, 0, 4, D - 1);
      Tensor before(dt, {B, H, N, D}), r(dt, {B, H, N, D});
      std::memcpy(before.data(), x.data(), x.nbytes());
      std::memcpy(r.data(), x.data(), x.nbytes());
      apply_rope(cache, x.mut(), pos.data());
      rope_reference(config(style, R), r.mut(), pos.data());
      const size_t e = dtype_size(dt);
      bool rotary_changed = false;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < N; ++n) {
          const size_t row = static_cast<size_t>((h * N + n) * D);
          const auto* a = static_cast<const unsigned char*>(x.data()) + row * e;
          const auto* b = static_cast<const unsigned char*>(before.data()) + row * e;
          const auto* c = static_cast<const unsigned char*>(r.data()) + row * e;
          EXPECT_EQ(std::memcmp(a + R * e, b + R * e, (D - R) * e), 0) << dtype_name(dt) << " h=" << h << " n=" << n;
          EXPECT_EQ(std::memcmp(c + R * e, b + R * e, (D - R) * e), 0) << "reference, " << dtype_name(dt);
          rotary_changed |= std::memcmp(a, b, R * e) != 0;
        }
      EXPECT_TRUE(rotary_changed) << dtype_name(dt);
    }
}

// An "input precision" RoPE as frameworks compute it (HF's Llama): inv_freq, angle,
// cos, sin and the rotation all in f32. The tolerance rule's honest baseline.
void rope_all_f32(const RopeConfig& cfg, const MutTensorView& x, const int64_t* positions) {
  const int64_t d = x.size(3), r = cfg.resolved_rotary_dim(d), half = r / 2;
  for (int64_t b = 0; b < x.size(0); ++b)
    for (int64_t h = 0; h < x.size(1); ++h)
      for (int64_t n = 0; n < x.size(2); ++n)
        for (int64_t i = 0; i < half; ++i) {
          const float inv = 1.0f / std::pow(static_cast<float>(cfg.base), static_cast<float>(2 * i) / static_cast<float>(r));
          const float angle = static_cast<float>(positions[b * x.size(2) + n]) * inv;
          const float c = std::cos(angle), s = std::sin(angle);
          const bool halves = cfg.style == RopeStyle::rotate_half;
          const int64_t j0 = halves ? i : 2 * i, j1 = halves ? i + half : 2 * i + 1;
          const float x0 = static_cast<float>(x.get(b, h, n, j0)), x1 = static_cast<float>(x.get(b, h, n, j1));
          x.set(x0 * c - x1 * s, b, h, n, j0);
          x.set(x1 * c + x0 * s, b, h, n, j1);
        }
}

TEST(Rope, FastPathMatchesReference) {
  struct Case {
    RopeStyle style;
    int64_t d, rot;
    double base;
  };
  const Case cases[] = {
      {RopeStyle::rotate_half, 2, 0, 10000.0},      {RopeStyle::interleaved, 2, 0, 10000.0},
      {RopeStyle::rotate_half, 6, 0, 10000.0},      {RopeStyle::interleaved, 34, 0, 10000.0},
      {RopeStyle::rotate_half, 128, 0, 10000.0},    {RopeStyle::rotate_half, 128, 0, 500000.0},
      {RopeStyle::rotate_half, 128, 0, 1e6},        {RopeStyle::interleaved, 256, 64, 10000.0},  // GPT-J
      {RopeStyle::rotate_half, 96, 24, 10000.0},    // GPT-NeoX-20B
      {RopeStyle::rotate_half, 80, 32, 10000.0},    // phi-2
  };
  const int64_t B = 2, H = 3, N = 17;
  for (const Case& k : cases)
    for (int64_t below : {int64_t{64}, int64_t{131072}}) {
      const RopeConfig cfg = config(k.style, k.rot, k.base);
      const RopeCache cache(cfg, k.d, below);
      const std::vector<int64_t> pos = random_positions(B * N, below, 60 + static_cast<uint64_t>(k.d));
      const Tensor x = random_tensor({B, H, N, k.d}, 61);
      Tensor exact = x.to(DType::f64), fast = x.to(DType::f32), f32_base = x.to(DType::f32);
      rope_reference(cfg, exact.mut(), pos.data());
      apply_rope(cache, fast.mut(), pos.data());
      rope_all_f32(cfg, f32_base.mut(), pos.data());
      const double err = max_abs_diff(fast.view(), exact.view());
      const double base_err = max_abs_diff(f32_base.view(), exact.view());
      const std::string where = std::string(rope_style_name(k.style)) + " d=" + std::to_string(k.d) +
                                " rot=" + std::to_string(k.rot) + " positions<" + std::to_string(below);
      EXPECT_LT(err, 1e-6) << where;
      EXPECT_LE(err, 2 * base_err) << where << " (f32 baseline " << base_err << ")";

      // Other layouts: [B, N, H, D] memory seen as [B, H, N, D], and a channel stride of 2
      // (the gathered f32 path), must give the contiguous result bit for bit.
      const int64_t D = k.d;
      std::vector<float> bnhd(static_cast<size_t>(B * N * H * D)), wide(static_cast<size_t>(B * H * N * D * 2));
      const MutTensorView tv(bnhd.data(), DType::f32, {B, H, N, D}, {N * H * D, D, H * D, 1});
      const MutTensorView sv(wide.data(), DType::f32, {B, H, N, D}, {H * N * D * 2, N * D * 2, D * 2, 2});
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t n = 0; n < N; ++n)
            for (int64_t c = 0; c < D; ++c) {
              tv.set(x.view().get(b, h, n, c), b, h, n, c);
              sv.set(x.view().get(b, h, n, c), b, h, n, c);
            }
      apply_rope(cache, tv, pos.data());
      apply_rope(cache, sv, pos.data());
      EXPECT_EQ(max_abs_diff(tv, fast.view()), 0.0) << where << " [B, N, H, D]";
      EXPECT_EQ(max_abs_diff(sv, fast.view()), 0.0) << where << " channel stride 2";

      Tensor f64 = x.to(DType::f64);
      apply_rope(cache, f64.mut(), pos.data());
      EXPECT_LT(max_abs_diff(f64.view(), exact.view()), 1e-6) << where << " f64 tensor";
    }
}

TEST(Rope, Bf16AndF16InPlace) {
  const int64_t B = 2, H = 2, N = 33, D = 64;
  for (RopeStyle style : kStyles)
    for (DType dt : {DType::bf16, DType::f16}) {
      const RopeConfig cfg = config(style);
      const RopeCache cache(cfg, D, 8192);
      const std::vector<int64_t> pos = random_positions(B * N, 8192, 70);
      Tensor x = random_tensor({B, H, N, D}, 71, dt, 4.0);
      Tensor exact = x.to(DType::f64);
      rope_reference(cfg, exact.mut(), pos.data());
      apply_rope(cache, x.mut(), pos.data());
      // Baseline: the exact result rounded once to the dtype (the best any kernel can do).
      Tensor rounded = exact.to(dt);
      const double err = max_abs_diff(x.view(), exact.view());
      const double base_err = max_abs_diff(rounded.view(), exact.view());
      EXPECT_GT(base_err, 0.0);
      EXPECT_LE(err, 2 * base_err) << dtype_name(dt) << " " << rope_style_name(style);
      int64_t same = 0;
      for (int64_t i = 0; i < x.numel(); ++i) same += x.view().load(i) == rounded.view().load(i);
      EXPECT_GE(same, x.numel() * 99 / 100) << dtype_name(dt) << ": most elements must be the correctly rounded value";
    }
}

TEST(RopeCache, GrowsOnDemandAndStatesItsMemory) {
  for (RopeStyle style : kStyles) {
    RopeCache grown(config(style, 24), 96, 0);
    EXPECT_EQ(grown.bytes(), 0u);
    EXPECT_EQ(grown.rotary_dim(), 24);
    grown.reserve(100);
    grown.reserve(50);  // never shrinks
    EXPECT_EQ(grown.max_pos(), 100);
    grown.reserve(3000);
    EXPECT_EQ(grown.bytes(), size_t{4} * 3000 * 24);
    const RopeCache whole(config(style, 24), 96, 3000);
    for (int64_t p : {0, 1, 99, 100, 2999}) {
      EXPECT_EQ(std::memcmp(grown.cos(p), whole.cos(p), 12 * sizeof(float)), 0) << p;
      EXPECT_EQ(std::memcmp(grown.sin(p), whole.sin(p), 12 * sizeof(float)), 0) << p;
    }
    EXPECT_EQ(whole.cos(0)[5], 1.0f);
    EXPECT_EQ(whole.sin(0)[5], 0.0f);
  }
  const RopeCache full(config(RopeStyle::rotate_half), 128, 8192);
  EXPECT_EQ(full.rotary_dim(), 128);
  EXPECT_EQ(full.bytes(), size_t{4} << 20);  // the 4 MiB stated in the header
}

TEST(Rope, StyleNamesRoundTrip) {
  for (RopeStyle style : kStyles) EXPECT_EQ(parse_rope_style(rope_style_name(style)), style);
  EXPECT_EQ(parse_rope_style("neox"), RopeStyle::rotate_half);
  EXPECT_EQ(parse_rope_style("gptj"), RopeStyle::interleaved);
  expect_error([] { parse_rope_style("complex"); }, "rope style 'complex'");
}

TEST(Rope, EmptyTensorNeedsNoPositions) {
  const RopeCache cache(config(RopeStyle::rotate_half), 8, 4);
  Tensor x(DType::f32, {2, 3, 0, 8});
  apply_rope(cache, x.mut(), nullptr);
  rope_reference(config(RopeStyle::rotate_half), x.mut(), nullptr);
}

TEST(Rope, BadConfigsAndPositionsThrowNamingTheArgument) {
  const RopeConfig ok = config(RopeStyle::rotate_half);
  expect_error([] { RopeCache(config(RopeStyle::rotate_half, 5), 8, 4); }, "rotary_dim (5) must be even");
  expect_error([] { RopeCache(config(RopeStyle::interleaved, -2), 8, 4); }, "rotary_dim (-2) must be > 0");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half, 10), 8, 4); }, "rotary_dim (10) must be <= head_dim (8)");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half), 7, 4); }, "rotary_dim (7) must be even");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half, 0, 0.0), 8, 4); }, "base (0) must be finite and > 0");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half, 0, -1.0), 8, 4); }, "base (-1)");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half, 0, INFINITY), 8, 4); }, "base (inf)");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half, 0, NAN), 8, 4); }, "base (nan)");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half), 0, 4); }, "head_dim (0)");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half), 2048, 4); }, "head_dim (2048)");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half), 8, -1); }, "max_pos (-1)");
  expect_error([] { RopeCache(config(RopeStyle::rotate_half), 8, (int64_t{1} << 31) + 1); }, "max_pos (2147483649)");

  RopeCache cache(ok, 8, 16);
  const Tensor x0 = random_tensor({2, 1, 3, 8}, 80);
  Tensor x = x0.to(DType::f32);
  auto positions_error = [&](std::vector<int64_t> pos, const std::string& needle) {
    expect_error([&] { apply_rope(cache, x.mut(), pos.data()); }, needle);
    expect_error([&] { rope_reference(ok, x.mut(), pos.data()); }, needle);
    // Positions are validated before any element changes.
    EXPECT_EQ(std::memcmp(x.data(), x0.data(), x0.nbytes()), 0) << needle;
  };
  positions_error({0, 1, 2, 3, -1, 5}, "positions[b=1, n=1] (-1) must be >= 0");
  positions_error({0, 1, 2, 3, 4, int64_t{1} << 31}, "positions[b=1, n=2] (2147483648) must be < 2^31");
  expect_error([&] { apply_rope(cache, x.mut(), std::vector<int64_t>{0, 16, 2, 3, 4, 5}.data()); },
               "positions[b=0, n=1] (16) is beyond the RoPE table (max_pos = 16); RopeCache::reserve(17)");
  expect_error([&] { apply_rope(cache, x.mut(), nullptr); }, "positions is null");
  expect_error([&] { rope_reference(ok, x.mut(), nullptr); }, "positions is null");
  EXPECT_EQ(std::memcmp(x.data(), x0.data(), x0.nbytes()), 0);

  std::vector<float> flat(8);
  const std::vector<int64_t> p = {0};
  expect_error([&] { apply_rope(cache, MutTensorView(flat.data(), DType::f32, {8}), p.data()); }, "x [B, H, N, D]");
  expect_error([&] { apply_rope(cache, MutTensorView(flat.data(), DType::f32, {1, 1, 2, 4}), p.data()); },
               "x head dim (D = 4) must equal the RopeCache head_dim (8)");
  expect_error([&] { rope_reference(config(RopeStyle::rotate_half, 6), MutTensorView(flat.data(), DType::f32, {1, 1, 2, 4}), p.data()); },
               "rotary_dim (6) must be <= head_dim (4)");
  expect_error([&] { rope_row(cache, flat.data(), 6, 0); }, "rope_row: d (6) must equal the RopeCache head_dim (8)");
  expect_error([&] { rope_row(cache, flat.data(), 8, 16); }, "rope_row: pos (16) is beyond the RoPE table");
  expect_error([&] { rope_row(cache, flat.data(), 8, -3); }, "rope_row: pos (-3) must be >= 0");
  cache.reserve(17);
  rope_row(cache, flat.data(), 8, 16);  // fine once the table has grown
}

}  // namespace
}  // namespace attnkit
