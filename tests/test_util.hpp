// Shared helpers for the tests: seeded random tensors and comparisons.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "attnkit/tensor.hpp"

namespace attnkit::testing {

// Uniform in [-1, 1), rounded to dtype, deterministic for a seed.
inline Tensor random_tensor(std::vector<int64_t> shape, uint64_t seed, DType dtype = DType::f32, double scale = 1.0) {
  Tensor t(dtype, std::move(shape));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const MutTensorView m = t.mut();
  for (int64_t i = 0; i < t.numel(); ++i) m.store(i, scale * u(rng));
  return t;
}

inline double max_abs_diff(const TensorView& a, const TensorView& b) {
  double worst = 0;
  const std::vector<int64_t> s = a.shape();
  const int64_t n0 = s[0], n1 = s.size() > 1 ? s[1] : 1, n2 = s.size() > 2 ? s[2] : 1, n3 = s.size() > 3 ? s[3] : 1;
  for (int64_t i = 0; i < n0; ++i)
    for (int64_t j = 0; j < n1; ++j)
      for (int64_t k = 0; k < n2; ++k)
        for (int64_t l = 0; l < n3; ++l) {
          const double x = a.get(i, j, k, l), y = b.get(i, j, k, l);
          if (std::isinf(x) && x == y) continue;
          worst = std::max(worst, std::isnan(x) || std::isnan(y) ? INFINITY : std::abs(x - y));
        }
  return worst;
}

// Copies keys [begin, end) (dimension 2) of a [B, H, N, D] tensor.
inline Tensor slice_keys(const Tensor& t, int64_t begin, int64_t end) {
  const auto& s = t.shape();
  Tensor out(t.dtype(), {s[0], s[1], end - begin, s[3]});
  for (int64_t b = 0; b < s[0]; ++b)
    for (int64_t h = 0; h < s[1]; ++h)
      for (int64_t n = begin; n < end; ++n)
        for (int64_t c = 0; c < s[3]; ++c) out.mut().set(t.view().get(b, h, n, c), b, h, n - begin, c);
  return out;
}

}  // namespace attnkit::testing
