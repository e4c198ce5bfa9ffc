// Linear attention (Katharopoulos et al., "Transformers are RNNs"): the feature map
// phi(x) = elu(x) + 1, applied to queries and keys alike, with the normaliser
// phi(q_i) . sum_j phi(k_j) + eps. phi > 0 everywhere, so the normaliser is positive for any
// input; that is why relu (zero on a whole row of non-positive coordinates) and the identity
// (any sign) are refused in LinearMethod::validate. No decay, no stabiliser: phi grows only
// linearly (x + 1) above 0 and is e^x < 1 below.
// Not for: chunks, states or threads (linear_engine.cpp).
#include "kernels/linear_engine.hpp"
#include "kernels/linear_simd.hpp"

namespace attnkit::linear {
namespace {

class EluMap final : public FeatureMap {
 public:
  EluMap(int64_t dk, float eps) : FeatureMap(dk, dk, /*normalised=*/true, /*per_query_state=*/false), eps_(eps) {}

  void map_keys(const float* x, int64_t n, float* f, float*, float*) const override { simd::elu1(x, f, n * dk()); }
  void map_queries(const float* x, int64_t n, int64_t, int64_t, const float*, float* f, float* row) const override {
    simd::elu1(x, f, n * dk());
    for (int64_t i = 0; i < n; ++i) row[i] = eps_;
  }
  // d phi / dx = 1 above 0, e^x = phi(x) below.
  void query_grad(const float* x, const float* f, float* df, int64_t n, float* dx) const override {
    simd::elu1_grad(x, f, df, dx, n * dk());
  }
  void key_grad(const float* x, const float* f, float* df, int64_t n, float* dx) const override {
    simd::elu1_grad(x, f, df, dx, n * dk());
  }

 private:
  float eps_;
};

}  // namespace

std::unique_ptr<FeatureMap> make_elu_map(const LinearMethod& m, int64_t dk) {
  return std::make_unique<EluMap>(dk, static_cast<float>(m.eps));
}

}  // namespace attnkit::linear
