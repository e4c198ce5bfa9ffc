// Tests for Linformer (linformer.hpp). The fast form against the f64 reference under the
// tolerance rule (its max error at most twice that of the reference run in the input
// precision, plus a small slack where that baseline happens to be exact) for every sharing
// mode, head layout, Dk != Dv and input type, forward and backward (dE, dF included); the
// reference's gradients against finite differences; a textbook Linformer written here with
// plain loops; k = n with identity projections equal to exact attention; bitwise identical
// results for 1 and 2 threads; strided inputs; the method string, the seeded projections,
// the FLOP count and every argument error.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include <gtest/gtest.h>

#include "attnkit/backward.hpp"
#include "attnkit/flops.hpp"
#include "attnkit/linformer.hpp"
#include "attnkit/reference.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;

constexpr LinformerSharing kSharings[] = {LinformerSharing::none, LinformerSharing::headwise, LinformerSharing::kv,
                                          LinformerSharing::layerwise};

struct Case {
  int64_t b, hq, hkv, n, k, dk, dv;
  LinformerSharing sharing = LinformerSharing::headwise;
  DType dtype = DType::f32;
  int64_t nq = -1;  // -1: n (self-attention)
  int64_t q_len() const { return nq < 0 ? n : nq; }
};

std::string describe(const Case& c) {
  return fmt::format("B={} Hq={} Hkv={} Nq={} n={} k={} Dk={} Dv={} sharing={} {}", c.b, c.hq, c.hkv, c.q_len(), c.n,
                     c.k, c.dk, c.dv, linformer_sharing_name(c.sharing), dtype_name(c.dtype));
}

struct Inputs {
  Tensor q, k, v, e, f, d_o;
  LinformerMethod m;
  TensorView fv() const { return f.shape().empty() ? TensorView() : f.view(); }  // empty: F is E
};

// Projection entries uniform in +-3 / sqrt(n), so that K' = E K has entries of about unit
// size whatever n is and the softmax stays neither flat nor one-hot.
Inputs make_inputs(const Case& c, uint64_t seed, DType dtype) {
  Inputs in;
  in.m.k = c.k;
  in.m.sharing = c.sharing;
  const int64_t p = in.m.projections(c.hkv);
  const double amp = 3.0 / std::sqrt(static_cast<double>(std::max<int64_t>(c.n, 1)));
  in.q = random_tensor({c.b, c.hq, c.q_len(), c.dk}, seed, dtype, 2.0);
  in.k = random_tensor({c.b, c.hkv, c.n, c.dk}, seed + 1, dtype);
  in.v = random_tensor({c.b, c.hkv, c.n, c.dv}, seed + 2, dtype);
  in.e = random_tensor({p, c.k, c.n}, seed + 3, dtype, amp);
  if (!in.m.shares_ef()) in.f = random_tensor({p, c.k, c.n}, seed + 4, dtype, amp);
  in.d_o = random_tensor({c.b, c.hq, c.q_len(), c.dv}, seed + 5, dtype);
  return in;
}

Tensor out_tensor(const Case& c, DType t) { return Tensor(t, {c.b, c.hq, c.q_len(), c.dv}); }

Tensor run_ref(const Inputs& in, const Case& c, RefPrecision precision) {
  Tensor o = out_tensor(c, DType::f64);
  linformer_reference(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m, o.mut(), precision);
  return o;
}

struct Grads {
  Tensor dq, dk, dv, de, df;
};

Grads alloc_grads(const Case& c, const LinformerMethod& m, DType t) {
  const int64_t p = m.projections(c.hkv);
  return {Tensor(t, {c.b, c.hq, c.q_len(), c.dk}), Tensor(t, {c.b, c.hkv, c.n, c.dk}), Tensor(t, {c.b, c.hkv, c.n, c.dv}),
          Tensor(t, {p, c.k, c.n}), m.shares_ef() ? Tensor() : Tensor(t, {p, c.k, c.n})};
}

MutTensorView df_view(Grads& g) { return g.df.shape().empty() ? MutTensorView() : g.df.mut(); }

Grads run_ref_backward(const Inputs& in, const Case& c, RefPrecision precision) {
  Grads g = alloc_grads(c, in.m, DType::f64);
  linformer_backward_reference(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.d_o.view(), in.m,
                               g.dq.mut(), g.dk.mut(), g.dv.mut(), g.de.mut(), df_view(g), precision);
  return g;
}

Grads run_fast_backward(const Inputs& in, const Case& c) {
  Grads g = alloc_grads(c, in.m, DType::f32);
  linformer_attend_backward_into(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.d_o.view(), in.m,
                                 g.dq.mut(), g.dk.mut(), g.dv.mut(), g.de.mut(), df_view(g));
  return g;
}

double slack(DType t) { return t == DType::f32 ? 1e-6 : 1e-5; }

void expect_forward_within_rule(const Case& c, uint64_t seed = 7) {
  const Inputs in = make_inputs(c, seed, c.dtype);
  const Tensor exact = run_ref(in, c, RefPrecision::f64), base = run_ref(in, c, RefPrecision::input);
  const Tensor got = linformer_attend(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m);
  EXPECT_LE(max_abs_diff(got.view(), exact.view()), 2 * max_abs_diff(base.view(), exact.view()) + slack(c.dtype))
      << describe(c);
}

void expect_backward_within_rule(const Case& c, uint64_t seed = 7) {
  const Inputs in = make_inputs(c, seed, c.dtype);
  const Grads exact = run_ref_backward(in, c, RefPrecision::f64), base = run_ref_backward(in, c, RefPrecision::input);
  const Grads got = run_fast_backward(in, c);
  // Gradients sum over n (dq through K', dE over batch and heads): the slack grows with them.
  const double s = 10 * slack(c.dtype);
  const auto check = [&](const Tensor& g, const Tensor& e, const Tensor& b, const char* name) {
    EXPECT_LE(max_abs_diff(g.view(), e.view()), 2 * max_abs_diff(b.view(), e.view()) + s) << name << " " << describe(c);
  };
  check(got.dq, exact.dq, base.dq, "dq");
  check(got.dk, exact.dk, base.dk, "dk");
  check(got.dv, exact.dv, base.dv, "dv");
  check(got.de, exact.de, base.de, "de");
  if (!in.m.shares_ef()) check(got.df, exact.df, base.df, "df");
}

// The head layouts, odd lengths, k below, at and above n, Nq != n and Dk != Dv that every
// sharing mode and input type runs through.
std::vector<Case> sweep(LinformerSharing sharing, DType dtype) {
  std::vector<Case> cases;
  for (auto [hq, hkv] : {std::pair{2, 2}, std::pair{6, 2}, std::pair{4, 1}})
    for (auto [n, k] : {std::pair{1, 1}, std::pair{17, 4}, std::pair{97, 16}, std::pair{33, 64}})
      cases.push_back({2, hq, hkv, n, k, 24, 40, sharing, dtype});
  cases.push_back({1, 4, 2, 50, 8, 32, 16, sharing, dtype, 5});
  cases.push_back({1, 2, 1, 300, 64, 64, 64, sharing, dtype});
  return cases;
}

TEST(Linformer, ForwardMatchesReferenceEverySharingHeadLayoutAndDtype) {
  for (LinformerSharing sharing : kSharings)
    for (DType dtype : {DType::f32, DType::bf16})
      for (const Case& c : sweep(sharing, dtype)) expect_forward_within_rule(c);
  for (LinformerSharing sharing : {LinformerSharing::none, LinformerSharing::kv})
    for (const Case& c : sweep(sharing, DType::f16)) expect_forward_within_rule(c);
}

TEST(Linformer, BackwardMatchesReferenceEverySharingHeadLayoutAndDtype) {
  for (LinformerSharing sharing : kSharings)
    for (DType dtype : {DType::f32, DType::bf16})
      for (const Case& c : sweep(sharing, dtype)) expect_backward_within_rule(c);
}

// E K sums over all n positions in f32: the long sums are where precision would go.
// Projections summing 16K positions, in both input types; the backward's sums over the
// sequence once, in f32 (its bf16 path is the same code after the conversion, covered above).
TEST(Linformer, LongSequences) {
  for (DType dtype : {DType::f32, DType::bf16})
    expect_forward_within_rule({1, 2, 1, 16384, 32, 16, 16, LinformerSharing::headwise, dtype});
  expect_backward_within_rule({1, 2, 1, 4096, 64, 32, 32, LinformerSharing::kv, DType::f32});
}

// The loss sum(dO o O) of the f64 reference; its gradient is the backward's.
double loss(const Inputs& in, const Case& c) {
  const Tensor o = run_ref(in, c, RefPrecision::f64);
  double l = 0;
  for (int64_t i = 0; i < o.numel(); ++i) l += o.view().load(i) * in.d_o.view().load(i);
  return l;
}

TEST(LinformerReference, GradientsAgreeWithFiniteDifferences) {
  for (LinformerSharing sharing : kSharings) {
    const Case c{2, 4, 2, 6, 3, 3, 2, sharing, DType::f64, 4};
    Inputs in = make_inputs(c, 31, DType::f64);
    const Grads g = run_ref_backward(in, c, RefPrecision::f64);
    const double h = 1e-6;
    const auto check = [&](Tensor& x, const Tensor& grad, const char* name) {
      for (int64_t i = 0; i < x.numel(); ++i) {
        const double x0 = x.view().load(i);
        x.mut().store(i, x0 + h);
        const double up = loss(in, c);
        x.mut().store(i, x0 - h);
        const double down = loss(in, c);
        x.mut().store(i, x0);
        const double fd = (up - down) / (2 * h);
        EXPECT_NEAR(grad.view().load(i), fd, 1e-7 * (1 + std::fabs(fd))) << name << "[" << i << "] " << describe(c);
      }
    };
    check(in.q, g.dq, "dq");
    check(in.k, g.dk, "dk");
    check(in.v, g.dv, "dv");
    check(in.e, g.de, in.m.shares_ef() ? "de (dE + dF)" : "de");
    if (!in.m.shares_ef()) check(in.f, g.df, "df");
  }
}

// Linformer as the paper writes it, one (batch, query head) at a time, from raw arrays:
// K' = E K, V' = F V, P = softmax(Q K'^T / sqrt(Dk)), O = P V'. Shares no code with the
// library beyond reading the tensors.
Tensor textbook(const Inputs& in, const Case& c) {
  Tensor out = out_tensor(c, DType::f64);
  const int64_t g = c.hq / c.hkv, nq = c.q_len();
  for (int64_t b = 0; b < c.b; ++b)
    for (int64_t h = 0; h < c.hq; ++h) {
      const int64_t kvh = h / g, p = c.sharing == LinformerSharing::none ? kvh : 0;
      const Tensor& fm = in.m.shares_ef() ? in.e : in.f;
      std::vector<std::vector<double>> kp(c.k, std::vector<double>(c.dk)), vp(c.k, std::vector<double>(c.dv));
      for (int64_t j = 0; j < c.k; ++j)
        for (int64_t t = 0; t < c.n; ++t) {
          for (int64_t x = 0; x < c.dk; ++x) kp[j][x] += in.e.view().get(p, j, t) * in.k.view().get(b, kvh, t, x);
          for (int64_t x = 0; x < c.dv; ++x) vp[j][x] += fm.view().get(p, j, t) * in.v.view().get(b, kvh, t, x);
        }
      for (int64_t i = 0; i < nq; ++i) {
        std::vector<double> s(c.k);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < c.k; ++j) {
          for (int64_t x = 0; x < c.dk; ++x) s[j] += in.q.view().get(b, h, i, x) * kp[j][x];
          s[j] /= std::sqrt(static_cast<double>(c.dk));
          mx = std::max(mx, s[j]);
        }
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (int64_t x = 0; x < c.dv; ++x) {
          double o = 0;
          for (int64_t j = 0; j < c.k; ++j) o += s[j] / sum * vp[j][x];
          out.mut().set(o, b, h, i, x);
        }
      }
    }
  return out;
}

TEST(Linformer, EqualsATextbookImplementation) {
  for (LinformerSharing sharing : kSharings)
    for (const Case& c : {Case{2, 4, 2, 37, 8, 16, 12, sharing}, Case{1, 3, 1, 20, 5, 8, 8, sharing, DType::f32, 7}}) {
      const Inputs in = make_inputs(c, 5, c.dtype);
      const Tensor want = textbook(in, c);
      const Tensor exact = run_ref(in, c, RefPrecision::f64), base = run_ref(in, c, RefPrecision::input);
      EXPECT_LE(max_abs_diff(exact.view(), want.view()), 1e-12) << describe(c);
      const Tensor got = linformer_attend(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m);
      EXPECT_LE(max_abs_diff(got.view(), want.view()), 2 * max_abs_diff(base.view(), exact.view()) + 1e-6)
          << describe(c);
    }
}

TEST(Linformer, IdentityProjectionsGiveExactAttention) {
  for (LinformerSharing sharing : kSharings) {
    const Case c{2, 4, 2, 45, 45, 32, 24, sharing};
    Inputs in = make_inputs(c, 9, DType::f32);
    for (Tensor* t : {&in.e, &in.f}) {
      if (t->shape().empty()) continue;
      for (int64_t i = 0; i < t->numel(); ++i) t->mut().store(i, 0.0);
      for (int64_t p = 0; p < t->shape()[0]; ++p)
        for (int64_t j = 0; j < c.n; ++j) t->mut().set(1.0, p, j, j);
    }
    // E K is K exactly (one product by 1, the rest by 0), so the fast form runs the flash
    // kernel on the same keys and values as attend() does: the outputs are bitwise equal.
    const Output exact = attend(in.q.view(), in.k.view(), in.v.view());
    const Tensor got = linformer_attend(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m);
    EXPECT_EQ(max_abs_diff(got.view(), exact.o.view()), 0.0) << describe(c);
    Tensor ref_o = out_tensor(c, DType::f64), attn_o = out_tensor(c, DType::f64);
    attention_reference(in.q.view(), in.k.view(), in.v.view(), {}, attn_o.mut(), MutTensorView());
    in.m.kernel = Kernel::ref;
    linformer_attend_into(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m, ref_o.mut());
    EXPECT_LE(max_abs_diff(ref_o.view(), attn_o.view()), 1e-12) << describe(c);
  }
}

TEST(Linformer, EmptySequenceGivesZeros) {
  const Case c{1, 2, 1, 0, 4, 8, 8, LinformerSharing::none};
  const Inputs in = make_inputs(c, 3, DType::f32);
  const Tensor o = linformer_attend(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m);
  for (int64_t i = 0; i < o.numel(); ++i) EXPECT_EQ(o.view().load(i), 0.0);
  const Case cq{1, 2, 1, 0, 4, 8, 8, LinformerSharing::none, DType::f32, 3};
  const Inputs iq = make_inputs(cq, 3, DType::f32);
  const Grads g = run_fast_backward(iq, cq);
  for (int64_t i = 0; i < g.dq.numel(); ++i) EXPECT_EQ(g.dq.view().load(i), 0.0);
}

TEST(Linformer, F64InputsRunTheReferenceUnderAutomatic) {
  const Case c{1, 2, 2, 19, 6, 8, 8, LinformerSharing::none, DType::f64};
  const Inputs in = make_inputs(c, 17, DType::f64);
  const Tensor exact = run_ref(in, c, RefPrecision::f64);
  Tensor got = out_tensor(c, DType::f64);
  linformer_attend_into(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m, got.mut());
  EXPECT_EQ(std::memcmp(got.data(), exact.data(), got.nbytes()), 0);
  // Kernel::flash forces the f32 fast form: close, but not the f64 result.
  LinformerMethod fast = in.m;
  fast.kernel = Kernel::flash;
  linformer_attend_into(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), fast, got.mut());
  EXPECT_LE(max_abs_diff(got.view(), exact.view()), 1e-5);
}

// A [B, H, N, D] tensor stored as [B, N, H, D] memory (or a [P, k, n] one as [P, n, k]):
// the same values under permuted strides.
struct Strided {
  Tensor storage;
  TensorView view;
};
Strided transposed_storage(const Tensor& t) {
  const auto s = t.shape();
  if (s.size() == 3) {
    Strided r{Tensor(t.dtype(), {s[0], s[2], s[1]}), {}};
    for (int64_t a = 0; a < s[0]; ++a)
      for (int64_t j = 0; j < s[1]; ++j)
        for (int64_t x = 0; x < s[2]; ++x) r.storage.mut().set(t.view().get(a, j, x), a, x, j);
    r.view = TensorView(r.storage.data(), t.dtype(), {s[0], s[1], s[2]}, {s[1] * s[2], 1, s[1]});
    return r;
  }
  Strided r{Tensor(t.dtype(), {s[0], s[2], s[1], s[3]}), {}};
  for (int64_t b = 0; b < s[0]; ++b)
    for (int64_t h = 0; h < s[1]; ++h)
      for (int64_t n = 0; n < s[2]; ++n)
        for (int64_t x = 0; x < s[3]; ++x) r.storage.mut().set(t.view().get(b, h, n, x), b, n, h, x);
  r.view = TensorView(r.storage.data(), t.dtype(), {s[0], s[1], s[2], s[3]},
                      {s[1] * s[2] * s[3], s[3], s[1] * s[3], 1});
  return r;
}

TEST(Linformer, StridedInputsGiveTheContiguousResult) {
  for (DType dtype : {DType::f32, DType::bf16})
    for (LinformerSharing sharing : {LinformerSharing::none, LinformerSharing::kv}) {
      const Case c{2, 4, 2, 29, 8, 16, 8, sharing, dtype};
      const Inputs in = make_inputs(c, 23, dtype);
      const Strided q = transposed_storage(in.q), k = transposed_storage(in.k), v = transposed_storage(in.v);
      const Strided e = transposed_storage(in.e);
      const Tensor want = linformer_attend(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m);
      const Tensor got = linformer_attend(q.view, k.view, v.view, e.view, in.fv(), in.m);
      EXPECT_LE(max_abs_diff(got.view(), want.view()), 1e-6) << describe(c);
      // A bf16 output, written through a strided view.
      Strided o = transposed_storage(Tensor(DType::bf16, {c.b, c.hq, c.q_len(), c.dv}));
      const MutTensorView om(o.storage.data(), DType::bf16, o.view.shape(),
                             {o.view.stride(0), o.view.stride(1), o.view.stride(2), o.view.stride(3)});
      linformer_attend_into(q.view, k.view, v.view, e.view, in.fv(), in.m, om);
      EXPECT_LE(max_abs_diff(om, want.view()), 1e-2) << describe(c);
    }
}

TEST(Linformer, BitwiseIdenticalForOneAndTwoThreads) {
  const int saved = omp_get_max_threads();
  for (DType dtype : {DType::f32, DType::bf16})
    for (LinformerSharing sharing : {LinformerSharing::none, LinformerSharing::headwise, LinformerSharing::kv}) {
      const Case c{2, 4, 2, 1500, 64, 64, 48, sharing, dtype};
      const Inputs in = make_inputs(c, 41, dtype);
      omp_set_num_threads(1);
      const Tensor o1 = linformer_attend(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m);
      const Grads g1 = run_fast_backward(in, c);
      omp_set_num_threads(2);
      const Tensor o2 = linformer_attend(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.m);
      const Grads g2 = run_fast_backward(in, c);
      EXPECT_EQ(std::memcmp(o1.data(), o2.data(), o1.nbytes()), 0) << describe(c);
      const auto same = [&](const Tensor& a, const Tensor& b, const char* name) {
        EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << name << " " << describe(c);
      };
      same(g1.dq, g2.dq, "dq");
      same(g1.dk, g2.dk, "dk");
      same(g1.dv, g2.dv, "dv");
      same(g1.de, g2.de, "de");
      if (!in.m.shares_ef()) same(g1.df, g2.df, "df");
    }
  omp_set_num_threads(saved);
}

TEST(Linformer, AllocatingBackwardMatchesTheViewForm) {
  for (LinformerSharing sharing : {LinformerSharing::headwise, LinformerSharing::layerwise}) {
    const Case c{1, 2, 1, 40, 8, 16, 16, sharing};
    const Inputs in = make_inputs(c, 2, DType::f32);
    const LinformerGradients g =
        linformer_attend_backward(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.fv(), in.d_o.view(), in.m);
    const Grads want = run_fast_backward(in, c);
    EXPECT_EQ(std::memcmp(g.de.data(), want.de.data(), g.de.nbytes()), 0);
    EXPECT_EQ(std::memcmp(g.dk.data(), want.dk.data(), g.dk.nbytes()), 0);
    EXPECT_EQ(g.df.shape().empty(), in.m.shares_ef());
  }
}

TEST(Linformer, FlopsAreTheProjectionsPlusTheAttentionOverKKeys) {
  LinformerMethod m;
  m.k = 128;
  AttnShape s;
  s.batch = 2, s.q_heads = 8, s.kv_heads = 2, s.q_len = 1000, s.kv_len = m.k, s.d_qk = 64, s.d_v = 32;
  const double attention = count_work(s, Pattern::none().bind(s.q_len, s.kv_len)).flops;
  const double projections = 2.0 * 2 * 2 * 1000 * 128 * (64 + 32);
  EXPECT_DOUBLE_EQ(linformer_flops(m, 2, 8, 2, 1000, 64, 32), attention + projections);
}

TEST(Linformer, MethodStringRoundTrips) {
  const LinformerMethod m = parse_linformer_method("linformer:k=64,sharing=kv,seed=9");
  EXPECT_EQ(m.k, 64);
  EXPECT_EQ(m.sharing, LinformerSharing::kv);
  EXPECT_EQ(m.seed, 9u);
  EXPECT_FALSE(m.causal);
  EXPECT_EQ(linformer_method_string(m), "linformer:k=64,sharing=kv,seed=9");
  const LinformerMethod d = parse_linformer_method("linformer:k=256");
  EXPECT_EQ(d.sharing, LinformerSharing::headwise);
  EXPECT_EQ(d.seed, 1u);
  for (LinformerSharing s : kSharings) {
    LinformerMethod x;
    x.k = 7, x.sharing = s, x.seed = 18446744073709551615u;
    const LinformerMethod y = parse_linformer_method(linformer_method_string(x));
    EXPECT_EQ(y.k, x.k);
    EXPECT_EQ(y.sharing, x.sharing);
    EXPECT_EQ(y.seed, x.seed);
  }
}

// Runs f and expects an Error whose message contains every one of `parts`.
template <class F>
void expect_error(F f, std::initializer_list<const char*> parts) {
  try {
    f();
    ADD_FAILURE() << "no Error; expected one naming " << *parts.begin();
  } catch (const Error& e) {
    for (const char* p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(Linformer, BadMethodStringsNameTheKey) {
  expect_error([] { parse_linformer_method("performer:m=4"); }, {"linformer:"});
  expect_error([] { parse_linformer_method("linformer:sharing=kv"); }, {"missing 'k='"});
  expect_error([] { parse_linformer_method("linformer:k=0"); }, {"k (0)"});
  expect_error([] { parse_linformer_method("linformer:k=x"); }, {"k 'x'"});
  expect_error([] { parse_linformer_method("linformer:k=99999999999999999999"); }, {"k '", "out of range"});
  expect_error([] { parse_linformer_method("linformer:k=4,sharing=rows"); }, {"sharing 'rows'"});
  expect_error([] { parse_linformer_method("linformer:k=4,seed=-1"); }, {"seed '-1'"});
  expect_error([] { parse_linformer_method("linformer:k=4,m=3"); }, {"unknown key 'm'"});
  expect_error([] { parse_linformer_method("linformer:k=4,k=5"); }, {"key 'k' given twice"});
  expect_error([] { parse_linformer_method("linformer:k=4,"); }, {"not key=value"});
  expect_error([] { parse_linformer_sharing("heads"); }, {"sharing 'heads'"});
}

TEST(Linformer, BadInputsThrowNamingTheArgument) {
  const Case c{1, 4, 2, 10, 4, 8, 8, LinformerSharing::none};
  const Inputs in = make_inputs(c, 1, DType::f32);
  Tensor o = out_tensor(c, DType::f32);
  const auto fwd = [&](const LinformerMethod& m, const TensorView& e, const TensorView& f) {
    return [&, m, e, f] { linformer_attend_into(in.q.view(), in.k.view(), in.v.view(), e, f, m, o.mut()); };
  };
  LinformerMethod causal = in.m;
  causal.causal = true;
  expect_error(fwd(causal, in.e.view(), in.f.view()), {"causal", "non-causal", "future"});
  LinformerMethod zero = in.m;
  zero.k = 0;
  expect_error(fwd(zero, in.e.view(), in.f.view()), {"k (0)"});
  const Tensor longer = random_tensor({2, 4, 11}, 3);
  expect_error(fwd(in.m, longer.view(), in.f.view()), {"e:", "n != projection length"});
  expect_error(fwd(in.m, in.e.view(), longer.view()), {"f:", "n != projection length"});
  const Tensor one = random_tensor({1, 4, 10}, 3);
  expect_error(fwd(in.m, one.view(), in.f.view()), {"e: P (1) must be 2", "sharing=none"});
  LinformerMethod headwise = in.m;
  headwise.sharing = LinformerSharing::headwise;
  expect_error(fwd(headwise, one.view(), in.e.view()), {"f: P (2) must be 1", "sharing=headwise"});
  const Tensor wide = random_tensor({2, 5, 10}, 3);
  expect_error(fwd(in.m, wide.view(), in.f.view()), {"e: projected length (5)", "k (4)"});
  expect_error(fwd(in.m, in.q.view(), in.f.view()), {"e must have rank 3"});
  LinformerMethod kv = in.m;
  kv.sharing = LinformerSharing::kv;
  const Tensor other = random_tensor({1, 4, 10}, 4);
  expect_error(fwd(kv, one.view(), other.view()), {"f: with sharing=kv F is E"});
  EXPECT_NO_THROW(fwd(kv, one.view(), one.view())());
  const Tensor copy = one.to(DType::f32);
  EXPECT_NO_THROW(fwd(kv, one.view(), copy.view())());
  LinformerMethod bad_scale = in.m;
  bad_scale.scale = INFINITY;
  expect_error(fwd(bad_scale, in.e.view(), in.f.view()), {"scale"});
  const Tensor q_wrong = random_tensor({1, 4, 10, 7}, 5);
  expect_error([&] { linformer_attend_into(q_wrong.view(), in.k.view(), in.v.view(), in.e.view(), in.f.view(), in.m, o.mut()); },
               {"q"});
  Tensor o_wrong(DType::f32, {1, 4, 10, 9});
  expect_error([&] { linformer_attend_into(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.f.view(), in.m, o_wrong.mut()); },
               {"o must have shape"});

  Grads g = alloc_grads(c, in.m, DType::f32);
  const auto bwd = [&](const LinformerMethod& m, const MutTensorView& de, const MutTensorView& df) {
    return [&, m, de, df] {
      linformer_attend_backward_into(in.q.view(), in.k.view(), in.v.view(), m.shares_ef() ? one.view() : in.e.view(),
                                     m.shares_ef() ? TensorView() : in.f.view(), in.d_o.view(), m, g.dq.mut(),
                                     g.dk.mut(), g.dv.mut(), de, df);
    };
  };
  expect_error(bwd(causal, g.de.mut(), g.df.mut()), {"causal"});
  Tensor de_small(DType::f32, {2, 4, 9});
  expect_error(bwd(in.m, de_small.mut(), g.df.mut()), {"de must have shape"});
  expect_error(bwd(in.m, g.de.mut(), de_small.mut()), {"df must have shape"});
  Tensor de_kv(DType::f32, {1, 4, 10}), df_kv(DType::f32, {1, 4, 10});
  expect_error(bwd(kv, de_kv.mut(), df_kv.mut()), {"df: with sharing=kv", "de receives dE + dF"});
  EXPECT_NO_THROW(bwd(kv, de_kv.mut(), MutTensorView())());
  const MutTensorView overlapping(g.dk.data(), DType::f32, {1, 2, 10, 8}, {0, 8, 8, 1});
  expect_error([&] {
    linformer_attend_backward_into(in.q.view(), in.k.view(), in.v.view(), in.e.view(), in.f.view(), in.d_o.view(), in.m,
                                   g.dq.mut(), overlapping, g.dv.mut(), g.de.mut(), g.df.mut());
  }, {"dk: strides make elements overlap"});

  expect_error([] { make_linformer_projections(LinformerMethod{.k = 0}, 2, 10); }, {"k (0)"});
  expect_error([] { make_linformer_projections({}, 0, 10); }, {"kv_heads (0)"});
}

TEST(Linformer, SeededProjectionsAreNormalWithVarianceOneOverK) {
  LinformerMethod m;
  m.k = 64, m.sharing = LinformerSharing::none;
  const LinformerProjections a = make_linformer_projections(m, 3, 1000);
  EXPECT_EQ(a.e.shape(), (std::vector<int64_t>{3, 64, 1000}));
  EXPECT_EQ(a.f.shape(), a.e.shape());
  const LinformerProjections again = make_linformer_projections(m, 3, 1000);
  EXPECT_EQ(std::memcmp(a.e.data(), again.e.data(), a.e.nbytes()), 0);
  EXPECT_EQ(std::memcmp(a.f.data(), again.f.data(), a.f.nbytes()), 0);
  EXPECT_NE(std::memcmp(a.e.data(), a.f.data(), a.e.nbytes()), 0);
  m.seed = 2;
  const LinformerProjections b = make_linformer_projections(m, 3, 1000);
  EXPECT_NE(std::memcmp(a.e.data(), b.e.data(), a.e.nbytes()), 0);
  // 192,000 samples: the mean's standard error is 0.125 / sqrt(192000) ~ 3e-4 and the
  // variance's ~ 1/64 * sqrt(2 / 192000) ~ 5e-5, so 5 sigma bounds are 1.5e-3 and 2.5e-4;
  // the fourth moment (3 sigma^4 for a normal) tells normal from uniform values.
  double sum = 0, sq = 0, quad = 0;
  const int64_t count = a.e.numel();
  for (int64_t i = 0; i < count; ++i) {
    const double x = a.e.view().load(i);
    sum += x, sq += x * x, quad += x * x * x * x;
  }
  const double mean = sum / double(count), var = sq / double(count) - mean * mean;
  EXPECT_NEAR(mean, 0.0, 1.5e-3);
  EXPECT_NEAR(var, 1.0 / 64, 2.5e-4);
  EXPECT_NEAR(quad / double(count) / (var * var), 3.0, 0.1);
  for (LinformerSharing s : {LinformerSharing::headwise, LinformerSharing::kv, LinformerSharing::layerwise}) {
    m.sharing = s;
    const LinformerProjections p = make_linformer_projections(m, 3, 50);
    EXPECT_EQ(p.e.shape(), (std::vector<int64_t>{1, 64, 50}));
    EXPECT_EQ(p.f.shape().empty(), m.shares_ef());
  }
}

TEST(Linformer, SeededProjectionsRunEndToEnd) {
  LinformerMethod m = parse_linformer_method("linformer:k=16,sharing=layerwise,seed=3");
  const Case c{1, 4, 2, 64, 16, 16, 16, m.sharing};
  const Inputs in = make_inputs(c, 8, DType::f32);
  const LinformerProjections p = make_linformer_projections(m, c.hkv, c.n);
  EXPECT_TRUE(p.f.shape().empty());  // F is E
  Tensor exact = out_tensor(c, DType::f64), base = out_tensor(c, DType::f64);
  linformer_reference(in.q.view(), in.k.view(), in.v.view(), p.e.view(), p.e.view(), m, exact.mut());
  linformer_reference(in.q.view(), in.k.view(), in.v.view(), p.e.view(), p.e.view(), m, base.mut(), RefPrecision::input);
  const Tensor got = linformer_attend(in.q.view(), in.k.view(), in.v.view(), p.e.view(), p.e.view(), m);
  EXPECT_LE(max_abs_diff(got.view(), exact.view()), 2 * max_abs_diff(base.view(), exact.view()) + 1e-6);
}

}  // namespace
}  // namespace attnkit
