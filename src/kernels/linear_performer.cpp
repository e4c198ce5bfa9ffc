// The Performer's FAVOR+ (Choromanski et al., "Rethinking Attention with Performers"):
// positive random features phi(x) = exp(w_r . x' - |x'|^2 / 2) / sqrt(m), r < m, with
// x' = x scale^(1/2), so that E[phi(q) . phi(k)] = exp(scale q . k), the softmax kernel.
// Normalised like linear attention (normaliser phi(q_i) . sum_j phi(k_j) + eps).
//
// The draw (performer_features): m rows in blocks of Dk; each block orthogonalises a fresh
// Dk x Dk Gaussian matrix (modified Gram-Schmidt, in double) and scales its rows by the norms
// of independent Gaussian Dk-vectors (chi-distributed, as the rows of an unstructured
// Gaussian W would be). Gaussians come from std::mt19937_64 through Box-Muller written here,
// so W depends on (seed, m, Dk) alone, not on the standard library's distributions.
//
// Stabilisers (they cancel between numerator and normaliser, and eps is scaled with them,
// so the result is the definition with eps added to the true normaliser):
//   keys: feature r is divided by e^(c_r), c_r the running max of log phi_r(k_j) over the
//     keys seen so far (the engine rescales row r of the state by e^(c_r,old - c_r,new)), so
//     no key feature exceeds 1 / sqrt(m) and each row of the state, a sum over keys of one
//     feature, keeps its own range: a key that is negligible in one feature may dominate
//     another. In a chunk, c also covers the chunk's later keys, which a query may not see;
//     only a later key exceeding everything a query sees by e^87 (f32's range) could
//     then underflow that query's terms; the recurrent form raises c token by token;
//   queries: feature r is multiplied by e^(c_r - A_i), A_i = max_r (w_r . x'_i + c_r), so the
//     largest product with a key feature is 1 / m and the e^(c_r) cancel against the keys';
//   the eps the engine adds to the stabilised normaliser is eps e^(|x'_i|^2 / 2 - A_i)
//     (exponent clamped at 80: beyond it the true normaliser is below e^-80 of eps anyway).
// Backward: with W and the stabilisers constant, d phi_r / dx' = phi_r (w_r - x'), so
//   dx = sqrt(scale) (W^T (dphi * phi) - x' sum_r dphi_r phi_r).
// Not for: chunks, states or threads (linear_engine.cpp).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <numbers>
#include <random>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "kernels/linear_engine.hpp"
#include "kernels/linear_simd.hpp"

namespace attnkit {

namespace {

// Standard normal deviates by Box-Muller from 53-bit uniforms; both values of a pair used.
class Gaussian {
 public:
  explicit Gaussian(uint64_t seed) : rng_(seed) {}
  double operator()() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform();  // (0, 1]: log(u1) finite
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2 * std::numbers::pi * u2);
    has_spare_ = true;
    return r * std::cos(2 * std::numbers::pi * u2);
  }

 private:
  double uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }  // [0, 1)
  std::mt19937_64 rng_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace

Tensor performer_features(const LinearMethod& m, int64_t dk) {
  check(m.features >= 1, [&] { return fmt::format("performer: m (features) must be >= 1, got {}", m.features); });
  check(dk >= 1 && dk <= kMaxHeadDim, [&] { return fmt::format("performer: dk ({}) must be in [1, {}]", dk, kMaxHeadDim); });
  Gaussian gauss(m.seed);
  Tensor w(DType::f32, {m.features, dk});
  float* out = static_cast<float*>(w.data());
  std::vector<double> block(static_cast<size_t>(dk * dk));
  for (int64_t b0 = 0; b0 < m.features; b0 += dk) {
    for (double& x : block) x = gauss();
    // Modified Gram-Schmidt over the rows; a row that comes out (numerically) dependent on
    // the earlier ones, probability zero for Gaussian rows, is redrawn.
    for (int64_t r = 0; r < dk; ++r) {
      double* row = block.data() + r * dk;
      for (double norm = 0; norm < 1e-6;) {
        for (int64_t p = 0; p < r; ++p) {
          const double* prev = block.data() + p * dk;
          double dot = 0;
          for (int64_t c = 0; c < dk; ++c) dot += row[c] * prev[c];
          for (int64_t c = 0; c < dk; ++c) row[c] -= dot * prev[c];
        }
        norm = 0;
        for (int64_t c = 0; c < dk; ++c) norm += row[c] * row[c];
        norm = std::sqrt(norm);
        if (norm < 1e-6) {
          for (int64_t c = 0; c < dk; ++c) row[c] = gauss();
        } else {
          for (int64_t c = 0; c < dk; ++c) row[c] /= norm;
        }
      }
    }
    for (int64_t r = 0; r < std::min(dk, m.features - b0); ++r) {
      double chi = 0;
      for (int64_t c = 0; c < dk; ++c) chi += std::pow(gauss(), 2);
      chi = std::sqrt(chi);
      for (int64_t c = 0; c < dk; ++c) out[(b0 + r) * dk + c] = static_cast<float>(chi * block[static_cast<size_t>(r * dk + c)]);
    }
  }
  return w;
}

namespace linear {
namespace {

// The draws of recent (seed, m, Dk): a model calls the kernel with the same ones in every
// layer and step, and a draw costs O(m Dk^2) scalar double operations (1.5 ms of a 1.9 ms
// call at m = 256, Dk = 64, n = 64, 8 heads).
std::shared_ptr<const Tensor> cached_features(const LinearMethod& m, int64_t dk) {
  static std::mutex mutex;
  static std::map<std::tuple<uint64_t, int64_t, int64_t>, std::shared_ptr<const Tensor>> cache;
  const auto key = std::make_tuple(m.seed, m.features, dk);
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (const auto it = cache.find(key); it != cache.end()) return it->second;
  }
  auto drawn = std::make_shared<const Tensor>(performer_features(m, dk));
  const std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() >= 64) cache.clear();
  return cache.emplace(key, std::move(drawn)).first->second;
}

class PerformerMap final : public FeatureMap {
 public:
  PerformerMap(const LinearMethod& m, int64_t dk)
      : FeatureMap(dk, m.features, /*normalised=*/true, /*per_query_state=*/false),
        scale_(static_cast<float>(linear_scale(m, dk))),
        eps_(static_cast<float>(m.eps)),
        inv_sqrt_m_(static_cast<float>(1.0 / std::sqrt(static_cast<double>(m.features)))) {
    const std::shared_ptr<const Tensor> w = cached_features(m, dk);
    const float* src = static_cast<const float*>(w->data());
    const float root = std::sqrt(scale_);
    w_.resize(static_cast<size_t>(w->numel()));
    for (size_t i = 0; i < w_.size(); ++i) w_[i] = root * src[i];  // W' = sqrt(scale) W, so W' x = W x'
  }

  bool scales_keys() const override { return true; }

  void map_keys(const float* x, int64_t n, float* f, float* c, float* pre) const override {
    const int64_t F = features();
    logits(x, n, f);
    std::vector<float> c_new(c, c + F);
    for (int64_t j = 0; j < n; ++j) {
      const float* fj = f + j * F;
      const float s = half_norm(x + j * dk());
      for (int64_t r = 0; r < F; ++r) c_new[static_cast<size_t>(r)] = std::max(c_new[static_cast<size_t>(r)], fj[r] - s);
    }
    for (int64_t r = 0; r < F; ++r) {
      pre[r] = c[r] == -HUGE_VALF ? 0.0f : std::exp(c[r] - c_new[static_cast<size_t>(r)]);
      c[r] = c_new[static_cast<size_t>(r)];
    }
    for (int64_t j = 0; j < n; ++j) {
      float* fj = f + j * F;
      simd::add_scaled(fj, c, F, -1.0f);
      simd::exp_shift(fj, F, half_norm(x + j * dk()), inv_sqrt_m_);
    }
  }

  void map_queries(const float* x, int64_t n, int64_t, int64_t, const float* c, float* f, float* row) const override {
    const int64_t F = features();
    logits(x, n, f);
    const bool keys_seen = c[0] != -HUGE_VALF;  // none yet: no key to cancel against
    for (int64_t i = 0; i < n; ++i) {
      float* fi = f + i * F;
      if (keys_seen) simd::add_scaled(fi, c, F, 1.0f);
      const float top = simd::max(fi, F);
      simd::exp_shift(fi, F, top, inv_sqrt_m_);
      row[i] = eps_ * std::exp(std::min(half_norm(x + i * dk()) - top, 80.0f));
    }
  }

  void query_grad(const float* x, const float* f, float* df, int64_t n, float* dx) const override {
    grad(x, f, df, n, dx);
  }
  void key_grad(const float* x, const float* f, float* df, int64_t n, float* dx) const override {
    grad(x, f, df, n, dx);
  }

 private:
  // f: [n][m] = x W'^T.
  void logits(const float* x, int64_t n, float* f) const {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(features()),
                static_cast<int>(dk()), 1.0f, x, static_cast<int>(dk()), w_.data(), static_cast<int>(dk()), 0.0f, f,
                static_cast<int>(features()));
  }
  float half_norm(const float* x) const {  // |x'|^2 / 2
    float s = 0;
    for (int64_t c = 0; c < dk(); ++c) s += x[c] * x[c];
    return 0.5f * scale_ * s;
  }
  // g = df * f; dx = g W' - scale x sum_r g_r (x' = sqrt(scale) x, chain rule included).
  void grad(const float* x, const float* f, float* df, int64_t n, float* dx) const {
    simd::mul(df, f, n * features());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(dk()),
                static_cast<int>(features()), 1.0f, df, static_cast<int>(features()), w_.data(), static_cast<int>(dk()),
                0.0f, dx, static_cast<int>(dk()));
    for (int64_t i = 0; i < n; ++i) {
      float g_sum = 0;
      for (int64_t r = 0; r < features(); ++r) g_sum += df[i * features() + r];
      for (int64_t c = 0; c < dk(); ++c) dx[i * dk() + c] -= scale_ * g_sum * x[i * dk() + c];
    }
  }

  std::vector<float> w_;  // [m][Dk], W' = sqrt(scale) W
  float scale_, eps_, inv_sqrt_m_;
};

}  // namespace

std::unique_ptr<FeatureMap> make_performer_map(const LinearMethod& m, int64_t dk) {
  return std::make_unique<PerformerMap>(m, dk);
}

}  // namespace linear
}  // namespace attnkit
