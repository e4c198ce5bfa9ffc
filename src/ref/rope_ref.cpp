// The plain-loop RoPE oracle: every angle computed from the config in double, every
// element read and written through the view. Obviously correct rather than fast; the
// conventions it implements are the ones stated in include/attnkit/rope.hpp.
// Not for: production use (apply_rope() is the fast path with a precomputed table).
#include <cmath>

#include "attnkit/rope.hpp"
#include "core/rope_check.hpp"

namespace attnkit {

void rope_reference(const RopeConfig& config, const MutTensorView& x, const int64_t* positions) {
  const int64_t d = detail::rope_head_dim(x);
  config.validate(d);
  const int64_t r = config.resolved_rotary_dim(d), half = r / 2;
  detail::check_rope_positions(positions, x.size(0), x.size(2), kMaxRopePosition);
  for (int64_t b = 0; b < x.size(0); ++b)
    for (int64_t h = 0; h < x.size(1); ++h)
      for (int64_t n = 0; n < x.size(2); ++n) {
        const double pos = static_cast<double>(positions[b * x.size(2) + n]);
        for (int64_t i = 0; i < half; ++i) {
          const double theta = pos * std::pow(config.base, -2.0 * static_cast<double>(i) / static_cast<double>(r));
          const double c = std::cos(theta), s = std::sin(theta);
          const bool halves = config.style == RopeStyle::rotate_half;
          const int64_t j0 = halves ? i : 2 * i, j1 = halves ? i + half : 2 * i + 1;
          const double x0 = x.get(b, h, n, j0), x1 = x.get(b, h, n, j1);
          x.set(x0 * c - x1 * s, b, h, n, j0);
          x.set(x1 * c + x0 * s, b, h, n, j1);
        }
      }
}

}  // namespace attnkit
