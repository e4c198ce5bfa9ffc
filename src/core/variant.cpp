// Validation of the score modifiers (variant.hpp), shared by attend() and decode.
#include "attnkit/variant.hpp"

#include <fmt/format.h>

#include "attnkit/error.hpp"

namespace attnkit {

void Variant::validate(int64_t q_heads) const {
  check(std::isnan(scale) || std::isfinite(scale),
        [&] { return fmt::format("scale ({}) must be finite (or NaN for 1/sqrt(d_qk))", scale); });
  check(std::isfinite(softcap) && softcap >= 0,
        [&] { return fmt::format("softcap ({}) must be finite and >= 0 (0 disables it)", softcap); });
  check(alibi_slopes.empty() || static_cast<int64_t>(alibi_slopes.size()) == q_heads, [&] {
    return fmt::format("alibi_slopes has {} entries; it must be empty or have one per query head ({})",
                       alibi_slopes.size(), q_heads);
  });
  for (double slope : alibi_slopes)
    check(std::isfinite(slope), [&] { return fmt::format("alibi slope ({}) must be finite", slope); });
}

}  // namespace attnkit
