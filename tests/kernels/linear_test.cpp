// Tests of the linear-attention forward (linear.hpp): every form of every method against
// the f64 definition under the tolerance rule (the kernel's max error at most twice that of
// the plain definition run in the input precision, plus 2e-7), f32 and bf16, causal and not,
// MHA / GQA / MQA, Dk != Dv, chunk sizes that do and do not divide N; the decode state step by
// step and in multi-token steps; n = 16384; a textbook elu+1 written here; strided and f16
// inputs; bitwise equality across thread counts; and the errors bad input gets.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include <hwy/targets.h>

#include <gtest/gtest.h>

#include "kernels/linear_testing.hpp"

namespace attnkit {
namespace {

using testing::describe;
using testing::expect_within_rule;
using testing::LinearCase;
using testing::linear_inputs;
using testing::LinearInputs;
using testing::max_abs_diff;
using testing::run_linear;
using testing::run_linear_ref;

// A method of the kind for q_heads query heads: the Performer with m = 48, retention with
// a different decay per head (fast ones, so that the decay visibly shapes the output).
LinearMethod method(LinearKind kind, bool causal, int64_t q_heads) {
  LinearMethod m;
  m.kind = kind;
  m.causal = causal;
  if (kind == LinearKind::performer) m.features = 48;
  if (kind == LinearKind::retention)
    for (int64_t h = 0; h < q_heads; ++h) m.gamma.push_back(0.8 + 0.19 * static_cast<double>(h) / static_cast<double>(q_heads));
  return m;
}

// Every (form, chunk) the method offers.
std::vector<LinearMethod> forms_of(LinearMethod m) {
  std::vector<LinearMethod> out;
  const auto add = [&](LinearForm f, int64_t chunk) {
    LinearMethod x = m;
    x.form = f;
    x.chunk = chunk;
    out.push_back(x);
  };
  add(LinearForm::parallel, 16);
  add(LinearForm::parallel, 64);
  for (int64_t c : {1, 7, 16, 64}) add(LinearForm::chunkwise, c);
  add(LinearForm::automatic, 64);
  if (m.causal) add(LinearForm::recurrent, 64);
  return out;
}

void expect_forms_match(const LinearCase& c, const LinearMethod& m, uint64_t seed) {
  const LinearInputs in = linear_inputs(c, seed);
  const Tensor exact = run_linear_ref(in, m, RefPrecision::f64);
  const Tensor base = run_linear_ref(in, m, RefPrecision::input);
  for (const LinearMethod& f : forms_of(m))
    expect_within_rule(run_linear(in, f).view(), exact.view(), base.view(), describe(c, f));
}

TEST(LinearForward, EveryFormMatchesTheDefinition) {
  const std::vector<std::pair<int64_t, int64_t>> layouts = {{2, 2}, {4, 2}, {3, 1}};
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    for (bool causal : {true, false}) {
      if (kind == LinearKind::retention && !causal) continue;
      for (DType dtype : {DType::f32, DType::bf16})
        for (auto [hq, hkv] : layouts)
          for (int64_t n : {1, 37, 100}) {
            LinearCase c;
            c.b = 2, c.hq = hq, c.hkv = hkv, c.n = n, c.dtype = dtype;
            expect_forms_match(c, method(kind, causal, hq), static_cast<uint64_t>(n + hq));
          }
    }
}

TEST(LinearForward, HeadDimsAndEqualDims) {
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    for (auto [dk, dv] : {std::pair{1, 3}, std::pair{64, 64}, std::pair{33, 8}}) {
      LinearCase c;
      c.n = 70, c.dk = dk, c.dv = dv;
      expect_forms_match(c, method(kind, true, c.hq), 5);
    }
}

TEST(LinearForward, NonCausalKeysOfAnotherLength) {
  LinearCase c;
  const LinearInputs in = linear_inputs(c, 3);
  LinearCase kc = c;
  kc.n = 50;
  const LinearInputs keys = linear_inputs(kc, 9);
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer}) {
    const LinearInputs mixed{in.q, keys.k, keys.v};
    for (const LinearMethod& m : forms_of(method(kind, false, c.hq)))
      expect_within_rule(run_linear(mixed, m).view(), run_linear_ref(mixed, m, RefPrecision::f64).view(),
                         run_linear_ref(mixed, m, RefPrecision::input).view(), linear_method_string(m));
  }
}

// The reference's two forms are the same function.
TEST(LinearReference, RecurrentEqualsParallel) {
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    for (bool causal : {true, false}) {
      if (kind == LinearKind::retention && !causal) continue;
      LinearCase c;
      c.hq = 4, c.hkv = 2;
      const LinearInputs in = linear_inputs(c, 11);
      const LinearMethod m = method(kind, causal, c.hq);
      EXPECT_LE(max_abs_diff(run_linear_ref(in, m, RefPrecision::f64).view(),
                             run_linear_ref(in, m, RefPrecision::f64, LinearRefForm::recurrent).view()),
                1e-12)
          << linear_method_string(m);
    }
}

// Decode: one token at a time, and in steps of several tokens, equals the causal forward.
TEST(LinearState, StepsMatchTheCausalForward) {
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    for (DType dtype : {DType::f32, DType::bf16})
      for (LinearForm form : {LinearForm::automatic, LinearForm::recurrent}) {
        LinearCase c;
        c.b = 2, c.hq = 4, c.hkv = 2, c.n = 45, c.dtype = dtype;
        LinearMethod m = method(kind, true, c.hq);
        m.form = form;
        m.chunk = 8;
        const LinearInputs in = linear_inputs(c, 21);
        const Tensor exact = run_linear_ref(in, m, RefPrecision::f64);
        const Tensor base = run_linear_ref(in, m, RefPrecision::input);
        for (const std::vector<int64_t>& steps : {std::vector<int64_t>(45, 1), std::vector<int64_t>{5, 13, 1, 26}}) {
          LinearState state(m, c.b, c.hq, c.hkv, c.dk, c.dv);
          const int64_t bytes = state.bytes();
          Tensor o(DType::f32, {c.b, c.hq, c.n, c.dv});
          int64_t t0 = 0;
          for (int64_t t : steps) {
            // Views of tokens [t0, t0 + t) of the whole sequence: strided, not copies.
            const auto slice = [&](const Tensor& x) {
              const auto& s = x.shape();
              return TensorView(static_cast<const char*>(x.data()) + t0 * s[3] * static_cast<int64_t>(dtype_size(x.dtype())),
                                x.dtype(), {s[0], s[1], t, s[3]}, {s[1] * s[2] * s[3], s[2] * s[3], s[3], 1});
            };
            const auto& os = o.shape();
            const MutTensorView out(static_cast<float*>(o.data()) + t0 * os[3], DType::f32, {os[0], os[1], t, os[3]},
                                    {os[1] * os[2] * os[3], os[2] * os[3], os[3], 1});
            state.step(slice(in.q), slice(in.k), slice(in.v), out);
            t0 += t;
            EXPECT_EQ(state.tokens(), t0);
            EXPECT_EQ(state.bytes(), bytes);
          }
          expect_within_rule(o.view(), exact.view(), base.view(),
                             fmt::format("{} steps {}", describe(c, m), fmt::join(steps, ",")));
          state.reset();
          EXPECT_EQ(state.tokens(), 0);
        }
      }
}

TEST(LinearState, BytesAreTheStateSize) {
  // linear: B Hkv Dk (Dv + 1) floats; retention: per query head, no normaliser column;
  // performer: B Hkv m (Dv + 1) plus the keys' log-scale of each feature.
  LinearMethod m;
  EXPECT_EQ(LinearState(m, 2, 8, 2, 64, 32).bytes(), 2 * 2 * 64 * 33 * 4);
  m.kind = LinearKind::retention;
  EXPECT_EQ(LinearState(m, 2, 8, 2, 64, 32).bytes(), 2 * 8 * 64 * 32 * 4);
  m = LinearMethod();
  m.kind = LinearKind::performer;
  m.features = 128;
  EXPECT_EQ(LinearState(m, 1, 4, 4, 64, 64).bytes(), 4 * 128 * 65 * 4 + 4 * 128 * 4);
}

// n = 16384, where chunked kernels usually lose precision: chunkwise linear and retention
// against the f64 recurrence (the parallel definition would take minutes), with the
// recurrence in the input precision as the baseline.
TEST(LinearForward, LongSequences) {
  for (LinearKind kind : {LinearKind::linear, LinearKind::retention})
    for (DType dtype : {DType::f32, DType::bf16}) {
      LinearCase c;
      c.b = 1, c.hq = 2, c.hkv = 1, c.n = 16384, c.dk = 16, c.dv = 16, c.dtype = dtype;
      LinearMethod m;
      m.kind = kind;
      if (kind == LinearKind::retention) m.gamma = {0.999, 0.9999};  // slow decays reach far back
      const LinearInputs in = linear_inputs(c, 31);
      const Tensor exact = run_linear_ref(in, m, RefPrecision::f64, LinearRefForm::recurrent);
      const Tensor base = run_linear_ref(in, m, RefPrecision::input, LinearRefForm::recurrent);
      for (int64_t chunk : {64, 100}) {
        m.chunk = chunk;
        expect_within_rule(run_linear(in, m).view(), exact.view(), base.view(), describe(c, m));
      }
    }
}

// Katharopoulos et al.'s formula written out here, independent of the library's code.
TEST(LinearForward, TextbookEluPlusOne) {
  const int64_t n = 29, d = 8, e = 5;
  LinearCase c;
  c.b = 1, c.hq = 1, c.hkv = 1, c.n = n, c.dk = d, c.dv = e;
  const LinearInputs in = linear_inputs(c, 41, 1.5);
  const auto phi = [](double x) { return x > 0 ? x + 1 : std::exp(x); };
  for (bool causal : {false, true}) {
    Tensor want(DType::f64, {1, 1, n, e});
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> num(static_cast<size_t>(e), 0.0);
      double den = 0;
      for (int64_t j = 0; j < (causal ? i + 1 : n); ++j) {
        double s = 0;
        for (int64_t a = 0; a < d; ++a) s += phi(in.q.view().get(0, 0, i, a)) * phi(in.k.view().get(0, 0, j, a));
        for (int64_t a = 0; a < e; ++a) num[static_cast<size_t>(a)] += s * in.v.view().get(0, 0, j, a);
        den += s;
      }
      for (int64_t a = 0; a < e; ++a) want.mut().set(num[static_cast<size_t>(a)] / (den + 1e-6), 0, 0, i, a);
    }
    LinearMethod m;
    m.causal = causal;
    EXPECT_LE(max_abs_diff(run_linear(in, m).view(), want.view()), 1e-6) << "causal " << causal;
  }
}

TEST(LinearForward, StridedInputsAndF16AndOutputTypes) {
  // q, k, v stored as [B, N, H, D] and read through strides; f16 inputs; f64 and bf16 outputs.
  const int64_t B = 2, H = 2, N = 33, D = 16;
  for (DType dtype : {DType::f32, DType::f16}) {
    LinearCase c;
    c.b = B, c.hq = H, c.hkv = H, c.n = N, c.dk = D, c.dv = D, c.dtype = dtype;
    const LinearInputs in = linear_inputs(c, 51);
    std::vector<Tensor> bnhd;
    for (const Tensor* t : {&in.q, &in.k, &in.v}) {
      Tensor x(dtype, {B, N, H, D});
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < N; ++i)
            for (int64_t d = 0; d < D; ++d) x.mut().set(t->view().get(b, h, i, d), b, i, h, d);
      bnhd.push_back(std::move(x));
    }
    const auto as_bhnd = [&](const Tensor& x) { return TensorView(x.data(), dtype, {B, H, N, D}, {N * H * D, D, H * D, 1}); };
    for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention}) {
      const LinearMethod mr = method(kind, true, H);
      const Tensor exact = run_linear_ref(in, mr, RefPrecision::f64), base = run_linear_ref(in, mr, RefPrecision::input);
      for (DType out : {DType::f32, DType::f64}) {
        Tensor o(out, {B, H, N, D});
        linear_attend_into(as_bhnd(bnhd[0]), as_bhnd(bnhd[1]), as_bhnd(bnhd[2]), mr, o.mut());
        expect_within_rule(o.view(), exact.view(), base.view(), describe(c, mr));
      }
      Tensor o16(DType::bf16, {B, H, N, D});
      linear_attend_into(in.q.view(), in.k.view(), in.v.view(), mr, o16.mut());
      EXPECT_LE(max_abs_diff(o16.view(), exact.view()), 2 * max_abs_diff(base.view(), exact.view()) + 1e-2);
    }
  }
}

TEST(LinearForward, KernelRefIsTheReference) {
  LinearCase c;
  const LinearInputs in = linear_inputs(c, 61);
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention}) {
    LinearMethod m = method(kind, true, c.hq);
    m.kernel = Kernel::ref;
    EXPECT_EQ(max_abs_diff(run_linear(in, m, DType::f64).view(), run_linear_ref(in, m, RefPrecision::f64).view()), 0.0);
  }
}

TEST(LinearForward, BitwiseIdenticalForAnyThreadCount) {
  LinearCase c;
  c.b = 3, c.hq = 4, c.hkv = 2, c.n = 150;
  const LinearInputs in = linear_inputs(c, 71);
  const int before = omp_get_max_threads();
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    for (bool causal : {true, false})
      for (const LinearMethod& m : forms_of(method(kind, causal || kind == LinearKind::retention, c.hq))) {
      std::vector<Tensor> outs;
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        outs.push_back(run_linear(in, m));
      }
      omp_set_num_threads(before);
      for (size_t i = 1; i < outs.size(); ++i)
        EXPECT_EQ(std::memcmp(outs[0].data(), outs[i].data(), outs[0].nbytes()), 0) << linear_method_string(m);
    }
}

// The vector loops (linear_simd.cpp) on every compiled Highway target, the portable
// baseline included: odd sizes put every loop's tail to work.
TEST(LinearForward, EverySimdTarget) {
  LinearCase c;
  c.hq = 3, c.hkv = 1, c.n = 45, c.dk = 19, c.dv = 13;
  const LinearInputs in = linear_inputs(c, 101);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention}) {
      LinearMethod m = method(kind, true, c.hq);
      m.features = 21;
      m.chunk = 16;
      const Tensor exact = run_linear_ref(in, m, RefPrecision::f64), base = run_linear_ref(in, m, RefPrecision::input);
      for (const LinearMethod& f : forms_of(m))
        expect_within_rule(run_linear(in, f).view(), exact.view(), base.view(),
                           fmt::format("{} target {}", describe(c, f), hwy::TargetName(target)));
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(LinearForward, EmptySequence) {
  LinearCase c;
  c.n = 0;
  const LinearInputs in = linear_inputs(c, 1);
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    EXPECT_EQ(run_linear(in, method(kind, true, c.hq)).numel(), 0);
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

// NaN in a key poisons its chunk and everything after it, never what came before, and never
// crashes; extreme decays (gamma near 0, gamma = 1 over long runs) stay finite and exact.
TEST(LinearForward, HostileNumerics) {
  LinearCase c;
  c.n = 200;
  LinearInputs in = linear_inputs(c, 81);
  const int64_t bad = 100;
  in.k.mut().set(NAN, 0, 0, bad, 3);
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    for (LinearForm form : {LinearForm::chunkwise, LinearForm::recurrent, LinearForm::parallel}) {
      LinearMethod m = method(kind, true, c.hq);
      m.form = form;
      m.chunk = 16;
      const Tensor o = run_linear(in, m);
      for (int64_t i = 0; i < c.n; ++i) {
        // Head 0 reads the NaN key: finite before its chunk, NaN from the key on; head 1 never sees it.
        const bool finite = std::isfinite(o.view().get(0, 0, i, 0));
        if (i < bad / 16 * 16) {
          EXPECT_TRUE(finite) << linear_method_string(m) << " row " << i;
        }
        if (i >= bad) {
          EXPECT_FALSE(finite) << linear_method_string(m) << " row " << i;
        }
        EXPECT_TRUE(std::isfinite(o.view().get(0, 1, i, 0))) << linear_method_string(m) << " row " << i;
      }
    }
  const LinearInputs clean = linear_inputs(c, 82);
  for (std::vector<double> gamma : {std::vector<double>{1e-30, 1e-3}, std::vector<double>{1.0, 1.0}}) {
    LinearMethod m;
    m.kind = LinearKind::retention;
    m.gamma = gamma;
    const Tensor exact = run_linear_ref(clean, m, RefPrecision::f64), base = run_linear_ref(clean, m, RefPrecision::input);
    for (const LinearMethod& f : forms_of(m))
      expect_within_rule(run_linear(clean, f).view(), exact.view(), base.view(), describe(c, f));
  }
}

// Large queries and keys, with eps = 0 so that the output is the ratio of the sums however
// small they are. At |x| about 18 every form stays within 1e-5 of the f64 definition. At |x|
// about 28 the unstabilised features are e^-150 .. e^-40, under f32's range: the plain f32
// definition loses the rows (0 / 0), and the keys inside one chunk differ by more than f32's
// range, which the recurrent form (scales raised token by token) and the non-causal state
// form (every query sees the largest key) survive within 1e-5.
TEST(LinearForward, PerformerStabilisedForLargeInputs) {
  LinearCase c;
  c.n = 50;
  for (double amp : {8.0, 12.0}) {
    const LinearInputs in = linear_inputs(c, 91, amp);
    for (bool causal : {true, false}) {
      LinearMethod m = method(LinearKind::performer, causal, c.hq);
      m.eps = 0;
      const Tensor exact = run_linear_ref(in, m, RefPrecision::f64);
      if (amp > 10) {
        EXPECT_GT(max_abs_diff(run_linear_ref(in, m, RefPrecision::input).view(), exact.view()), 0.1);
      }
      for (const LinearMethod& f : forms_of(m)) {
        if (amp < 10 || f.form == LinearForm::recurrent || !causal) {
          EXPECT_LE(max_abs_diff(run_linear(in, f).view(), exact.view()), 1e-5) << linear_method_string(f) << " amp " << amp;
        }
      }
    }
  }
}

}  // namespace
}  // namespace attnkit
