// Internal: finding NaN and inf in rows of K / V as kernels read them (f32 values, or bf16
// / f16 codes as stored), for the guard that keeps a non-finite value at a key a query row
// cannot see out of that row (docs/attention.md, "Non-finite inputs": P = 0 there, and
// 0 * NaN = NaN in O += P V). Not for: deciding which rows see a key (each kernel's mask).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace attnkit::nonfinite {

// The exponent bits of a 16-bit float: all ones is inf or NaN.
inline constexpr uint16_t kBf16Exponent = 0x7F80;
inline constexpr uint16_t kF16Exponent = 0x7C00;

// Whether any of x[0, n) is NaN or +-inf: an f32 with an all-ones exponent. Written as a
// min over ~bits & exponent, which is 0 exactly at such a value: a reduction compilers
// vectorise (a loop of `bad |= !isfinite(x)` stayed scalar, 8 instructions per element).
inline bool any_f32(const float* x, int64_t n) {
  constexpr uint32_t kExponent = 0x7F800000u;
  uint32_t low = kExponent;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, 4);
    low = std::min(low, ~bits & kExponent);
  }
  return low == 0;
}

// The same for n 16-bit codes with the given exponent mask (kBf16Exponent, kF16Exponent).
inline bool any_16(const uint16_t* x, int64_t n, uint16_t exponent) {
  uint16_t low = exponent;
  for (int64_t i = 0; i < n; ++i) low = std::min(low, static_cast<uint16_t>(~x[i] & exponent));
  return low == 0;
}

}  // namespace attnkit::nonfinite
