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

}  // namespace attnkit::testing
