// AdamW, clipping and the learning-rate schedule (optimizer.hpp).
#include "model/optimizer.hpp"

#include <cmath>
#include <numbers>

namespace attnkit::model {

double cosine_lr(int64_t s, int64_t total, int64_t warmup, double peak, double floor) {
  if (s < warmup) return peak * static_cast<double>(s + 1) / static_cast<double>(warmup);
  const int64_t span = std::max<int64_t>(total - warmup - 1, 1);
  const double progress = std::min(1.0, static_cast<double>(s - warmup) / static_cast<double>(span));
  return floor + 0.5 * (peak - floor) * (1.0 + std::cos(std::numbers::pi * progress));
}

double grad_norm(const std::vector<float>& grads) {
  double ss = 0;
  for (float g : grads) ss += static_cast<double>(g) * g;
  return std::sqrt(ss);
}

double adamw_step(Model& model, std::vector<float>& grads, AdamWState& st, const AdamWConfig& cfg, double lr) {
  const size_t n = model.weights.size();
  if (st.m.size() != n) st.m.assign(n, 0.0f), st.v.assign(n, 0.0f), st.step = 0;
  const double norm = grad_norm(grads);
  const float clip = cfg.clip_norm > 0 && norm > cfg.clip_norm ? static_cast<float>(cfg.clip_norm / norm) : 1.0f;
  ++st.step;
  const double c1 = 1.0 - std::pow(cfg.beta1, static_cast<double>(st.step));
  const double c2 = 1.0 - std::pow(cfg.beta2, static_cast<double>(st.step));
  const float b1 = static_cast<float>(cfg.beta1), b2 = static_cast<float>(cfg.beta2);
  const float step = static_cast<float>(lr / c1), inv_c2 = static_cast<float>(1.0 / c2);
  const float eps = static_cast<float>(cfg.eps);
  for (const ParamRef& p : model.params()) {
    // Decoupled decay: w -= lr * wd * w, apart from the adaptive step.
    const float decay = p.decay ? static_cast<float>(lr * cfg.weight_decay) : 0.0f;
    // Elementwise: the same bits for any thread count.
#pragma omp parallel for schedule(static) if (p.rows * p.cols >= (1 << 15))
    for (int64_t i = p.offset; i < p.offset + p.rows * p.cols; ++i) {
      const float g = grads[static_cast<size_t>(i)] * clip;
      float& m = st.m[static_cast<size_t>(i)];
      float& v = st.v[static_cast<size_t>(i)];
      m = b1 * m + (1 - b1) * g;
      v = b2 * v + (1 - b2) * g * g;
      float& w = model.weights[static_cast<size_t>(i)];
      w -= decay * w + step * m / (std::sqrt(v * inv_c2) + eps);
    }
  }
  return norm;
}

}  // namespace attnkit::model
