// Overflow-checked int64 arithmetic for size calculators (KV-cache bytes, receptive
// fields) that multiply user-given sizes. Internal header: not part of the public API,
// and not for kernels' index math (those sizes are validated once at the boundary).
#pragma once

#include <cstdint>
#include <string_view>

#include <fmt/format.h>

#include "attnkit/error.hpp"

namespace attnkit::detail {

// a * b, or throws Error saying that multiplying by `factor` (the argument's name, e.g.
// "batch (4096)") made `what` overflow int64. Callers pass the user-facing argument as
// `factor` so the message says which knob to turn down.
inline int64_t checked_mul(int64_t a, int64_t b, std::string_view what, std::string_view factor) {
  int64_t out;
  if (__builtin_mul_overflow(a, b, &out))
    throw Error(fmt::format("{} overflows int64 ({} x {}) when multiplied by {}", what, a, b, factor));
  return out;
}

inline int64_t checked_add(int64_t a, int64_t b, std::string_view what, std::string_view term) {
  int64_t out;
  if (__builtin_add_overflow(a, b, &out))
    throw Error(fmt::format("{} overflows int64 ({} + {}) when adding {}", what, a, b, term));
  return out;
}

// Throws Error "<name> (<value>) must be in [lo, hi]" unless lo <= value <= hi.
inline void check_range(int64_t value, int64_t lo, int64_t hi, std::string_view name) {
  if (value < lo || value > hi)
    throw Error(fmt::format("{} ({}) must be in [{}, {}]", name, value, lo, hi));
}

}  // namespace attnkit::detail
