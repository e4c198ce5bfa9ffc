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
  const auto per_head = [&](const std::vector<double>& values, const char* name, const char* one) {
    check(values.empty() || static_cast<int64_t>(values.size()) == q_heads, [&] {
      return fmt::format("{} has {} entries; it must be empty or have one per query head ({})", name, values.size(),
                         q_heads);
    });
    for (double x : values) check(std::isfinite(x), [&] { return fmt::format("{} ({}) must be finite", one, x); });
  };
  per_head(alibi_slopes, "alibi_slopes", "alibi slope");
  per_head(sink_logits, "sink_logits", "sink logit");
}

}  // namespace attnkit
