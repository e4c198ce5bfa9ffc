// The model's layers: each fast forward and backward against its plain double twin
// (src/ref/layers_ref.hpp), and each twin's backward against central finite differences of
// its own forward, for the loss L = <g, y> with a random g.
#include "model/layers.hpp"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <iterator>
#include <random>
#include <vector>

#include "ref/layers_ref.hpp"

namespace attnkit {
namespace {

using Vec = std::vector<double>;

std::vector<float> random_floats(int64_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(u(rng));
  return v;
}

Vec widen(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

// Worst |a - b| / (1 + |b|).
double max_rel(const std::vector<float>& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / (1 + std::abs(b[i])));
  return worst;
}

// d<g, f(x)>/dx_i by central differences, against `analytic`, for every i.
void expect_matches_finite_differences(const std::function<Vec(const Vec&)>& f, Vec x, const Vec& g,
                                       const Vec& analytic, const char* what) {
  ASSERT_EQ(x.size(), analytic.size());
  const double h = 1e-5;
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    auto loss = [&](double xi) {
      x[i] = xi;
      const Vec y = f(x);
      double l = 0;
      for (size_t j = 0; j < y.size(); ++j) l += g[j] * y[j];
      return l;
    };
    const double fd = (loss(x0 + h) - loss(x0 - h)) / (2 * h);
    x[i] = x0;
    EXPECT_NEAR(analytic[i], fd, 1e-6 * (1 + std::abs(fd))) << what << "[" << i << "]";
  }
}

constexpr int64_t kN = 5, kC = 12;

TEST(ModelLayers, Embedding) {
  const int64_t v = 7;
  const std::vector<int32_t> tokens = {3, 0, 6, 3, 1};
  const std::vector<float> wte = random_floats(v * kC, 1), dout = random_floats(kN * kC, 2);
  std::vector<float> out(kN * kC), dwte(v * kC, 0.0f);
  model::embedding_forward(out.data(), tokens.data(), wte.data(), kN, kC);
  model::embedding_backward(dwte.data(), dout.data(), tokens.data(), kN, kC);
  Vec out_ref(kN * kC), dwte_ref(v * kC, 0.0);
  const Vec wte_d = widen(wte), dout_d = widen(dout);
  ref::embedding_forward(out_ref.data(), tokens.data(), wte_d.data(), kN, kC);
  ref::embedding_backward(dwte_ref.data(), dout_d.data(), tokens.data(), kN, kC);
  EXPECT_EQ(max_rel(out, out_ref), 0.0);
  EXPECT_LE(max_rel(dwte, dwte_ref), 1e-7);  // token 3 appears twice: one f32 sum
  expect_matches_finite_differences(
      [&](const Vec& w) {
        Vec y(kN * kC);
        ref::embedding_forward(y.data(), tokens.data(), w.data(), kN, kC);
        return y;
      },
      wte_d, dout_d, dwte_ref, "dwte");
}

TEST(ModelLayers, RmsNorm) {
  const float eps = 1e-5f;
  const std::vector<float> x = random_floats(kN * kC, 3), w = random_floats(kC, 4), dout = random_floats(kN * kC, 5);
  std::vector<float> out(kN * kC), rstd(kN), dx(kN * kC, 0.0f), dw(kC, 0.0f);
  model::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), kN, kC, eps);
  model::rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), kN, kC);
  const Vec xd = widen(x), wd = widen(w), gd = widen(dout);
  Vec out_ref(kN * kC), rstd_ref(kN), dx_ref(kN * kC, 0.0), dw_ref(kC, 0.0);
  ref::rmsnorm_forward(out_ref.data(), rstd_ref.data(), xd.data(), wd.data(), kN, kC, eps);
  ref::rmsnorm_backward(dx_ref.data(), dw_ref.data(), gd.data(), xd.data(), wd.data(), rstd_ref.data(), kN, kC);
  EXPECT_LE(max_rel(out, out_ref), 1e-6);
  EXPECT_LE(max_rel(dx, dx_ref), 1e-5);
  EXPECT_LE(max_rel(dw, dw_ref), 1e-5);
  auto forward_x = [&](const Vec& xs) {
    Vec y(kN * kC), r(kN);
    ref::rmsnorm_forward(y.data(), r.data(), xs.data(), wd.data(), kN, kC, eps);
    return y;
  };
  auto forward_w = [&](const Vec& ws) {
    Vec y(kN * kC), r(kN);
    ref::rmsnorm_forward(y.data(), r.data(), xd.data(), ws.data(), kN, kC, eps);
    return y;
  };
  expect_matches_finite_differences(forward_x, xd, gd, dx_ref, "dx");
  expect_matches_finite_differences(forward_w, wd, gd, dw_ref, "dw");
}

// The parallel loops' sums over rows (RMSNorm's dw, embedding gradients) are split by
// column, so every thread count gives the same bits.
TEST(ModelLayers, GradientsDoNotDependOnTheThreadCount) {
  const int64_t n = 700, c = 96, vocab = 50;  // n * c over the parallel threshold
  const auto x = random_floats(n * c, 21), w = random_floats(c, 22), g = random_floats(n * c, 23);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) tokens[static_cast<size_t>(i)] = static_cast<int32_t>(i * 7 % vocab);
  const auto run = [&](int threads) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    std::vector<float> out(x.size()), rstd(static_cast<size_t>(n)), dx(x.size()), dw(w.size()), dwte(vocab * c);
    model::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), n, c, 1e-5f);
    model::rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), rstd.data(), n, c);
    model::embedding_backward(dwte.data(), g.data(), tokens.data(), n, c);
    omp_set_num_threads(before);
    dx.insert(dx.end(), dw.begin(), dw.end());
    dx.insert(dx.end(), dwte.begin(), dwte.end());
    return dx;
  };
  const std::vector<float> one = run(1);
  EXPECT_EQ(run(2), one);
  EXPECT_EQ(run(3), one);
}

TEST(ModelLayers, Linear) {
  const int64_t oc = 9;
  const std::vector<float> x = random_floats(kN * kC, 6), w = random_floats(oc * kC, 7),
                           dout = random_floats(kN * oc, 8);
  std::vector<float> out(kN * oc), dx(kN * kC, 0.5f), dw(oc * kC, -0.25f);  // backwards accumulate
  model::linear_forward(out.data(), x.data(), w.data(), kN, kC, oc);
  model::linear_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), kN, kC, oc);
  const Vec xd = widen(x), wd = widen(w), gd = widen(dout);
  Vec out_ref(kN * oc), dx_ref(kN * kC, 0.0), dw_ref(oc * kC, 0.0);
  ref::linear_forward(out_ref.data(), xd.data(), wd.data(), kN, kC, oc);
  ref::linear_backward(dx_ref.data(), dw_ref.data(), gd.data(), xd.data(), wd.data(), kN, kC, oc);
  EXPECT_LE(max_rel(out, out_ref), 1e-6);
  for (double& e : dx_ref) e += 0.5;
  for (double& e : dw_ref) e -= 0.25;
  EXPECT_LE(max_rel(dx, dx_ref), 1e-6);
  EXPECT_LE(max_rel(dw, dw_ref), 1e-6);
  for (double& e : dx_ref) e -= 0.5;
  for (double& e : dw_ref) e += 0.25;
  expect_matches_finite_differences(
      [&](const Vec& xs) {
        Vec y(kN * oc);
        ref::linear_forward(y.data(), xs.data(), wd.data(), kN, kC, oc);
        return y;
      },
      xd, gd, dx_ref, "dx");
  expect_matches_finite_differences(
      [&](const Vec& ws) {
        Vec y(kN * oc);
        ref::linear_forward(y.data(), xd.data(), ws.data(), kN, kC, oc);
        return y;
      },
      wd, gd, dw_ref, "dw");
  // beta = 1 adds to what out holds (the residual stream's form).
  std::vector<float> acc(kN * oc, 1.0f);
  model::linear_forward(acc.data(), x.data(), w.data(), kN, kC, oc, 1.0f);
  for (double& e : out_ref) e += 1.0;
  EXPECT_LE(max_rel(acc, out_ref), 1e-6);
}

// One row (decoding) takes the SIMD matrix-vector path: every row / column remainder of the
// 4-row and vector blocking, beta 0 (ignores NaN in out, as BLAS) and 1.
TEST(ModelLayers, LinearOneRow) {
  for (const int64_t oc : {1, 4, 7, 33}) {
    for (const int64_t c : {1, 15, 16, 37, 128}) {
      const std::vector<float> x = random_floats(c, 30 + c), w = random_floats(oc * c, 31 + oc);
      Vec want(static_cast<size_t>(oc));
      const Vec xd = widen(x), wd = widen(w);
      ref::linear_forward(want.data(), xd.data(), wd.data(), 1, c, oc);
      std::vector<float> out(static_cast<size_t>(oc), std::nanf(""));
      model::linear_forward(out.data(), x.data(), w.data(), 1, c, oc);
      EXPECT_LE(max_rel(out, want), 1e-6) << oc << "x" << c;
      std::vector<float> acc(static_cast<size_t>(oc), 2.0f);
      model::linear_forward(acc.data(), x.data(), w.data(), 1, c, oc, 1.0f);
      for (double& e : want) e += 2.0;
      EXPECT_LE(max_rel(acc, want), 1e-6) << oc << "x" << c;
    }
  }
}

TEST(ModelLayers, SwiGlu) {
  const std::vector<float> gate = random_floats(kN * kC, 9, 4.0), up = random_floats(kN * kC, 10),
                           dout = random_floats(kN * kC, 11);
  std::vector<float> out(kN * kC), dgate(kN * kC), dup(kN * kC);
  model::swiglu_forward(out.data(), gate.data(), up.data(), kN, kC);
  model::swiglu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), kN, kC);
  const Vec gd = widen(gate), ud = widen(up), od = widen(dout);
  Vec out_ref(kN * kC), dgate_ref(kN * kC), dup_ref(kN * kC);
  ref::swiglu_forward(out_ref.data(), gd.data(), ud.data(), kN, kC);
  ref::swiglu_backward(dgate_ref.data(), dup_ref.data(), od.data(), gd.data(), ud.data(), kN, kC);
  EXPECT_LE(max_rel(out, out_ref), 1e-6);
  EXPECT_LE(max_rel(dgate, dgate_ref), 1e-6);
  EXPECT_LE(max_rel(dup, dup_ref), 1e-6);
  expect_matches_finite_differences(
      [&](const Vec& g) {
        Vec y(kN * kC);
        ref::swiglu_forward(y.data(), g.data(), ud.data(), kN, kC);
        return y;
      },
      gd, od, dgate_ref, "dgate");
  expect_matches_finite_differences(
      [&](const Vec& u) {
        Vec y(kN * kC);
        ref::swiglu_forward(y.data(), gd.data(), u.data(), kN, kC);
        return y;
      },
      ud, od, dup_ref, "dup");
}

// The SIMD gate over a range past the parallel threshold (ending in a partial vector),
// with gates where e^-g under- or overflows f32 and a NaN: each element as the oracle's,
// the same on any thread count.
TEST(ModelLayers, SwiGluLargeAndExtremeGates) {
  const int64_t n = 301, h = 129;
  std::vector<float> gate = random_floats(n * h, 31, 12.0);
  const std::vector<float> up = random_floats(n * h, 32), dout = random_floats(n * h, 33);
  const float extremes[] = {-1000.0f, -100.0f, -88.5f, -87.0f, 87.0f, 88.5f, 100.0f, 1000.0f, 0.0f, -0.0f};
  for (size_t k = 0; k < std::size(extremes); ++k) gate[k * 97] = extremes[k];
  gate.back() = std::nanf("");
  const auto run = [&](int threads) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    std::vector<float> out(gate.size()), dgate(gate.size()), dup(gate.size());
    model::swiglu_forward(out.data(), gate.data(), up.data(), n, h);
    model::swiglu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), n, h);
    omp_set_num_threads(before);
    out.insert(out.end(), dgate.begin(), dgate.end());
    out.insert(out.end(), dup.begin(), dup.end());
    return out;
  };
  const std::vector<float> got = run(1);
  const Vec gd = widen(gate), ud = widen(up), od = widen(dout);
  const auto count = static_cast<size_t>(n * h);
  Vec want(3 * count);
  ref::swiglu_forward(want.data(), gd.data(), ud.data(), n, h);
  ref::swiglu_backward(want.data() + count, want.data() + 2 * count, od.data(), gd.data(), ud.data(), n, h);
  for (size_t part = 0; part < 3; ++part) {
    for (size_t i = 0; i + 1 < count; ++i) {
      const double g = got[part * count + i], w = want[part * count + i];
      ASSERT_TRUE(std::isfinite(g)) << part << " " << i << " gate " << gate[i];
      ASSERT_NEAR(g, w, 1e-6 * (1.0 + std::abs(w))) << part << " " << i << " gate " << gate[i];
    }
    EXPECT_TRUE(std::isnan(got[part * count + count - 1])) << part;
  }
  EXPECT_EQ(std::memcmp(run(2).data(), got.data(), got.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(run(3).data(), got.data(), got.size() * sizeof(float)), 0);
}

TEST(ModelLayers, RopeBothStylesAndPartialRotary) {
  const int64_t heads = 3, d = 8;
  const std::vector<int64_t> pos = {0, 1, 7, 100, 4095};
  for (RopeStyle style : {RopeStyle::rotate_half, RopeStyle::interleaved})
    for (int64_t rotary : {int64_t{0}, int64_t{4}}) {
      RopeConfig cfg;
      cfg.style = style, cfg.rotary_dim = rotary, cfg.base = 500.0;
      const RopeCache cache(cfg, d, 4096);
      const std::vector<float> x = random_floats(kN * heads * d, 12), dout = random_floats(kN * heads * d, 13);
      std::vector<float> y = x, dx = dout;
      model::rope_forward(cache, y.data(), pos.data(), kN, heads);
      model::rope_backward(cache, dx.data(), pos.data(), kN, heads);
      Vec y_ref = widen(x), dx_ref = widen(dout);
      ref::rope_forward(cfg, d, y_ref.data(), pos.data(), kN, heads);
      ref::rope_backward(cfg, d, dx_ref.data(), pos.data(), kN, heads);
      EXPECT_LE(max_rel(y, y_ref), 1e-6) << rope_style_name(style) << " R=" << rotary;
      EXPECT_LE(max_rel(dx, dx_ref), 1e-6) << rope_style_name(style) << " R=" << rotary;
      expect_matches_finite_differences(
          [&](const Vec& xs) {
            Vec out = xs;
            ref::rope_forward(cfg, d, out.data(), pos.data(), kN, heads);
            return out;
          },
          widen(x), widen(dout), dx_ref, "dx");
    }
}

TEST(ModelLayers, CrossEntropy) {
  const int64_t v = 11;
  const std::vector<int32_t> targets = {0, 10, 4, 4, 7};
  const std::vector<float> logits = random_floats(kN * v, 14, 6.0), dloss = random_floats(kN, 15);
  std::vector<float> losses(kN), probs(kN * v), dlogits(kN * v);
  model::crossentropy_forward(losses.data(), probs.data(), logits.data(), targets.data(), kN, v);
  model::crossentropy_backward(dlogits.data(), probs.data(), dloss.data(), targets.data(), kN, v);
  const Vec zd = widen(logits), gd = widen(dloss);
  Vec losses_ref(kN), probs_ref(kN * v), dlogits_ref(kN * v);
  ref::crossentropy_forward(losses_ref.data(), probs_ref.data(), zd.data(), targets.data(), kN, v);
  ref::crossentropy_backward(dlogits_ref.data(), probs_ref.data(), gd.data(), targets.data(), kN, v);
  EXPECT_LE(max_rel(losses, losses_ref), 1e-6);
  EXPECT_LE(max_rel(dlogits, dlogits_ref), 1e-6);
  expect_matches_finite_differences(
      [&](const Vec& z) {
        Vec l(kN), p(kN * v);
        ref::crossentropy_forward(l.data(), p.data(), z.data(), targets.data(), kN, v);
        return l;
      },
      zd, gd, dlogits_ref, "dlogits");
  // Large logits: the fast form subtracts the row's max, so nothing overflows.
  std::vector<float> big(v, 0.0f);
  big[3] = 1000.0f;
  float loss = 0, p_big[11];
  const int32_t t = 3;
  model::crossentropy_forward(&loss, p_big, big.data(), &t, 1, v);
  EXPECT_NEAR(loss, 0.0f, 1e-6);
}

}  // namespace
}  // namespace attnkit
