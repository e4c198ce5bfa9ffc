// Tests of the linear-attention backward (linear.hpp): the f64 reference against central
// finite differences of the f64 definition, the kernel (chunkwise when causal, the state
// form when not) against the reference under the tolerance rule (each gradient's max error
// at most twice that of the reference run in the input precision, plus a small slack), the
// kernel against finite differences too, bitwise equality across thread counts, and errors.
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
using testing::LinearCase;
using testing::linear_inputs;
using testing::LinearInputs;
using testing::max_abs_diff;
using testing::random_tensor;

LinearMethod method(LinearKind kind, bool causal, int64_t q_heads, int64_t chunk = 64) {
  LinearMethod m;
  m.kind = kind;
  m.causal = causal;
  m.chunk = chunk;
  if (kind == LinearKind::performer) m.features = 24;
  if (kind == LinearKind::retention)
    for (int64_t h = 0; h < q_heads; ++h) m.gamma.push_back(0.75 + 0.2 * static_cast<double>(h) / static_cast<double>(q_heads));
  return m;
}

struct Grads {
  Tensor dq, dk, dv;
};

Grads alloc(const LinearCase& c, DType t) {
  return {Tensor(t, {c.b, c.hq, c.n, c.dk}), Tensor(t, {c.b, c.hkv, c.n, c.dk}), Tensor(t, {c.b, c.hkv, c.n, c.dv})};
}

Grads run_ref(const LinearInputs& in, const Tensor& dout, const LinearCase& c, const LinearMethod& m,
              RefPrecision precision) {
  Grads g = alloc(c, DType::f64);
  linear_backward_reference(in.q.view(), in.k.view(), in.v.view(), dout.view(), m, g.dq.mut(), g.dk.mut(), g.dv.mut(),
                            precision);
  return g;
}

Grads run_kernel(const LinearInputs& in, const Tensor& dout, const LinearCase& c, const LinearMethod& m) {
  Grads g = alloc(c, DType::f32);
  linear_attend_backward_into(in.q.view(), in.k.view(), in.v.view(), dout.view(), m, g.dq.mut(), g.dk.mut(), g.dv.mut());
  return g;
}

// L = sum(dout * o) of the f64 definition.
double loss(const LinearInputs& in, const Tensor& dout, const LinearMethod& m) {
  const Tensor o = testing::run_linear_ref(in, m, RefPrecision::f64);
  double l = 0;
  for (int64_t i = 0; i < o.numel(); ++i) l += o.view().load(i) * dout.view().load(i);
  return l;
}

// Central differences of loss() in every input element, against grads (any dtype).
void expect_matches_finite_differences(LinearInputs in, const Tensor& dout, const LinearMethod& m, const Grads& g,
                                       double tol, const std::string& what) {
  const double h = 1e-5;
  const auto check = [&](Tensor& x, const Tensor& grad, const char* name) {
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double x0 = x.view().load(i);
      x.mut().store(i, x0 + h);
      const double up = loss(in, dout, m);
      x.mut().store(i, x0 - h);
      const double down = loss(in, dout, m);
      x.mut().store(i, x0);
      const double fd = (up - down) / (2 * h), got = grad.view().load(i);
      EXPECT_NEAR(got, fd, tol * (1 + std::fabs(fd))) << name << "[" << i << "] " << what;
    }
  };
  check(in.q, g.dq, "dq");
  check(in.k, g.dk, "dk");
  check(in.v, g.dv, "dv");
}

TEST(LinearBackward, ReferenceAndKernelAgreeWithFiniteDifferences) {
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    for (bool causal : {true, false}) {
      if (kind == LinearKind::retention && !causal) continue;
      LinearCase c;
      c.b = 1, c.hq = 4, c.hkv = 2, c.n = 7, c.dk = 3, c.dv = 2, c.dtype = DType::f64;
      const LinearMethod m = method(kind, causal, c.hq, 3);
      const LinearInputs in = linear_inputs(c, 17);
      const Tensor dout = random_tensor({c.b, c.hq, c.n, c.dv}, 23, DType::f64);
      const std::string what = describe(c, m);
      expect_matches_finite_differences(in, dout, m, run_ref(in, dout, c, m, RefPrecision::f64), 1e-7, what);
      expect_matches_finite_differences(in, dout, m, run_kernel(in, dout, c, m), 2e-5, what + " kernel");
    }
}

void expect_within_rule(const LinearCase& c, const LinearMethod& m, uint64_t seed) {
  const LinearInputs in = linear_inputs(c, seed);
  const Tensor dout = random_tensor({c.b, c.hq, c.n, c.dv}, seed + 5, c.dtype);
  const Grads exact = run_ref(in, dout, c, m, RefPrecision::f64);
  const Grads base = run_ref(in, dout, c, m, RefPrecision::input);
  const Grads got = run_kernel(in, dout, c, m);
  const std::string what = describe(c, m);
  testing::expect_within_rule(got.dq.view(), exact.dq.view(), base.dq.view(), "dq " + what, 2e-6);
  testing::expect_within_rule(got.dk.view(), exact.dk.view(), base.dk.view(), "dk " + what, 2e-6);
  testing::expect_within_rule(got.dv.view(), exact.dv.view(), base.dv.view(), "dv " + what, 2e-6);
}

TEST(LinearBackward, KernelMatchesTheReference) {
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    for (bool causal : {true, false}) {
      if (kind == LinearKind::retention && !causal) continue;
      for (DType dtype : {DType::f32, DType::bf16})
        for (auto [hq, hkv] : {std::pair{2, 2}, std::pair{4, 2}, std::pair{3, 1}})
          for (int64_t n : {1, 40, 97})
            for (int64_t chunk : {1, 16, 64}) {
              LinearCase c;
              c.b = 2, c.hq = hq, c.hkv = hkv, c.n = n, c.dtype = dtype;
              expect_within_rule(c, method(kind, causal, hq, chunk), static_cast<uint64_t>(n * 3 + hq));
            }
    }
}

TEST(LinearBackward, EverySimdTarget) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
      for (bool causal : {true, false}) {
        if (kind == LinearKind::retention && !causal) continue;
        LinearCase c;
        c.hq = 3, c.hkv = 1, c.n = 41, c.dk = 19, c.dv = 13;
        expect_within_rule(c, method(kind, causal, c.hq, 16), 9);
      }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(LinearBackward, LongerSequencesAndHeadDims) {
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention}) {
    LinearCase c;
    c.b = 1, c.hq = 2, c.hkv = 1, c.n = 700, c.dk = 32, c.dv = 8;
    LinearMethod m = method(kind, true, c.hq, 64);
    if (kind == LinearKind::retention) m.gamma = {0.99, 0.999};
    expect_within_rule(c, m, 3);
  }
}

TEST(LinearBackward, BitwiseIdenticalForAnyThreadCount) {
  LinearCase c;
  c.b = 2, c.hq = 4, c.hkv = 2, c.n = 90;
  const LinearInputs in = linear_inputs(c, 5);
  const Tensor dout = random_tensor({c.b, c.hq, c.n, c.dv}, 6, DType::f32);
  const int before = omp_get_max_threads();
  for (LinearKind kind : {LinearKind::linear, LinearKind::performer, LinearKind::retention})
    for (bool causal : {true, false}) {
      if (kind == LinearKind::retention && !causal) continue;
      const LinearMethod m = method(kind, causal, c.hq, 16);
      std::vector<Grads> runs;
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        runs.push_back(run_kernel(in, dout, c, m));
      }
      omp_set_num_threads(before);
      for (size_t i = 1; i < runs.size(); ++i) {
        EXPECT_EQ(std::memcmp(runs[0].dq.data(), runs[i].dq.data(), runs[0].dq.nbytes()), 0) << linear_method_string(m);
        EXPECT_EQ(std::memcmp(runs[0].dk.data(), runs[i].dk.data(), runs[0].dk.nbytes()), 0) << linear_method_string(m);
        EXPECT_EQ(std::memcmp(runs[0].dv.data(), runs[i].dv.data(), runs[0].dv.nbytes()), 0) << linear_method_string(m);
      }
    }
}

TEST(LinearBackward, BadGradientShapesNameTheArgument) {
  LinearCase c;
  const LinearInputs in = linear_inputs(c, 1);
  const Tensor dout = random_tensor({c.b, c.hq, c.n, c.dv}, 2, DType::f32);
  Grads g = alloc(c, DType::f32);
  const LinearMethod m;
  const auto message = [&](const TensorView& d_o, const MutTensorView& dq, const MutTensorView& dk, const MutTensorView& dv) {
    try {
      linear_attend_backward_into(in.q.view(), in.k.view(), in.v.view(), d_o, m, dq, dk, dv);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Tensor wrong(DType::f32, {c.b, c.hq, c.n, c.dv + 1});
  EXPECT_NE(message(wrong.view(), g.dq.mut(), g.dk.mut(), g.dv.mut()).find("dout"), std::string::npos);
  EXPECT_NE(message(dout.view(), wrong.mut(), g.dk.mut(), g.dv.mut()).find("dq"), std::string::npos);
  EXPECT_NE(message(dout.view(), g.dq.mut(), wrong.mut(), g.dv.mut()).find("dk"), std::string::npos);
  EXPECT_NE(message(dout.view(), g.dq.mut(), g.dk.mut(), wrong.mut()).find("dv"), std::string::npos);
}

}  // namespace
}  // namespace attnkit
