// Tests of the Performer's random features (linear.hpp): the draw is deterministic in
// (seed, m, Dk), orthogonal inside each block of Dk rows with chi-distributed norms, a new
// seed redraws it; the features estimate the softmax kernel, so the distance to exact softmax
// attention shrinks as m grows, about as 1 / sqrt(m) (fixed seeds, mean over several).
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention.hpp"
#include "kernels/linear_testing.hpp"

namespace attnkit {
namespace {

using testing::LinearCase;
using testing::linear_inputs;
using testing::LinearInputs;

LinearMethod performer(int64_t m, uint64_t seed) {
  LinearMethod p;
  p.kind = LinearKind::performer;
  p.features = m;
  p.seed = seed;
  return p;
}

TEST(PerformerFeatures, DeterministicOrthogonalBlocksAndRedrawn) {
  const int64_t dk = 16, m = 40;  // two full blocks and a partial one
  const Tensor a = performer_features(performer(m, 7), dk), b = performer_features(performer(m, 7), dk);
  ASSERT_EQ(a.shape(), (std::vector<int64_t>{m, dk}));
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
  const Tensor c = performer_features(performer(m, 8), dk);
  EXPECT_NE(std::memcmp(a.data(), c.data(), a.nbytes()), 0);
  // The first m rows of a larger draw are the smaller draw: blocks are drawn in order.
  const Tensor big = performer_features(performer(m + dk, 7), dk);
  EXPECT_EQ(std::memcmp(a.data(), big.data(), static_cast<size_t>(dk) * 2 * sizeof(float) * static_cast<size_t>(dk)), 0);
  const TensorView w = a.view();
  double norms = 0;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t s = r + 1; s < m && s / dk == r / dk; ++s) {
      double dot = 0, nr = 0, ns = 0;
      for (int64_t i = 0; i < dk; ++i) {
        dot += w.get(r, i) * w.get(s, i);
        nr += w.get(r, i) * w.get(r, i);
        ns += w.get(s, i) * w.get(s, i);
      }
      EXPECT_LE(std::fabs(dot) / std::sqrt(nr * ns), 1e-5) << "rows " << r << ", " << s;
    }
    double nr = 0;
    for (int64_t i = 0; i < dk; ++i) nr += w.get(r, i) * w.get(r, i);
    norms += nr;
  }
  // Squared chi norms with Dk degrees of freedom: mean Dk, sd sqrt(2 Dk / m) for the mean of m.
  EXPECT_NEAR(norms / static_cast<double>(m), static_cast<double>(dk), 4 * std::sqrt(2.0 * dk / m));
}

// Mean |o_performer - o_softmax| over outputs and seeds, both with scale 1 / sqrt(Dk).
double softmax_distance(int64_t m, bool causal) {
  LinearCase c;
  c.b = 1, c.hq = 2, c.hkv = 2, c.n = 64, c.dk = 16, c.dv = 16;
  double total = 0;
  const int seeds = 6;
  for (int s = 0; s < seeds; ++s) {
    const LinearInputs in = linear_inputs(c, 100 + static_cast<uint64_t>(s));
    AttendOptions opts;
    opts.kernel = Kernel::ref;
    if (causal) opts.pattern = Pattern::parse("causal");
    const Output exact = attend(in.q.view(), in.k.view(), in.v.view(), opts, DType::f64);
    LinearMethod p = performer(m, 1000 + static_cast<uint64_t>(s));
    p.causal = causal;
    const Tensor o = linear_attend(in.q.view(), in.k.view(), in.v.view(), p, DType::f64);
    double sum = 0;
    for (int64_t i = 0; i < o.numel(); ++i) sum += std::fabs(o.view().load(i) - exact.o.view().load(i));
    total += sum / static_cast<double>(o.numel());
  }
  return total / seeds;
}

TEST(PerformerFeatures, DistanceToSoftmaxShrinksAsOneOverSqrtM) {
  for (bool causal : {false, true}) {
    std::vector<double> err;
    for (int64_t m : {16, 64, 256, 1024}) err.push_back(softmax_distance(m, causal));
    for (size_t i = 1; i < err.size(); ++i)
      EXPECT_LT(err[i], err[i - 1]) << "m step " << i << " causal " << causal;
    // 64x more features: 1 / sqrt(m) predicts 8x less error; allow a factor 2.5 either way.
    const double ratio = err.front() / err.back();
    EXPECT_GT(ratio, 8 / 2.5) << "causal " << causal;
    EXPECT_LT(ratio, 8 * 2.5) << "causal " << causal;
  }
}

}  // namespace
}  // namespace attnkit
