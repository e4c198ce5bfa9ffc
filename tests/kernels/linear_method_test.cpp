// Tests of linear.hpp's method descriptions and argument checking: method strings parse and
// print back, retention's default decays are torchscale's, FLOP counts follow the form, and
// bad input (m < 1, gamma outside (0, 1], a feature map without a positive normaliser,
// non-causal retention or decode state, shape mismatches) gets an Error naming the argument.
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "kernels/linear_testing.hpp"

namespace attnkit {
namespace {

using testing::LinearCase;
using testing::linear_inputs;
using testing::LinearInputs;

// The Error's message, or "no error".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

#define EXPECT_ERROR_MENTIONS(expr, text) \
  EXPECT_NE(error_of([&] { expr; }).find(text), std::string::npos) << error_of([&] { expr; })

TEST(LinearMethod, StringsParseAndPrintBack) {
  for (const char* spec : {"linear", "linear:eps=0.001", "performer:m=256,seed=1", "performer:m=16,seed=9,eps=0",
                           "retention:gamma=0.97", "retention:gamma=0.9/0.99", "linear:chunk=128,form=parallel",
                           "performer:m=8,seed=2,form=recurrent,scale=0.5", "linear:causal=0", "retention:kernel=ref",
                           "retention:form=chunkwise"}) {
    const LinearMethod m = parse_linear_method(spec);
    const std::string back = linear_method_string(m);
    const LinearMethod again = parse_linear_method(back);
    EXPECT_EQ(linear_method_string(again), back) << spec;
    EXPECT_EQ(again.kind, m.kind);
    EXPECT_EQ(again.eps, m.eps);
    EXPECT_EQ(again.features, m.features);
    EXPECT_EQ(again.seed, m.seed);
    EXPECT_EQ(again.gamma, m.gamma);
    EXPECT_EQ(again.scale, m.scale);
    EXPECT_EQ(again.chunk, m.chunk);
    EXPECT_EQ(again.form, m.form);
    EXPECT_EQ(again.causal, m.causal);
    EXPECT_EQ(again.kernel, m.kernel);
  }
  const LinearMethod p = parse_linear_method("performer:m=64,seed=3");
  EXPECT_EQ(p.kind, LinearKind::performer);
  EXPECT_EQ(p.features, 64);
  EXPECT_EQ(p.seed, 3u);
  EXPECT_EQ(parse_linear_method("retention:gamma=0.97").gamma, std::vector<double>{0.97});
  EXPECT_EQ(linear_method_string(LinearMethod()), "linear");
}

TEST(LinearMethod, BadStringsNameTheKey) {
  EXPECT_ERROR_MENTIONS(parse_linear_method("softmax"), "not one of linear, performer, retention");
  EXPECT_ERROR_MENTIONS(parse_linear_method("performer:m=0"), "m (features, 0) must be in [1,");
  EXPECT_ERROR_MENTIONS(parse_linear_method("performer:m=abc"), "key 'm' needs a number");
  EXPECT_ERROR_MENTIONS(parse_linear_method("retention:gamma=1.5"), "gamma[0] (1.5) must be in (0, 1]");
  EXPECT_ERROR_MENTIONS(parse_linear_method("retention:gamma=0"), "must be in (0, 1]");
  EXPECT_ERROR_MENTIONS(parse_linear_method("retention:gamma=nan"), "must be in (0, 1]");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:m=4"), "key 'm' does not apply to linear");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:gamma=0.9"), "key 'gamma' does not apply to linear");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:bogus=1"), "key 'bogus' is unknown");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:chunk"), "key 'chunk' needs a value");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:chunk=0"), "chunk (0) must be in [1, 4096]");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:form=fast"), "key 'form' is 'fast'");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:eps=-1"), "eps (-1) must be finite and >= 0");
  EXPECT_ERROR_MENTIONS(parse_linear_method("retention:causal=0"), "retention is causal only");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:causal=0,form=recurrent"), "form=recurrent needs a causal method");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:"), "is empty");
}

TEST(LinearMethod, FeatureMapsWithoutAPositiveNormaliserAreRefused) {
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:phi=identity"), "phi=identity has no positive normaliser");
  EXPECT_ERROR_MENTIONS(parse_linear_method("linear:phi=relu"), "phi=relu has no positive normaliser");
  EXPECT_EQ(parse_linear_method("linear:phi=elu1").feature, LinearFeature::elu1);
  LinearCase c;
  const LinearInputs in = linear_inputs(c, 1);
  LinearMethod m;
  m.feature = LinearFeature::identity;
  EXPECT_ERROR_MENTIONS(linear_attend(in.q.view(), in.k.view(), in.v.view(), m), "phi=identity has no positive normaliser");
  EXPECT_ERROR_MENTIONS(LinearState(m, 1, 2, 2, 16, 24), "phi=identity");
}

TEST(LinearMethod, DefaultDecaysAndScales) {
  LinearMethod r;
  r.kind = LinearKind::retention;
  const std::vector<double> g = linear_gammas(r, 4);
  for (int64_t h = 0; h < 4; ++h) EXPECT_EQ(g[static_cast<size_t>(h)], 1 - std::pow(2.0, -5.0 - static_cast<double>(h)));
  r.gamma = {0.5};
  EXPECT_EQ(linear_gammas(r, 3), (std::vector<double>{0.5, 0.5, 0.5}));
  EXPECT_EQ(linear_gammas(LinearMethod(), 2), (std::vector<double>{1, 1}));
  EXPECT_EQ(linear_scale(r, 64), 0.125);
  r.scale = 0.3;
  EXPECT_EQ(linear_scale(r, 64), 0.3);
}

TEST(LinearMethod, BadInputsNameTheArgument) {
  LinearCase c;
  c.hq = 4, c.hkv = 2;
  const LinearInputs in = linear_inputs(c, 1);
  const auto attend = [&](const LinearMethod& m) { return linear_attend(in.q.view(), in.k.view(), in.v.view(), m); };
  LinearMethod m;
  m.kind = LinearKind::performer;
  m.features = 0;
  EXPECT_ERROR_MENTIONS(attend(m), "performer: m (features, 0)");
  m = LinearMethod();
  m.kind = LinearKind::retention;
  m.gamma = {0.9, 1.2, 0.9, 0.9};
  EXPECT_ERROR_MENTIONS(attend(m), "gamma[1] (1.2) must be in (0, 1]");
  m.gamma = {0.9, 0.9};
  EXPECT_ERROR_MENTIONS(attend(m), "gamma has 2 values");
  m.gamma.clear();
  m.causal = false;
  EXPECT_ERROR_MENTIONS(attend(m), "retention is causal only");
  m = LinearMethod();
  m.gamma = {0.9};
  EXPECT_ERROR_MENTIONS(attend(m), "gamma is retention's decay");
  // Shapes.
  const Tensor v_short = testing::random_tensor({c.b, c.hkv, c.n - 1, c.dv}, 3);
  EXPECT_ERROR_MENTIONS(linear_attend(in.q.view(), in.k.view(), v_short.view(), LinearMethod()),
                        "sequence lengths of k and v disagree");
  const Tensor k_short = testing::random_tensor({c.b, c.hkv, c.n - 1, c.dk}, 3);
  EXPECT_ERROR_MENTIONS(linear_attend(in.q.view(), k_short.view(), v_short.view(), LinearMethod()),
                        "must have q's length (37) for a causal method");
  const Tensor k3 = testing::random_tensor({c.b, 3, c.n, c.dk}, 3), v3 = testing::random_tensor({c.b, 3, c.n, c.dv}, 4);
  EXPECT_ERROR_MENTIONS(linear_attend(in.q.view(), k3.view(), v3.view(), LinearMethod()), "q_heads (4) must be a multiple");
  const Tensor k_wide = testing::random_tensor({c.b, c.hkv, c.n, c.dk + 1}, 3);
  EXPECT_ERROR_MENTIONS(linear_attend(in.q.view(), k_wide.view(), in.v.view(), LinearMethod()), "head dims of q and k");
  Tensor o_bad(DType::f32, {c.b, c.hq, c.n, c.dv + 1});
  EXPECT_ERROR_MENTIONS(linear_attend_into(in.q.view(), in.k.view(), in.v.view(), LinearMethod(), o_bad.mut()),
                        "o must have shape [B, Hq, N, Dv]");
  Tensor o(DType::f32, {c.b, c.hq, c.n, c.dv});
  const MutTensorView overlapping(o.data(), DType::f32, {c.b, c.hq, c.n, c.dv}, {0, 0, c.dv, 1});
  EXPECT_ERROR_MENTIONS(linear_attend_into(in.q.view(), in.k.view(), in.v.view(), LinearMethod(), overlapping),
                        "o: strides make elements overlap");
}

TEST(LinearMethod, DecodeStateChecksItsArguments) {
  LinearMethod nc;
  nc.causal = false;
  EXPECT_ERROR_MENTIONS(LinearState(nc, 1, 2, 2, 16, 16), "LinearState: the method is not causal");
  EXPECT_ERROR_MENTIONS(LinearState(LinearMethod(), 1, 3, 2, 16, 16), "q_heads (3) must be a multiple of kv_heads (2)");
  LinearState s(LinearMethod(), 1, 2, 2, 16, 24);
  LinearCase c;
  c.n = 3;
  const LinearInputs in = linear_inputs(c, 1);
  Tensor o(DType::f32, {1, 2, 3, 24});
  LinearCase wide = c;
  wide.dk = 8;
  const LinearInputs other = linear_inputs(wide, 2);
  EXPECT_ERROR_MENTIONS(s.step(other.q.view(), other.k.view(), other.v.view(), o.mut()),
                        "the head dim of q and k is 8, the state was made for 16");
  LinearCase empty = c;
  empty.n = 0;
  const LinearInputs none = linear_inputs(empty, 3);
  Tensor o0(DType::f32, {1, 2, 0, 24});
  EXPECT_ERROR_MENTIONS(s.step(none.q.view(), none.k.view(), none.v.view(), o0.mut()), "the same T >= 1 tokens");
  Tensor o_bad(DType::f32, {1, 2, 4, 24});
  EXPECT_ERROR_MENTIONS(s.step(in.q.view(), in.k.view(), in.v.view(), o_bad.mut()), "o must have shape [B, Hq, T, Dv]");
  EXPECT_EQ(s.tokens(), 0);
}

TEST(LinearMethod, FlopsFollowTheForm) {
  LinearMethod m;
  // Chunkwise: linear in n; parallel: quadratic.
  const double c1 = linear_flops(m, 1, 8, 8, 4096, 64, 64), c2 = linear_flops(m, 1, 8, 8, 8192, 64, 64);
  EXPECT_DOUBLE_EQ(c2 / c1, 2.0);
  // Per chunk of C = 64 and state head: 2 C F W (inter) + 2 C^2 (F + W) + 2 C F W (state), W = 65.
  EXPECT_DOUBLE_EQ(linear_flops(m, 1, 1, 1, 64, 64, 64), 2.0 * 64 * 64 * 65 * 2 + 2.0 * 64 * 64 * (64 + 65));
  m.form = LinearForm::parallel;
  const double p1 = linear_flops(m, 1, 8, 8, 4096, 64, 64), p2 = linear_flops(m, 1, 8, 8, 8192, 64, 64);
  EXPECT_NEAR(p2 / p1, 4.0, 0.1);
  m.kind = LinearKind::performer;
  m.features = 128;
  m.form = LinearForm::recurrent;
  // Per token: the feature maps of q and k (2 m Dk each), the state update and the read (2 m W each).
  EXPECT_DOUBLE_EQ(linear_flops(m, 1, 1, 1, 10, 64, 64), 10 * (2.0 * 2 * 128 * 64 + 2.0 * 2 * 128 * 65));
}

}  // namespace
}  // namespace attnkit
