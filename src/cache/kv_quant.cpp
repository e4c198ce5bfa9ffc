// Quantized KV storage codecs (kv_quant.hpp): argument checks, the scalar quantizers (run
// once per cached token, so clarity beats speed), the plain-loop reference decoders, the
// dispatch to the SIMD decoders (kv_quant_simd.cpp), and the byte counts of one head's
// block. Not for: deciding which tokens are quantized (the cache's policy).
#include "attnkit/kv_quant.hpp"

#include <algorithm>
#include <cmath>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"
#include "attnkit/tensor.hpp"
#include "cache/kv_format.hpp"
#include "cache/kv_quant_simd.hpp"
#include "core/checked_math.hpp"

namespace attnkit {

using detail::check_range;
using detail::checked_mul;

namespace {

// ---- argument checks (Error naming the argument) ----

void check_ptr(const void* p, std::string_view name) {
  check(p != nullptr, [&] { return fmt::format("{} must not be null", name); });
}

// A head's width: the SIMD decoders size their parameter buffers by kMaxHeadDim.
void check_width(int64_t w, bool packed, std::string_view format = "int4") {
  check_range(w, 1, kMaxHeadDim, "w");
  if (packed)
    check(w % 2 == 0, [&] { return fmt::format("w ({}) must be even for {} (two codes per byte)", w, format); });
}

void check_group(int64_t G) {
  check_range(G, 2, kMaxKvGroup, "G");
  check(G % 2 == 0, [&] { return fmt::format("G ({}) must be even (a byte of two codes never straddles groups)", G); });
}

void check_rows(int64_t rows, int64_t w, int64_t out_stride) {
  check(rows >= 0, [&] { return fmt::format("rows ({}) must be >= 0", rows); });
  check(out_stride >= w, [&] { return fmt::format("out_stride ({}) must be >= w ({})", out_stride, w); });
}

// ---- f16 rounding outward (see "Rounding" in kv_quant.hpp) ----

// The next f16 above / below h in value (h not NaN). f16 bit patterns are sign-magnitude:
// adding 1 moves a value away from zero, so a negative h steps up by subtracting 1.
uint16_t f16_next_up(uint16_t h) {
  if (h == 0x8000) return 0x0001;  // -0 -> smallest positive subnormal
  return (h & 0x8000) ? static_cast<uint16_t>(h - 1) : static_cast<uint16_t>(h + 1);
}
uint16_t f16_next_down(uint16_t h) {
  if (h == 0x0000) return 0x8001;  // +0 -> smallest negative subnormal
  return (h & 0x8000) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);
}

// Smallest f16 >= v (v >= 0, finite); +inf (0x7C00) when v exceeds the largest f16.
// float_to_f16(float(v)) is within one f16 ulp of v, so at most one step is taken.
uint16_t f16_round_up(double v) {
  uint16_t h = float_to_f16(static_cast<float>(v));
  while (static_cast<double>(f16_to_float(h)) < v) h = f16_next_up(h);
  return h;
}
// Largest f16 <= v (v finite); -inf (0xFC00) below the most negative f16.
uint16_t f16_round_down(double v) {
  uint16_t h = float_to_f16(static_cast<float>(v));
  while (static_cast<double>(f16_to_float(h)) > v) h = f16_next_down(h);
  return h;
}

bool f16_finite(uint16_t h) { return (h & 0x7C00) != 0x7C00; }

// round(t) clamped to [lo, hi], t finite. std::round is ties-away-from-zero and ignores the
// floating-point environment's rounding mode; the clamp runs in double, before the
// conversion to int, so the conversion is always in range.
int round_clamped(double t, double lo, double hi) { return static_cast<int>(std::clamp(std::round(t), lo, hi)); }

// min and max of n values spaced `stride` apart, or false when one is NaN or inf.
bool finite_min_max(const float* x, int64_t n, int64_t stride, float& mn, float& mx) {
  mn = HUGE_VALF;
  mx = -HUGE_VALF;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v)) return false;
    mn = std::min(mn, v);
    mx = std::max(mx, v);
  }
  return true;
}

// One int4 group of n values spaced `stride` apart -> n codes (one per uint8, unpacked),
// scale and zero. A poisoned group gets zero codes and NaN parameters.
void quantize_int4_group(const float* x, int64_t n, int64_t stride, uint8_t* q, uint16_t& scale, uint16_t& zero) {
  float mn, mx;
  bool ok = finite_min_max(x, n, stride, mn, mx);
  if (ok) {
    zero = f16_round_down(mn);
    // mx - zero in double is exact unless the two differ in magnitude by ~2^29 or more;
    // then its rounding (2^-53 relative) is far inside the bound's 2^-40 slack, and the
    // clamp still keeps every code in [0, 15].
    scale = f16_round_up((static_cast<double>(mx) - f16_to_float(zero)) / 15.0);
    ok = f16_finite(zero) && f16_finite(scale);
  }
  if (!ok) {
    scale = zero = kKvQuantPoison;
    std::fill(q, q + n, uint8_t{0});
    return;
  }
  const double s = f16_to_float(scale), z = f16_to_float(zero);
  for (int64_t i = 0; i < n; ++i)
    q[i] = s == 0 ? 0 : static_cast<uint8_t>(round_clamped((x[i * stride] - z) / s, 0, 15));
}

// Two unpacked codes -> one byte, the even channel in the low nibble.
uint8_t pack(uint8_t even, uint8_t odd) { return static_cast<uint8_t>(even | (odd << 4)); }

// The SIMD decoders, resolved once: CPU detection is too slow to repeat per tile.
const kvq::KvQuantOps& ops() {
  static const kvq::KvQuantOps o = kvq::simd_ops();
  return o;
}

}  // namespace

// ---- int8 ----

void quantize_int8_row(const float* x, int64_t w, int8_t* q, uint16_t* scale_f16) {
  check_width(w, false);
  check_ptr(x, "x");
  check_ptr(q, "q");
  check_ptr(scale_f16, "scale_f16");
  float m = 0;
  bool ok = true;
  for (int64_t i = 0; i < w && ok; ++i) {
    ok = std::isfinite(x[i]);
    m = std::max(m, std::abs(x[i]));
  }
  const uint16_t scale = ok ? f16_round_up(static_cast<double>(m) / 127.0) : kKvQuantPoison;
  if (!f16_finite(scale)) {
    *scale_f16 = kKvQuantPoison;
    std::fill(q, q + w, int8_t{0});
    return;
  }
  *scale_f16 = scale;
  const double s = f16_to_float(scale);
  // s >= max|x| / 127, so |x / s| <= 127 and the clamp is only a guard.
  for (int64_t i = 0; i < w; ++i) q[i] = s == 0 ? 0 : static_cast<int8_t>(round_clamped(x[i] / s, -127, 127));
}

void dequantize_int8_rows(const int8_t* q, const uint16_t* scales, int64_t rows, int64_t w, float* out,
                          int64_t out_stride) {
  check_width(w, false);
  check_rows(rows, w, out_stride);
  if (rows == 0) return;
  check_ptr(q, "q");
  check_ptr(scales, "scales");
  check_ptr(out, "out");
  ops().int8_rows(q, scales, rows, w, out, out_stride);
}

void dequantize_int8_rows_reference(const int8_t* q, const uint16_t* scales, int64_t rows, int64_t w, float* out,
                                    int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < w; ++i)
      out[r * out_stride + i] = static_cast<float>(q[r * w + i]) * f16_to_float(scales[r]);
}

// ---- int4 keys ----

void quantize_int4_key_group(const float* rows, int64_t row_stride, int64_t G, int64_t w, uint8_t* codes,
                             uint16_t* scales, uint16_t* zeros) {
  check_width(w, true);
  check_group(G);
  check(row_stride >= w, [&] { return fmt::format("row_stride ({}) must be >= w ({})", row_stride, w); });
  check_ptr(rows, "rows");
  check_ptr(codes, "codes");
  check_ptr(scales, "scales");
  check_ptr(zeros, "zeros");
  std::vector<uint8_t> even(static_cast<size_t>(G)), odd(static_cast<size_t>(G));
  for (int64_t c = 0; c < w; c += 2) {
    // Channel c and c + 1 over the G tokens (a column of the [G][row_stride] block).
    quantize_int4_group(rows + c, G, row_stride, even.data(), scales[c], zeros[c]);
    quantize_int4_group(rows + c + 1, G, row_stride, odd.data(), scales[c + 1], zeros[c + 1]);
    for (int64_t t = 0; t < G; ++t) codes[t * (w / 2) + c / 2] = pack(even[t], odd[t]);
  }
}

void dequantize_int4_key_group(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros, int64_t rows,
                               int64_t w, float* out, int64_t out_stride) {
  check_width(w, true);
  check_rows(rows, w, out_stride);
  if (rows == 0) return;
  check_ptr(codes, "codes");
  check_ptr(scales, "scales");
  check_ptr(zeros, "zeros");
  check_ptr(out, "out");
  ops().int4_key_rows(codes, scales, zeros, rows, w, out, out_stride);
}

void dequantize_int4_key_group_reference(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros,
                                         int64_t rows, int64_t w, float* out, int64_t out_stride) {
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < w; ++c) {
      const uint8_t byte = codes[t * (w / 2) + c / 2];
      const int code = c % 2 == 0 ? byte & 15 : byte >> 4;
      out[t * out_stride + c] = static_cast<float>(code) * f16_to_float(scales[c]) + f16_to_float(zeros[c]);
    }
}

// ---- int4 values ----

int64_t int4_value_groups(int64_t w, int64_t G) {
  check_width(w, true);
  check_group(G);
  return (w + G - 1) / G;
}

void quantize_int4_value_row(const float* x, int64_t w, int64_t G, uint8_t* codes, uint16_t* scales,
                             uint16_t* zeros) {
  const int64_t groups = int4_value_groups(w, G);
  check_ptr(x, "x");
  check_ptr(codes, "codes");
  check_ptr(scales, "scales");
  check_ptr(zeros, "zeros");
  std::vector<uint8_t> q(static_cast<size_t>(w));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t c0 = g * G, n = std::min(G, w - c0);
    quantize_int4_group(x + c0, n, 1, q.data() + c0, scales[g], zeros[g]);
  }
  for (int64_t i = 0; i < w / 2; ++i) codes[i] = pack(q[2 * i], q[2 * i + 1]);
}

void dequantize_int4_value_rows(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros, int64_t rows,
                                int64_t w, int64_t G, float* out, int64_t out_stride) {
  int4_value_groups(w, G);  // checks w and G
  check_rows(rows, w, out_stride);
  if (rows == 0) return;
  check_ptr(codes, "codes");
  check_ptr(scales, "scales");
  check_ptr(zeros, "zeros");
  check_ptr(out, "out");
  ops().int4_value_rows(codes, scales, zeros, rows, w, G, out, out_stride);
}

void dequantize_int4_value_rows_reference(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros,
                                          int64_t rows, int64_t w, int64_t G, float* out, int64_t out_stride) {
  const int64_t groups = (w + G - 1) / G;
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < w; ++c) {
      const uint8_t byte = codes[t * (w / 2) + c / 2];
      const int code = c % 2 == 0 ? byte & 15 : byte >> 4;
      const int64_t g = t * groups + c / G;
      out[t * out_stride + c] = static_cast<float>(code) * f16_to_float(scales[g]) + f16_to_float(zeros[g]);
    }
}

// ---- bytes ----

KvBlockBytes kv_block_bytes(KvStorage storage, KvStream stream, int64_t tokens, int64_t w, int64_t G) {
  const detail::KvFormat& f = detail::kv_format(storage);  // the sizes: kv_format.cpp's table
  check_range(tokens, 0, kMaxSeqLen, "tokens");
  check_width(w, f.packed(), f.name);
  constexpr std::string_view what = "KV block bytes";
  KvBlockBytes b;
  b.codes = checked_mul(tokens, f.row_bytes(w), what, "w");
  if (f.grouped()) {
    check_group(G);
    if (stream == KvStream::key)
      check(tokens % G == 0, [&] {
        return fmt::format("tokens ({}) must be a multiple of G ({}) for {} keys (whole groups)", tokens, G, f.name);
      });
  }
  // f16 parameters: those of each token row (int8 scales, int4 value groups), and those
  // a key group of G tokens shares (int4 keys, per channel).
  b.params = checked_mul(tokens, f.row_params(stream, w, G), what, "f16 parameter size");
  if (f.grouped() && stream == KvStream::key)
    b.params = detail::checked_add(b.params, checked_mul(tokens / G, f.key_group_params(w), what, "key groups"),
                                   what, "key group parameters");
  return b;
}

}  // namespace attnkit
