// Retention (Sun et al., RetNet): o_i = sum_{j <= i} gamma^(i - j) (scale q_i . k_j) v_j
// divided by sqrt(sum_{j <= i} gamma^(i - j)), the row sum of the decay mask D, with one decay
// gamma_h per query head (torchscale's default schedule gamma_h = 1 - 2^(-5 - h)). The
// features are the raw projections (q scaled), so F = Dk; there is no normaliser or eps.
// The decay itself is applied by the engine as exp(d log gamma) for d >= 0 only; this file
// gives log gamma and the row factor, computed in closed form:
//   sum_{t=0}^{p} gamma^t = (1 - gamma^(p+1)) / (1 - gamma) = expm1((p+1) lg) / expm1(lg),
// exact to a few ulps at any p (expm1 keeps gamma near 1 accurate), p + 1 when gamma = 1.
// torchscale's parallel form also divides by the clamped |row sum| of (QK^T * D) and applies
// a GroupNorm; neither has a recurrent form, and the layer applies them (linear.hpp).
// Not for: chunks, states or threads (linear_engine.cpp).
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/linear_engine.hpp"

namespace attnkit::linear {
namespace {

class RetentionMap final : public FeatureMap {
 public:
  RetentionMap(int64_t dk, float scale, std::vector<double> gammas)
      : FeatureMap(dk, dk, /*normalised=*/false, /*per_query_state=*/true), scale_(scale) {
    for (double g : gammas) log_gamma_.push_back(std::log(g));
  }

  double log_decay(int64_t h) const override { return log_gamma_[static_cast<size_t>(h)]; }

  void map_keys(const float* x, int64_t n, float* f, float*, float*) const override {
    std::memcpy(f, x, static_cast<size_t>(n * dk()) * sizeof(float));
  }
  void map_queries(const float* x, int64_t n, int64_t h, int64_t pos, const float*, float* f, float* row) const override {
    for (int64_t i = 0; i < n * dk(); ++i) f[i] = scale_ * x[i];
    const double lg = log_gamma_[static_cast<size_t>(h)];
    for (int64_t i = 0; i < n; ++i) {
      const double p1 = static_cast<double>(pos + i + 1);
      const double row_sum = lg == 0 ? p1 : std::expm1(p1 * lg) / std::expm1(lg);
      row[i] = static_cast<float>(1.0 / std::sqrt(row_sum));
    }
  }
  void query_grad(const float*, const float*, float* df, int64_t n, float* dx) const override {
    for (int64_t i = 0; i < n * dk(); ++i) dx[i] = scale_ * df[i];
  }
  void key_grad(const float*, const float*, float* df, int64_t n, float* dx) const override {
    std::memcpy(dx, df, static_cast<size_t>(n * dk()) * sizeof(float));
  }

 private:
  float scale_;
  std::vector<double> log_gamma_;  // per query head
};

}  // namespace

std::unique_ptr<FeatureMap> make_retention_map(const LinearMethod& m, int64_t q_heads, int64_t dk) {
  return std::make_unique<RetentionMap>(dk, static_cast<float>(linear_scale(m, dk)), linear_gammas(m, q_heads));
}

}  // namespace attnkit::linear
