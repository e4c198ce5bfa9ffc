// Tests of MLA (mla.hpp): both forms against the f64 definition (mla_reference) under the
// tolerance rule, naive = absorbed forward and backward, the backward against the reference
// gradients and those against finite differences, the latent cache's bytes against kv_size
// exactly and V as a view of K, decode step by step (f32 and bf16 caches) against the
// full-sequence definition, the decode kernel against attention_reference over the cache's
// views, bitwise equality across thread counts, and bad inputs.
//
// Tolerances (ARCHITECTURE.md's rule): a fast result may differ from the f64 oracle by twice
// the error of the same definition computed in the input precision (mla_reference with
// RefPrecision::input), plus a small slack where that baseline happens to be exact.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/attention.hpp"
#include "attnkit/kv_size.hpp"
#include "attnkit/mla.hpp"
#include "attnkit/reference.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;
using testing::two_x_bound;

// Small, odd sizes with DeepSeek-V2's proportions (d_c > d_nope = d_v, d_r < d_nope).
MlaConfig small_config() {
  MlaConfig c;
  c.heads = 3;
  c.d_model = 24;
  c.d_c = 20;
  c.d_r = 8;
  c.d_nope = 12;
  c.d_v = 10;
  return c;
}

// Weights scaled by 1/sqrt(fan-in) so scores stay O(1) and the softmax is not saturated.
struct Model {
  Tensor w_q, w_dkv, w_kr, w_uk, w_uv;
  Model(const MlaConfig& c, uint64_t seed, DType t = DType::f32)
      : w_q(random_tensor({c.d_model, c.heads, c.d_qk()}, seed, t, 2 / std::sqrt(double(c.d_model)))),
        w_dkv(random_tensor({c.d_model, c.d_c}, seed + 1, t, 1 / std::sqrt(double(c.d_model)))),
        w_kr(random_tensor({c.d_model, c.d_r}, seed + 2, t, 2 / std::sqrt(double(c.d_model)))),
        w_uk(random_tensor({c.heads, c.d_nope, c.d_c}, seed + 3, t, 2 / std::sqrt(double(c.d_c)))),
        w_uv(random_tensor({c.heads, c.d_v, c.d_c}, seed + 4, t, 1 / std::sqrt(double(c.d_c)))) {}
  MlaWeights views() const { return {w_q.view(), w_dkv.view(), w_kr.view(), w_uk.view(), w_uv.view()}; }
};

Tensor run_forward(const MlaConfig& c, const Model& m, const Tensor& x, MlaForm form, const Pattern& p,
                   const int64_t* pos = nullptr) {
  Tensor out(DType::f32, {x.shape()[0], x.shape()[1], c.heads, c.d_v});
  mla_forward(c, m.views(), x.view(), pos, MlaOptions{form, p}, out.mut());
  return out;
}

Tensor run_reference(const MlaConfig& c, const Model& m, const Tensor& x, const Pattern& p, MlaRefOptions ref = {},
                     const int64_t* pos = nullptr) {
  Tensor out(DType::f64, {x.shape()[0], x.shape()[1], c.heads, c.d_v});
  mla_reference(c, m.views(), x.view(), pos, p, out.mut(), ref);
  return out;
}

// The tolerance rule's bound for outputs of this input: 2 x the input-precision baseline's
// error against the f64 oracle, + slack.
double forward_bound(const MlaConfig& c, const Model& m, const Tensor& x, const Pattern& p, const Tensor& exact,
                     DType latent = DType::f64, const int64_t* pos = nullptr) {
  const Tensor base = run_reference(c, m, x, p, {RefPrecision::input, latent}, pos);
  return two_x_bound(base.view(), exact.view(), 1e-7);
}

template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no Error; expected one naming " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Mla, BothFormsMatchTheDefinition) {
  for (DType t : {DType::f32, DType::bf16})
    for (const char* pattern : {"none", "causal", "window:5,0"})
      for (RopeStyle style : {RopeStyle::interleaved, RopeStyle::rotate_half}) {
        MlaConfig c = small_config();
        c.rope.style = style;
        const Model m(c, 11, t);
        const Tensor x = random_tensor({2, 37, c.d_model}, 5, t);
        const Pattern p = Pattern::parse(pattern);
        const Tensor exact = run_reference(c, m, x, p);
        const double bound = forward_bound(c, m, x, p, exact);
        for (MlaForm form : {MlaForm::naive, MlaForm::absorbed}) {
          const Tensor out = run_forward(c, m, x, form, p);
          EXPECT_LE(max_abs_diff(out.view(), exact.view()), bound)
              << mla_form_name(form) << " " << dtype_name(t) << " " << pattern << " " << rope_style_name(style);
        }
      }
}

TEST(Mla, NaiveEqualsAbsorbedWithPositionsAndScale) {
  MlaConfig c = small_config();
  c.heads = 4;
  c.d_c = 64;
  c.d_r = 16;
  c.d_nope = 32;
  c.d_v = 32;
  c.d_model = 48;
  c.scale = 0.3;
  c.rope.base = 500000;
  const Model m(c, 3);
  const int64_t B = 2, N = 65;
  const Tensor x = random_tensor({B, N, c.d_model}, 9);
  std::vector<int64_t> pos(static_cast<size_t>(B * N));
  for (int64_t i = 0; i < B * N; ++i) pos[static_cast<size_t>(i)] = 1000 * (i / N) + 7 * (i % N) + 3;
  const Pattern p = Pattern::causal();
  const Tensor naive = run_forward(c, m, x, MlaForm::naive, p, pos.data());
  const Tensor absorbed = run_forward(c, m, x, MlaForm::absorbed, p, pos.data());
  const Tensor exact = run_reference(c, m, x, p, {}, pos.data());
  const double bound = forward_bound(c, m, x, p, exact, DType::f64, pos.data());
  EXPECT_LE(max_abs_diff(naive.view(), exact.view()), bound);
  EXPECT_LE(max_abs_diff(absorbed.view(), exact.view()), bound);
  EXPECT_LE(max_abs_diff(naive.view(), absorbed.view()), 2 * bound);
  // Positions matter: the same inputs at positions 0..N-1 give other outputs.
  EXPECT_GT(max_abs_diff(run_forward(c, m, x, MlaForm::absorbed, p).view(), absorbed.view()), 1e-3);
}

TEST(Mla, OutputAnyDtypeAndStrides) {
  const MlaConfig c = small_config();
  const Model m(c, 21);
  const Tensor x = random_tensor({1, 9, c.d_model}, 2);
  const Tensor want = run_forward(c, m, x, MlaForm::absorbed, Pattern::causal());
  // out as [B, N, H, d_v] over [B, H, N, d_v] memory, in f64.
  Tensor mem(DType::f64, {1, c.heads, 9, c.d_v});
  const MutTensorView out(mem.data(), DType::f64, {1, 9, c.heads, c.d_v},
                          {9 * c.heads * c.d_v, c.d_v, 9 * c.d_v, 1});
  mla_forward(c, m.views(), x.view(), nullptr, MlaOptions{MlaForm::absorbed, Pattern::causal()}, out);
  EXPECT_EQ(max_abs_diff(out, want.view()), 0.0);
}

// ---- Backward ----------------------------------------------------------------------------

double loss(const MlaConfig& c, const MlaWeights& w, const Tensor& x, const Pattern& p, const Tensor& d_out) {
  Tensor out(DType::f64, {x.shape()[0], x.shape()[1], c.heads, c.d_v});
  mla_reference(c, w, x.view(), nullptr, p, out.mut());
  double sum = 0;
  for (int64_t i = 0; i < out.numel(); ++i) sum += out.view().load(i) * d_out.view().load(i);
  return sum;
}

TEST(Mla, ReferenceGradientsMatchFiniteDifferences) {
  MlaConfig c;
  c.heads = 2, c.d_model = 5, c.d_c = 3, c.d_r = 2, c.d_nope = 2, c.d_v = 3;
  const Model m(c, 31, DType::f64);
  Tensor x = random_tensor({2, 4, c.d_model}, 7, DType::f64);
  const Tensor d_out = random_tensor({2, 4, c.heads, c.d_v}, 8, DType::f64);
  for (const char* pattern : {"causal", "none"}) {
    const Pattern p = Pattern::parse(pattern);
    const MlaGradients g = mla_backward_reference(c, m.views(), x.view(), nullptr, p, d_out.view());
    Model probe(c, 31, DType::f64);
    const auto check_param = [&](Tensor& param, const Tensor& grad, const char* name) {
      const MutTensorView v = param.mut();
      for (int64_t i = 0; i < param.numel(); ++i) {
        const double keep = v.load(i), h = 1e-6;
        v.store(i, keep + h);
        const double up = loss(c, probe.views(), x, p, d_out);
        v.store(i, keep - h);
        const double down = loss(c, probe.views(), x, p, d_out);
        v.store(i, keep);
        EXPECT_NEAR(grad.view().load(i), (up - down) / (2 * h), 1e-7) << name << "[" << i << "] " << pattern;
      }
    };
    check_param(probe.w_q, g.dw_q, "dw_q");
    check_param(probe.w_dkv, g.dw_dkv, "dw_dkv");
    check_param(probe.w_kr, g.dw_kr, "dw_kr");
    check_param(probe.w_uk, g.dw_uk, "dw_uk");
    check_param(probe.w_uv, g.dw_uv, "dw_uv");
    check_param(x, g.dx, "dx");
  }
}

TEST(Mla, BackwardBothFormsMatchTheReference) {
  for (const char* pattern : {"causal", "none"}) {
    const MlaConfig c = small_config();
    const Model m(c, 41);
    const Tensor x = random_tensor({2, 23, c.d_model}, 42);
    const Tensor d_out = random_tensor({2, 23, c.heads, c.d_v}, 43);
    const Pattern p = Pattern::parse(pattern);
    const MlaGradients exact = mla_backward_reference(c, m.views(), x.view(), nullptr, p, d_out.view());
    const MlaGradients base =
        mla_backward_reference(c, m.views(), x.view(), nullptr, p, d_out.view(), RefPrecision::input);
    MlaGradients forms[2];
    for (MlaForm form : {MlaForm::naive, MlaForm::absorbed}) {
      MlaGradients& g = forms[static_cast<int>(form)];
      g = mla_backward(c, m.views(), x.view(), nullptr, MlaOptions{form, p}, d_out.view());
      const auto expect = [&](const Tensor& got, const Tensor& want, const Tensor& baseline, const char* name) {
        EXPECT_LE(max_abs_diff(got.view(), want.view()), two_x_bound(baseline.view(), want.view(), 1e-7))
            << name << " " << mla_form_name(form) << " " << pattern;
      };
      expect(g.dx, exact.dx, base.dx, "dx");
      expect(g.dw_q, exact.dw_q, base.dw_q, "dw_q");
      expect(g.dw_dkv, exact.dw_dkv, base.dw_dkv, "dw_dkv");
      expect(g.dw_kr, exact.dw_kr, base.dw_kr, "dw_kr");
      expect(g.dw_uk, exact.dw_uk, base.dw_uk, "dw_uk");
      expect(g.dw_uv, exact.dw_uv, base.dw_uv, "dw_uv");
    }
    // naive = absorbed, within the sum of their two bounds (as in the forward test)
    const auto both = [&](const Tensor& a, const Tensor& b, const Tensor& e, const Tensor& bl, const char* name) {
      EXPECT_LE(max_abs_diff(a.view(), b.view()), 2 * two_x_bound(bl.view(), e.view(), 1e-7)) << name;
    };
    both(forms[0].dx, forms[1].dx, exact.dx, base.dx, "dx naive vs absorbed");
    both(forms[0].dw_uk, forms[1].dw_uk, exact.dw_uk, base.dw_uk, "dw_uk naive vs absorbed");
    both(forms[0].dw_uv, forms[1].dw_uv, exact.dw_uv, base.dw_uv, "dw_uv naive vs absorbed");
  }
}

// ---- The latent cache --------------------------------------------------------------------

TEST(MlaCache, BytesEqualKvSizeExactly) {
  for (KvStorage storage : {KvStorage::f32, KvStorage::bf16})
    for (int64_t max_tokens : {int64_t{0}, int64_t{100}}) {
      MlaCacheConfig cc;
      cc.layers = 3;
      cc.sequences = 2;
      cc.d_c = 512;
      cc.d_r = 64;
      cc.storage = storage;
      cc.max_tokens = max_tokens;
      MlaCache cache(cc);
      const Tensor rows0 = random_tensor({1, cc.width()}, 1);
      for (int64_t step = 1; step <= 70; ++step)
        for (int64_t s = 0; s < cc.sequences; ++s) {
          cache.append(s, 1);
          for (int64_t l = 0; l < cc.layers; ++l) cache.store(s, l, rows0.view());
          if (s == cc.sequences - 1) {
            const int64_t cap = cache.capacity(0);
            ASSERT_EQ(cache.capacity(1), cap);
            const KvSize size = kv_size(cache.kv_config(cap));
            EXPECT_EQ(cache.bytes_allocated(), size.all.total()) << step;
            EXPECT_EQ(size.all.v, 0);  // no V stream: V is re-derived from the latent
            EXPECT_EQ(cache.bytes_allocated(),
                      cc.layers * cc.sequences * cap * cc.width() * (storage == KvStorage::f32 ? 4 : 2));
          }
        }
      EXPECT_EQ(cache.capacity(0), max_tokens > 0 ? max_tokens : 128);  // 16 doubled to hold 70
    }
}

TEST(MlaCache, ValuesAreAViewOfTheKeys) {
  MlaCacheConfig cc;
  cc.d_c = 8;
  cc.d_r = 4;
  cc.storage = KvStorage::f32;
  cc.max_tokens = 10;
  MlaCache cache(cc);
  const int64_t bytes_before = cache.bytes_allocated();
  cache.append(0, 5);
  const Tensor rows = random_tensor({5, 12}, 3);
  cache.store(0, 0, rows.view());
  const TensorView k = cache.keys(0, 0), v = cache.values(0, 0);
  EXPECT_EQ(k.data(), v.data());  // the same memory
  EXPECT_EQ(v.stride(2), cc.width());
  EXPECT_EQ(v.size(3), cc.d_c);
  EXPECT_EQ(cache.bytes_allocated(), bytes_before);  // reading V allocated nothing
  for (int64_t j = 0; j < 5; ++j)
    for (int64_t c = 0; c < cc.d_c; ++c) {
      EXPECT_EQ(v.get(0, 0, j, c), rows.view().get(j, c));
      EXPECT_EQ(&static_cast<const float*>(v.data())[v.offset(0, 0, j, c)],
                &static_cast<const float*>(k.data())[k.offset(0, 0, j, c)]);
    }
}

// ---- Decode ------------------------------------------------------------------------------

// Decodes x [1, N, d_model] into a cache in steps of `chunk` tokens with mla_decode; returns
// out [1, N, H, d_v].
Tensor decode_all(const MlaConfig& c, const Model& m, const Tensor& x, KvStorage storage, int64_t chunk) {
  const int64_t N = x.shape()[1];
  MlaCacheConfig cc;
  cc.layers = 2;  // decode writes layer 1; layer 0 holds other rows
  cc.d_c = c.d_c;
  cc.d_r = c.d_r;
  cc.storage = storage;
  MlaCache cache(cc);
  Tensor out(DType::f32, {1, N, c.heads, c.d_v});
  const Tensor other = random_tensor({N, c.latent_width()}, 99);
  for (int64_t t0 = 0; t0 < N; t0 += chunk) {
    const int64_t t = std::min(chunk, N - t0);
    cache.append(0, t);
    cache.store(0, 0, TensorView(static_cast<const float*>(other.data()) + t0 * c.latent_width(), DType::f32,
                                 {t, c.latent_width()}));
    const TensorView xs(static_cast<const float*>(x.data()) + t0 * c.d_model, DType::f32, {t, c.d_model});
    const MutTensorView os(static_cast<float*>(out.data()) + t0 * c.heads * c.d_v, DType::f32, {t, c.heads, c.d_v});
    mla_decode(c, m.views(), cache, 1, 0, xs, os);
  }
  return out;
}

TEST(MlaDecode, StepByStepEqualsTheCausalForward) {
  const MlaConfig c = small_config();
  const Model m(c, 51);
  const Tensor x = random_tensor({1, 300, c.d_model}, 52);  // 3 key blocks, the last partial
  const Pattern causal = Pattern::causal();
  for (KvStorage storage : {KvStorage::f32, KvStorage::bf16}) {
    // The cache rounds the latent to its storage type; the definition with that rounding is
    // the oracle.
    const DType latent = storage == KvStorage::f32 ? DType::f64 : DType::bf16;
    const Tensor exact = run_reference(c, m, x, causal, {RefPrecision::f64, latent});
    const double bound = forward_bound(c, m, x, causal, exact, latent);
    for (int64_t chunk : {1, 7}) {
      const Tensor dec = decode_all(c, m, x, storage, chunk);
      EXPECT_LE(max_abs_diff(dec.view(), exact.view()), bound) << kv_storage_name(storage) << " chunk " << chunk;
    }
    if (storage == KvStorage::f32) {  // and the full-sequence absorbed form agrees with both
      const Tensor full = run_forward(c, m, x, MlaForm::absorbed, causal);
      EXPECT_LE(max_abs_diff(full.view(), exact.view()), bound);
    }
  }
}

// mla_decode_attention over the cache equals attention_reference (f64) on the cache's own
// K / V views, MQA with bottom-right causal rows; H = 130 spans two row tiles.
TEST(MlaDecode, KernelMatchesAttentionOverTheCacheViews) {
  for (KvStorage storage : {KvStorage::f32, KvStorage::bf16}) {
    MlaCacheConfig cc;
    cc.d_c = 40;
    cc.d_r = 8;
    cc.storage = storage;
    MlaCache cache(cc);
    const int64_t n = 1000, nq = 3, H = 130, W = cc.width();
    cache.append(0, n);
    cache.store(0, 0, random_tensor({n, W}, 61).view());
    const Tensor q = random_tensor({nq, H, W}, 62, DType::f32, 0.5);
    const double scale = 0.2;
    Tensor o(DType::f32, {nq, H, cc.d_c}), lse(DType::f32, {nq, H});
    mla_decode_attention(cache, 0, 0, q.view(), scale, o.mut(), lse.mut());
    // The same data as attend()'s layout: q [1, H, Nq, W] over [Nq][H][W] memory.
    const TensorView q4(q.data(), DType::f32, {1, H, nq, W}, {nq * H * W, W, H * W, 1});
    AttendOptions opts;
    opts.pattern = Pattern::causal();
    opts.scale = scale;
    const TensorView k = cache.keys(0, 0), v = cache.values(0, 0);
    const testing::RefResult exact = testing::reference_run(q4, k, v, opts);
    const testing::RefResult base = testing::reference_run(q4, k, v, opts, RefPrecision::input);
    const TensorView o4(o.data(), DType::f32, {1, H, nq, cc.d_c}, {nq * H * cc.d_c, cc.d_c, H * cc.d_c, 1});
    const TensorView lse3(lse.data(), DType::f32, {1, H, nq}, {nq * H, 1, H});
    EXPECT_LE(max_abs_diff(o4, exact.o.view()), two_x_bound(base.o.view(), exact.o.view(), 1e-7))
        << kv_storage_name(storage);
    EXPECT_LE(max_abs_diff(lse3, exact.lse.view()), two_x_bound(base.lse.view(), exact.lse.view(), 1e-6))
        << kv_storage_name(storage);
  }
}

TEST(MlaDecode, BitwiseIdenticalAcrossThreadCounts) {
  const int before = omp_get_max_threads();
  MlaCacheConfig cc;
  cc.d_c = 64;
  cc.d_r = 16;
  MlaCache cache(cc);
  const int64_t n = 5000, H = 16;
  cache.append(0, n);
  cache.store(0, 0, random_tensor({n, cc.width()}, 71).view());
  const Tensor q = random_tensor({2, H, cc.width()}, 72);
  const MlaConfig c = small_config();
  const Model m(c, 73);
  const Tensor x = random_tensor({2, 70, c.d_model}, 74);
  const Tensor d_out = random_tensor({2, 70, c.heads, c.d_v}, 75);
  std::vector<Tensor> outs;
  std::vector<MlaGradients> grads;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    Tensor o(DType::f32, {2, H, cc.d_c});
    mla_decode_attention(cache, 0, 0, q.view(), 0.1, o.mut());
    outs.push_back(std::move(o));
    outs.push_back(run_forward(c, m, x, MlaForm::absorbed, Pattern::causal()));
    outs.push_back(run_forward(c, m, x, MlaForm::naive, Pattern::causal()));
    for (MlaForm form : {MlaForm::naive, MlaForm::absorbed})
      grads.push_back(mla_backward(c, m.views(), x.view(), nullptr, MlaOptions{form, Pattern::causal()}, d_out.view()));
  }
  omp_set_num_threads(before);
  const auto same = [](const Tensor& a, const Tensor& b) {
    return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
  };
  for (size_t i = 3; i < outs.size(); ++i) EXPECT_TRUE(same(outs[i], outs[i % 3])) << i;
  for (size_t i = 2; i < grads.size(); ++i) {
    EXPECT_TRUE(same(grads[i].dx, grads[i % 2].dx)) << i;
    EXPECT_TRUE(same(grads[i].dw_uk, grads[i % 2].dw_uk)) << i;
    EXPECT_TRUE(same(grads[i].dw_q, grads[i % 2].dw_q)) << i;
  }
}

// ---- Bad input ---------------------------------------------------------------------------

TEST(Mla, BadInputsNameTheArgument) {
  const MlaConfig good = small_config();
  const Model m(good, 81);
  const Tensor x = random_tensor({1, 4, good.d_model}, 82);
  Tensor out(DType::f32, {1, 4, good.heads, good.d_v});
  const auto forward = [&](const MlaConfig& c, const MlaWeights& w, const TensorView& xv, const int64_t* pos,
                           const MutTensorView& o) { mla_forward(c, w, xv, pos, MlaOptions{}, o); };
  MlaConfig c = good;
  c.d_r = 7;
  expect_error([&] { forward(c, m.views(), x.view(), nullptr, out.mut()); }, "d_r (7) must be even");
  c = good;
  c.heads = 0;
  expect_error([&] { c.validate(); }, "heads (0)");
  c = good;
  c.d_c = 1020;
  expect_error([&] { c.validate(); }, "d_c + d_r");
  c = good;
  c.scale = -1;
  expect_error([&] { c.validate(); }, "scale (-1)");
  c = good;
  c.rope.base = 0;
  expect_error([&] { c.validate(); }, "rope");
  MlaWeights w = m.views();
  const Tensor wrong = random_tensor({good.heads, good.d_c, good.d_nope}, 1);
  w.w_uk = wrong.view();
  expect_error([&] { forward(good, w, x.view(), nullptr, out.mut()); }, "w_uk must have shape [H, d_nope, d_c]");
  w = m.views();
  w.w_q = TensorView();
  expect_error([&] { forward(good, w, x.view(), nullptr, out.mut()); }, "w_q must have shape");
  const Tensor x_bad = random_tensor({1, 4, good.d_model + 1}, 2);
  expect_error([&] { forward(good, m.views(), x_bad.view(), nullptr, out.mut()); }, "x must have shape");
  Tensor out_bad(DType::f32, {1, 4, good.heads, good.d_v + 1});
  expect_error([&] { forward(good, m.views(), x.view(), nullptr, out_bad.mut()); }, "out must have shape");
  const int64_t pos[4] = {0, 1, -2, 3};
  expect_error([&] { forward(good, m.views(), x.view(), pos, out.mut()); }, "positions[b=0, n=2] (-2)");
  expect_error([&] { mla_backward(good, m.views(), x.view(), nullptr, MlaOptions{}, out_bad.view()); },
               "d_out must have shape");
  expect_error([&] { parse_mla_form("fused"); }, "'fused' is not one of naive, absorbed");

  MlaCacheConfig cc;
  cc.storage = KvStorage::int8;
  expect_error([&] { MlaCache bad(cc); }, "storage (int8) must be f32 or bf16");
  cc = MlaCacheConfig{};
  cc.d_c = good.d_c;
  cc.d_r = good.d_r;
  cc.max_tokens = 4;
  MlaCache cache(cc);
  expect_error([&] { cache.append(1, 1); }, "seq (1)");
  cache.append(0, 3);
  expect_error([&] { cache.keys(0, 0); }, "store() them before reading");
  expect_error([&] { cache.append(0, 1); }, "store() every layer first");
  expect_error([&] { cache.store(0, 0, random_tensor({2, cc.width()}, 3).view()); }, "rows must have shape [T, d_c + d_r] = [3, 28]");
  cache.store(0, 0, random_tensor({3, cc.width()}, 3).view());
  expect_error([&] { cache.append(0, 2); }, "past max_tokens (4)");
  Tensor o(DType::f32, {1, 2, cc.d_c});
  const Tensor q_bad = random_tensor({1, 2, cc.width() - 1}, 4);
  expect_error([&] { mla_decode_attention(cache, 0, 0, q_bad.view(), 0.1, o.mut()); }, "q must have shape");
  const Tensor q = random_tensor({1, 2, cc.width()}, 4);
  expect_error([&] { mla_decode_attention(cache, 0, 0, q.view(), 0, o.mut()); }, "scale (0)");
  expect_error([&] { mla_decode_attention(cache, 3, 0, q.view(), 0.1, o.mut()); }, "layer (3)");
  const Tensor q_long = random_tensor({4, 2, cc.width()}, 4);
  Tensor o_long(DType::f32, {4, 2, cc.d_c});
  expect_error([&] { mla_decode_attention(cache, 0, 0, q_long.view(), 0.1, o_long.mut()); }, "Nq (4)");
  MlaConfig other = good;
  other.d_c = 16;
  const Model m_other(other, 5);
  Tensor out1(DType::f32, {1, good.heads, good.d_v});
  expect_error([&] { mla_decode(other, m_other.views(), cache, 0, 0, x.view(), out1.mut()); }, "cache: its rows");
}

}  // namespace
}  // namespace attnkit
