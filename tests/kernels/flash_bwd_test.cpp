// Tests for the attention backward: the f64 reference against finite differences, the
// flash kernel against the reference under the tolerance rule (each gradient's max error
// against the f64 oracle at most twice the error of the plain reference run in the input
// precision, plus a small absolute slack where that baseline happens to be exact), bitwise
// identical gradients for 1, 2 and 3 threads, every SIMD target, rows with no key, NaN
// reaching only what sees it, and argument errors.
#include <omp.h>

#include <cmath>
#include <string>

#include <fmt/format.h>

#include <hwy/targets.h>

#include <gtest/gtest.h>

#include "attnkit/backward.hpp"
#include "attnkit/error.hpp"
#include "kernels/flash.hpp"
#include "kernels/flash_bwd.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;

using Case = testing::AttnCase;
using testing::describe;

struct Problem {
  Tensor q, k, v, d_o;
  AttendOptions opts;
};

Problem make_problem(const Case& c, uint64_t seed, DType dtype) {
  Problem p{random_tensor({c.b, c.hq, c.nq, c.dqk}, seed, dtype, 2.0),
            random_tensor({c.b, c.hkv, c.nk, c.dqk}, seed + 1, dtype, 2.0),
            random_tensor({c.b, c.hkv, c.nk, c.dv}, seed + 2, dtype),
            random_tensor({c.b, c.hq, c.nq, c.dv}, seed + 3, dtype), {}};
  p.opts.pattern = Pattern::parse(c.pattern);
  p.opts.softcap = c.softcap;
  if (c.alibi) p.opts.alibi_slopes = alibi_slopes(c.hq);
  if (c.sinks)
    for (int64_t h = 0; h < c.hq; ++h) p.opts.sink_logits.push_back(0.5 * static_cast<double>(h % 3) - 0.3);
  return p;
}

struct Grads {
  Tensor dq, dk, dv, dsink;
};

Grads alloc_grads(const Case& c, DType t) {
  return {Tensor(t, {c.b, c.hq, c.nq, c.dqk}), Tensor(t, {c.b, c.hkv, c.nk, c.dqk}), Tensor(t, {c.b, c.hkv, c.nk, c.dv}),
          c.sinks ? Tensor(t, {c.hq}) : Tensor()};
}

MutTensorView sink_view(Grads& g) { return g.dsink.numel() > 0 ? g.dsink.mut() : MutTensorView(); }

// The forward's o and lse (from the f64 reference, as f32 tensors like attend() returns).
struct Forward {
  Tensor o, lse;
};
Forward forward(const Problem& p, const Case& c) {
  Forward f{Tensor(DType::f32, {c.b, c.hq, c.nq, c.dv}), Tensor(DType::f32, {c.b, c.hq, c.nq})};
  attention_reference(p.q.view(), p.k.view(), p.v.view(), p.opts, f.o.mut(), f.lse.mut());
  return f;
}

Grads run_ref(const Problem& p, const Forward& f, const Case& c, RefPrecision precision) {
  Grads g = alloc_grads(c, DType::f64);
  attention_backward_reference(p.q.view(), p.k.view(), p.v.view(), f.o.view(), f.lse.view(), p.d_o.view(), p.opts,
                               g.dq.mut(), g.dk.mut(), g.dv.mut(), sink_view(g), precision);
  return g;
}

Grads run_flash(const Problem& p, const Forward& f, const Case& c, const flash::FlashBwdConfig& cfg = {}) {
  Grads g = alloc_grads(c, DType::f32);
  flash::flash_backward(p.q.view(), p.k.view(), p.v.view(), f.o.view(), f.lse.view(), p.d_o.view(), p.opts, g.dq.mut(),
                        g.dk.mut(), g.dv.mut(), sink_view(g), cfg);
  return g;
}

double max_abs_1d(const Tensor& a, const Tensor& b) {
  double worst = 0;
  for (int64_t i = 0; i < a.numel(); ++i) worst = std::max(worst, std::fabs(a.view().load(i) - b.view().load(i)));
  return worst;
}

void expect_within_tolerance(const Case& c, uint64_t seed = 7) {
  const Problem p = make_problem(c, seed, c.dtype);
  const Forward f = forward(p, c);
  const Grads exact = run_ref(p, f, c, RefPrecision::f64);
  const Grads base = run_ref(p, f, c, RefPrecision::input);
  const Grads got = run_flash(p, f, c);
  // The slack covers the f32 LSE the kernel starts from (the reference recomputes it).
  const double slack = c.dtype == DType::f32 ? 2e-5 : 1e-4;
  const auto check = [&](const Tensor& g, const Tensor& e, const Tensor& b, const char* name) {
    const double bound = 2 * max_abs_diff(b.view(), e.view()) + slack;
    EXPECT_LE(max_abs_diff(g.view(), e.view()), bound) << name << " " << describe(c);
  };
  check(got.dq, exact.dq, base.dq, "dq");
  check(got.dk, exact.dk, base.dk, "dk");
  check(got.dv, exact.dv, base.dv, "dv");
  if (c.sinks) {
    EXPECT_LE(max_abs_1d(got.dsink, exact.dsink), 2 * max_abs_1d(base.dsink, exact.dsink) + 10 * slack)
        << "dsink " << describe(c);
  }
}

const std::vector<std::string> kPatterns = {"none", "causal", "window:5,0", "window:2,3", "window:4,0,sinks=2",
                                            "longformer:w=3,d=2,global=0", "bigbird:block=4,window=3,global=1,random=1,seed=5",
                                            "strided:stride=4", "fixed:stride=8,c=2"};

// The loss L = sum(dO o O) of the f64 reference forward; its gradient is the backward's.
double loss(const Problem& p, const Case& c) {
  Tensor o(DType::f64, {c.b, c.hq, c.nq, c.dv});
  attention_reference(p.q.view(), p.k.view(), p.v.view(), p.opts, o.mut(), MutTensorView());
  double l = 0;
  for (int64_t i = 0; i < o.numel(); ++i) l += o.view().load(i) * p.d_o.view().load(i);
  return l;
}

TEST(AttentionBackwardRef, AgreesWithFiniteDifferences) {
  const std::vector<Case> cases = {
      {1, 2, 1, 5, 7, 4, 3, "causal", DType::f64},
      {1, 4, 2, 6, 6, 3, 5, "window:2,1", DType::f64, 1.5, true},
      {2, 2, 2, 4, 9, 4, 4, "window:3,0,sinks=1", DType::f64, 0, false, true},
      {1, 3, 1, 5, 7, 2, 2, "bigbird:block=2,window=1,global=1,random=1,seed=3", DType::f64, 2.0, true, true},
  };
  for (const Case& c : cases) {
    Problem p = make_problem(c, 31, DType::f64);
    const Forward f = forward(p, c);
    const Grads g = run_ref(p, f, c, RefPrecision::f64);
    const double h = 1e-6;
    const auto check = [&](Tensor& x, const Tensor& grad, const char* name) {
      for (int64_t i = 0; i < x.numel(); ++i) {
        const double x0 = x.view().load(i);
        x.mut().store(i, x0 + h);
        const double up = loss(p, c);
        x.mut().store(i, x0 - h);
        const double down = loss(p, c);
        x.mut().store(i, x0);
        const double fd = (up - down) / (2 * h);
        EXPECT_NEAR(grad.view().load(i), fd, 1e-6 * (1 + std::fabs(fd))) << name << "[" << i << "] " << describe(c);
      }
    };
    check(p.q, g.dq, "dq");
    check(p.k, g.dk, "dk");
    check(p.v, g.dv, "dv");
    if (c.sinks)
      for (int64_t h0 = 0; h0 < c.hq; ++h0) {
        const double z = p.opts.sink_logits[size_t(h0)];
        p.opts.sink_logits[size_t(h0)] = z + h;
        const double up = loss(p, c);
        p.opts.sink_logits[size_t(h0)] = z - h;
        const double down = loss(p, c);
        p.opts.sink_logits[size_t(h0)] = z;
        EXPECT_NEAR(g.dsink.view().load(h0), (up - down) / (2 * h), 1e-6) << "dsink " << describe(c);
      }
  }
}

TEST(FlashBackward, OddSizesEveryPatternAndHeadLayout) {
  const std::vector<int64_t> lens = {1, 3, 17, 97};
  for (const std::string& pattern : kPatterns)
    for (int64_t nq : lens)
      for (int64_t nk : lens) {
        if (pattern.rfind("bigbird", 0) == 0 && nq > nk) continue;
        for (auto [hq, hkv] : {std::pair{2, 2}, std::pair{6, 2}, std::pair{4, 1}})
          expect_within_tolerance({1, hq, hkv, nq, nk, 32, 32, pattern});
      }
}

TEST(FlashBackward, LongSequences) {
  expect_within_tolerance({1, 2, 1, 1025, 1025, 32, 32, "causal"});
  expect_within_tolerance({1, 1, 1, 1025, 1025, 16, 16, "window:100,0"});
  expect_within_tolerance({1, 1, 1, 300, 1025, 16, 16, "longformer:w=8,global=0+200"});
}

TEST(FlashBackward, HeadDimsIncludingMla) {
  for (auto [dqk, dv] : {std::pair{59, 59}, std::pair{128, 128}, std::pair{192, 128}, std::pair{576, 512},
                         std::pair{24, 40}, std::pair{1, 3}})
    for (const char* pattern : {"none", "causal"}) expect_within_tolerance({1, 4, 2, 17, 70, dqk, dv, pattern});
}

TEST(FlashBackward, GroupsLargerThanATile) { expect_within_tolerance({1, 130, 1, 3, 40, 16, 16, "causal"}); }

TEST(FlashBackward, VariantsAndLearnedSinks) {
  for (const char* pattern : {"none", "causal", "window:9,2", "window:6,0,sinks=3"}) {
    expect_within_tolerance({1, 4, 2, 33, 40, 32, 32, pattern, DType::f32, 0.0, true});
    expect_within_tolerance({1, 4, 2, 33, 40, 32, 32, pattern, DType::f32, 2.5, false});
    expect_within_tolerance({1, 4, 2, 33, 40, 32, 32, pattern, DType::f32, 1.0, true, true});
    expect_within_tolerance({2, 4, 1, 20, 20, 16, 24, pattern, DType::f32, 0.0, false, true});
  }
}

TEST(FlashBackward, LowPrecisionInputs) {
  for (DType t : {DType::bf16, DType::f16})
    for (const char* pattern : {"none", "causal", "window:7,0", "longformer:w=4,d=3,global=2"})
      expect_within_tolerance({1, 6, 2, 33, 97, 64, 64, pattern, t});
}

TEST(FlashBackward, RowsWithNoKeyGetZeroGradients) {
  for (bool sinks : {false, true}) {
    const Case c{1, 2, 1, 9, 3, 16, 16, "causal", DType::f32, 0, false, sinks};  // rows 0..5 see no key
    const Problem p = make_problem(c, 3, DType::f32);
    const Forward f = forward(p, c);
    const Grads g = run_flash(p, f, c);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < 6; ++i)
        for (int64_t ch = 0; ch < 16; ++ch) EXPECT_EQ(g.dq.view().get(0, h, i, ch), 0.0);
    expect_within_tolerance(c);
  }
  const Case empty{1, 2, 1, 4, 0, 16, 16, "none"};
  expect_within_tolerance(empty);
}

TEST(FlashBackward, BitwiseIdenticalForOneTwoAndThreeThreads) {
  for (const char* pattern : {"causal", "window:40,3", "bigbird:block=16,window=1,global=1,random=1,seed=2"}) {
    const Case c{2, 8, 2, 300, 300, 64, 48, pattern, DType::f32, 0, true, true};
    const Problem p = make_problem(c, 5, DType::f32);
    const Forward f = forward(p, c);
    std::vector<Grads> runs;
    const int before = omp_get_max_threads();
    for (int threads : {1, 2, 3, 2}) {
      omp_set_num_threads(threads);
      runs.push_back(run_flash(p, f, c));
    }
    omp_set_num_threads(before);
    for (size_t r = 1; r < runs.size(); ++r)
      for (auto [a, b] : {std::pair{&runs[0].dq, &runs[r].dq}, std::pair{&runs[0].dk, &runs[r].dk},
                          std::pair{&runs[0].dv, &runs[r].dv}, std::pair{&runs[0].dsink, &runs[r].dsink}})
        EXPECT_EQ(std::memcmp(a->data(), b->data(), static_cast<size_t>(a->numel()) * 4), 0) << pattern << " run " << r;
  }
}

TEST(FlashBackward, EverySimdTarget) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    expect_within_tolerance({1, 4, 2, 37, 70, 40, 24, "causal", DType::f32, 1.5, true, true});
    expect_within_tolerance({1, 2, 1, 17, 66, 64, 64, "longformer:w=5,d=2,global=1", DType::bf16});
  }
  hwy::SetSupportedTargetsForTest(0);
}

// NaN or inf in one input row reaches exactly the gradients the reference gives it: the
// oracle (which never touches hidden pairs) and the kernel agree on which entries are NaN.
TEST(FlashBackward, NonFiniteInputsReachOnlyWhatSeesThem) {
  const Case c{1, 2, 1, 70, 70, 16, 16, "causal"};
  struct Poison {
    const char* what;
    int64_t row;
    double value;
  };
  for (const char* pattern : {"causal", "window:9,0", "longformer:w=3,global=5"})
    for (const Poison& x : {Poison{"k", 69, NAN}, Poison{"v", 69, INFINITY}, Poison{"v", 30, NAN},
                            Poison{"q", 10, NAN}, Poison{"do", 10, INFINITY}, Poison{"k", 12, -INFINITY}}) {
      Case cc = c;
      cc.pattern = pattern;
      Problem p = make_problem(cc, 8, DType::f32);
      const std::string w = x.what;
      Tensor& t = w == "q" ? p.q : w == "k" ? p.k : w == "v" ? p.v : p.d_o;
      t.mut().set(x.value, 0, 0, x.row, 3);
      const Forward f = forward(p, cc);
      const Grads exact = run_ref(p, f, cc, RefPrecision::f64);
      const Grads got = run_flash(p, f, cc);
      for (auto [g, e] : {std::pair{&got.dq, &exact.dq}, std::pair{&got.dk, &exact.dk}, std::pair{&got.dv, &exact.dv}})
        for (int64_t i = 0; i < g->numel(); ++i) {
          const double a = g->view().load(i), b = e->view().load(i);
          ASSERT_EQ(std::isfinite(a), std::isfinite(b)) << pattern << " " << w << " row " << x.row << " at " << i;
          if (std::isfinite(b)) {
            ASSERT_NEAR(a, b, 1e-3 * (1 + std::fabs(b))) << pattern << " " << w << " at " << i;
          }
        }
    }
}

TEST(FlashBackward, BadArgumentsNameTheArgument) {
  const Case c{1, 2, 1, 5, 5, 8, 8, "causal"};
  const Problem p = make_problem(c, 1, DType::f32);
  const Forward f = forward(p, c);
  Grads g = alloc_grads(c, DType::f32);
  const auto error_of = [&](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  Tensor short_lse(DType::f32, {1, 2, 4});
  EXPECT_NE(error_of([&] {
              attend_backward_into(p.q.view(), p.k.view(), p.v.view(), f.o.view(), short_lse.view(), p.d_o.view(),
                                   p.opts, g.dq.mut(), g.dk.mut(), g.dv.mut(), MutTensorView());
            }).find("lse must have shape"),
            std::string::npos);
  Tensor wrong_dk(DType::f32, {1, 2, 5, 8});
  EXPECT_NE(error_of([&] {
              attend_backward_into(p.q.view(), p.k.view(), p.v.view(), f.o.view(), f.lse.view(), p.d_o.view(), p.opts,
                                   g.dq.mut(), wrong_dk.mut(), g.dv.mut(), MutTensorView());
            }).find("dk must have shape"),
            std::string::npos);
  Tensor dsink(DType::f32, {2});
  EXPECT_NE(error_of([&] {
              attend_backward_into(p.q.view(), p.k.view(), p.v.view(), f.o.view(), f.lse.view(), p.d_o.view(), p.opts,
                                   g.dq.mut(), g.dk.mut(), g.dv.mut(), dsink.mut());
            }).find("dsink: given, but opts.sink_logits is empty"),
            std::string::npos);
  AttendOptions bad = p.opts;
  bad.sink_logits = {1.0};
  EXPECT_NE(error_of([&] { attend_backward(p.q.view(), p.k.view(), p.v.view(), f.o.view(), f.lse.view(), p.d_o.view(), bad); })
                .find("sink_logits has 1 entries"),
            std::string::npos);
}

TEST(FlashBackward, AttendBackwardMatchesTheKernelAndTheReference) {
  const Case c{1, 4, 2, 40, 50, 16, 16, "window:7,0", DType::f32, 0, true, true};
  const Problem p = make_problem(c, 2, DType::f32);
  const Forward f = forward(p, c);
  const Gradients a = attend_backward(p.q.view(), p.k.view(), p.v.view(), f.o.view(), f.lse.view(), p.d_o.view(), p.opts);
  const Grads k = run_flash(p, f, c);
  EXPECT_EQ(max_abs_diff(a.dq.view(), k.dq.view()), 0.0);
  EXPECT_EQ(max_abs_1d(a.dsink, k.dsink), 0.0);
  AttendOptions ref = p.opts;
  ref.kernel = Kernel::ref;
  const Gradients r = attend_backward(p.q.view(), p.k.view(), p.v.view(), f.o.view(), f.lse.view(), p.d_o.view(), ref);
  EXPECT_LT(max_abs_diff(a.dk.view(), r.dk.view()), 1e-4);
  const Gradients b16 =
      attend_backward(p.q.view(), p.k.view(), p.v.view(), f.o.view(), f.lse.view(), p.d_o.view(), p.opts, DType::bf16);
  EXPECT_EQ(b16.dv.dtype(), DType::bf16);
  EXPECT_LT(max_abs_diff(b16.dv.view(), a.dv.view()), 0.05);
}

// The forward with learned sink logits: flash (one pass and split-KV) against the reference.
TEST(FlashForward, LearnedSinkLogits) {
  for (const char* pattern : {"none", "causal", "window:5,0"})
    for (int64_t min_items : {1, 64}) {
      const Case c{1, 4, 2, 9, 70, 16, 16, pattern, DType::f32, 0, false, true};
      Problem p = make_problem(c, 4, DType::f32);
      p.opts.sink_logits = {-1.0, 0.0, 2.0, 30.0};  // the last one dominates every row
      Tensor o(DType::f32, {1, 4, 9, 16}), lse(DType::f32, {1, 4, 9});
      flash::FlashConfig cfg;
      cfg.min_work_items = min_items;
      flash::flash_forward(p.q.view(), p.k.view(), p.v.view(), p.opts, o.mut(), lse.mut(), cfg);
      const Forward f = forward(p, c);
      EXPECT_LT(max_abs_diff(o.view(), f.o.view()), 1e-5) << pattern << " min_items " << min_items;
      EXPECT_LT(max_abs_diff(lse.view(), f.lse.view()), 1e-5) << pattern << " min_items " << min_items;
      EXPECT_NEAR(lse.view().get(0, 3, 0), 30.0, 1e-3);
    }
  // A row with no visible key but a sink: O = 0 and LSE = z.
  const Case c{1, 2, 1, 5, 2, 8, 8, "causal", DType::f32, 0, false, true};
  const Problem p = make_problem(c, 6, DType::f32);
  const Output out = attend(p.q.view(), p.k.view(), p.v.view(), p.opts);
  EXPECT_EQ(out.o.view().get(0, 1, 0, 0), 0.0);
  EXPECT_NEAR(out.lse.view().get(0, 1, 0), p.opts.sink_logits[1], 1e-6);
}

}  // namespace
}  // namespace attnkit
