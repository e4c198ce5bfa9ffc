// RoPE's fast path: the config validation, the cos/sin table, and the in-place row and
// tensor rotations. The conventions are stated once, in include/attnkit/rope.hpp; the
// double-precision oracle is src/ref/rope_ref.cpp. Not for: fusing into attention or the
// KV cache (those call rope_row() or the table directly).
#include "attnkit/rope.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>

#include <fmt/format.h>

#include "attnkit/shape.hpp"
#include "core/rope_check.hpp"

namespace attnkit {

std::string_view rope_style_name(RopeStyle s) {
  switch (s) {
    case RopeStyle::rotate_half: return "rotate_half";
    case RopeStyle::interleaved: return "interleaved";
  }
  return "?";
}

RopeStyle parse_rope_style(std::string_view name) {
  if (name == "rotate_half" || name == "neox") return RopeStyle::rotate_half;
  if (name == "interleaved" || name == "gptj") return RopeStyle::interleaved;
  throw Error(fmt::format("rope style '{}' is not one of rotate_half (neox), interleaved (gptj)", name));
}

void RopeConfig::validate(int64_t head_dim) const {
  check(head_dim >= 1 && head_dim <= kMaxHeadDim,
        [&] { return fmt::format("head_dim ({}) must be in [1, {}]", head_dim, kMaxHeadDim); });
  check(rotary_dim >= 0,
        [&] { return fmt::format("rotary_dim ({}) must be > 0 (or 0 for the whole head)", rotary_dim); });
  const int64_t r = resolved_rotary_dim(head_dim);
  check(r <= head_dim, [&] { return fmt::format("rotary_dim ({}) must be <= head_dim ({})", r, head_dim); });
  check(r % 2 == 0, [&] { return fmt::format("rotary_dim ({}) must be even: channels rotate in pairs", r); });
  check(std::isfinite(base) && base > 0, [&] { return fmt::format("base ({}) must be finite and > 0", base); });
}

namespace detail {

namespace {

[[noreturn]] void bad_position(int64_t p, int64_t max_pos, std::string_view what) {
  if (p < 0) throw Error(fmt::format("{} ({}) must be >= 0", what, p));
  if (p >= kMaxRopePosition) throw Error(fmt::format("{} ({}) must be < 2^31", what, p));
  throw Error(fmt::format("{} ({}) is beyond the RoPE table (max_pos = {}); RopeCache::reserve({}) grows it",
                          what, p, max_pos, p + 1));
}

}  // namespace

void check_rope_positions(const int64_t* positions, int64_t batch, int64_t len, int64_t max_pos) {
  if (batch == 0 || len == 0) return;
  check(positions != nullptr, [&] { return fmt::format("positions is null for {} x {} tokens", batch, len); });
  const int64_t limit = std::min(max_pos, kMaxRopePosition);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t n = 0; n < len; ++n) {
      const int64_t p = positions[b * len + n];
      // Formatting the argument's name only on failure keeps the check a compare per token.
      if (p < 0 || p >= limit) bad_position(p, max_pos, fmt::format("positions[b={}, n={}]", b, n));
    }
}

int64_t rope_head_dim(const TensorView& x) {
  x.expect_rank(4, "x [B, H, N, D]");
  return x.size(3);
}

}  // namespace detail

RopeCache::RopeCache(const RopeConfig& config, int64_t head_dim, int64_t max_pos)
    : config_(config), head_dim_(head_dim) {
  config.validate(head_dim);
  rotary_dim_ = config.resolved_rotary_dim(head_dim);
  reserve(max_pos);
}

void RopeCache::reserve(int64_t max_pos) {
  check(max_pos >= 0 && max_pos <= kMaxRopePosition,
        [&] { return fmt::format("max_pos ({}) must be in [0, 2^31]", max_pos); });
  if (max_pos <= max_pos_) return;
  const int64_t half = rotary_dim_ / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  const double r = static_cast<double>(rotary_dim_);
  for (int64_t i = 0; i < half; ++i)
    inv_freq[static_cast<size_t>(i)] = std::pow(config_.base, -2.0 * static_cast<double>(i) / r);
  const int64_t first = max_pos_;
  cos_.resize(static_cast<size_t>(max_pos * half));
  sin_.resize(static_cast<size_t>(max_pos * half));
  // A double cos + sin costs ~20 ns here, so Llama 3's 131072 x 64 table takes ~0.2 s on
  // one core; threads make that one-off cost smaller still.
#pragma omp parallel for schedule(static) if ((max_pos - first) * half >= (int64_t{1} << 16))
  for (int64_t p = first; p < max_pos; ++p)
    for (int64_t i = 0; i < half; ++i) {
      // pos < 2^31 is exact in double, so the angle carries one rounding, not a growing one.
      const double angle = static_cast<double>(p) * inv_freq[static_cast<size_t>(i)];
      cos_[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(angle));
      sin_[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(angle));
    }
  max_pos_ = max_pos;
}

void RopeCache::check_position(int64_t pos, std::string_view what) const {
  if (pos < 0 || pos >= max_pos_) detail::bad_position(pos, max_pos_, what);
}

namespace {

// Rotates the rotary part row[0, 2 * half) in place with the table row (c, s): [half].
// T is float for f32 / bf16 / f16 rows and double for f64 rows. Both pair loops vectorize
// at -O3 with the SSE2 baseline (checked with -fopt-info-vec): rotate_half reads two
// unit-stride halves (GCC adds a runtime alias check despite restrict), interleaved is a
// stride-2 group the vectorizer de-interleaves with shuffles. One thread rotates a
// [32, 4096, 128] f32 tensor in ~6 ms (~22 GB/s of x read + written), so a Highway
// AVX2/AVX-512 version would buy little beside attention itself.
template <class T>
void rotate_pairs(RopeStyle style, const float* __restrict c, const float* __restrict s, T* __restrict row,
                  int64_t half) {
  if (style == RopeStyle::rotate_half) {
    T* __restrict x1 = row;
    T* __restrict x2 = row + half;
    for (int64_t i = 0; i < half; ++i) {
      const T a = x1[i], b = x2[i];
      x1[i] = a * c[i] - b * s[i];
      x2[i] = b * c[i] + a * s[i];
    }
  } else {
    for (int64_t i = 0; i < half; ++i) {
      const T a = row[2 * i], b = row[2 * i + 1];
      row[2 * i] = a * c[i] - b * s[i];
      row[2 * i + 1] = a * s[i] + b * c[i];
    }
  }
}

// How one tensor row is reached. Direct: contiguous f32 rows, rotated where they lie.
// Gathered<Elem, Buf>: any other dtype or channel stride; the rotary channels are widened
// into a stack buffer of Buf, rotated, and rounded back once, so the tail [R, D) is never
// touched (bit-exact pass-through, whatever the dtype).
struct Direct {
  float* data;
  void rotate(RopeStyle style, const float* c, const float* s, int64_t offset, int64_t stride, int64_t half) const {
    rotate_pairs(style, c, s, data + offset, half);
  }
};

template <class Elem, class Buf, Buf (*Widen)(Elem), Elem (*Narrow)(Buf)>
struct Gathered {
  Elem* data;
  void rotate(RopeStyle style, const float* c, const float* s, int64_t offset, int64_t stride, int64_t half) const {
    std::array<Buf, kMaxHeadDim> buf;
    Elem* p = data + offset;
    for (int64_t i = 0; i < 2 * half; ++i) buf[static_cast<size_t>(i)] = Widen(p[i * stride]);
    rotate_pairs(style, c, s, buf.data(), half);
    for (int64_t i = 0; i < 2 * half; ++i) p[i * stride] = Narrow(buf[static_cast<size_t>(i)]);
  }
};

float same_f32(float x) { return x; }
double same_f64(double x) { return x; }
float bf16_widen(uint16_t x) { return bf16_to_float(x); }
uint16_t bf16_narrow(float x) { return float_to_bf16(x); }
float f16_widen(uint16_t x) { return f16_to_float(x); }
uint16_t f16_narrow(float x) { return float_to_f16(x); }

template <class Rows>
void rotate_all(const RopeCache& cache, const TensorView& x, const int64_t* positions, Rows rows) {
  const int64_t B = x.size(0), H = x.size(1), N = x.size(2), half = cache.rotary_dim() / 2;
  const RopeStyle style = cache.style();
  // Below ~64K rotated values (a decode step of a small model) a parallel region's start-up
  // costs more than the rotation itself.
#pragma omp parallel for collapse(2) schedule(static) if (B * H * N * half >= (int64_t{1} << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < N; ++n) {
        const int64_t p = positions[b * N + n];
        rows.rotate(style, cache.cos(p), cache.sin(p), x.offset(b, h, n, 0), x.stride(3), half);
      }
}

}  // namespace

void apply_rope(const RopeCache& cache, const MutTensorView& x, const int64_t* positions) {
  const int64_t d = detail::rope_head_dim(x);
  check(d == cache.head_dim(), [&] {
    return fmt::format("x head dim (D = {}) must equal the RopeCache head_dim ({}); x has shape {}", d,
                       cache.head_dim(), x.shape_string());
  });
  if (x.numel() == 0) return;
  detail::check_rope_positions(positions, x.size(0), x.size(2), cache.max_pos());
  void* data = x.mutable_data();
  switch (x.dtype()) {
    case DType::f32:
      if (x.stride(3) == 1)
        rotate_all(cache, x, positions, Direct{static_cast<float*>(data)});
      else
        rotate_all(cache, x, positions, Gathered<float, float, same_f32, same_f32>{static_cast<float*>(data)});
      break;
    case DType::f64:
      rotate_all(cache, x, positions, Gathered<double, double, same_f64, same_f64>{static_cast<double*>(data)});
      break;
    case DType::bf16:
      rotate_all(cache, x, positions, Gathered<uint16_t, float, bf16_widen, bf16_narrow>{static_cast<uint16_t*>(data)});
      break;
    case DType::f16:
      rotate_all(cache, x, positions, Gathered<uint16_t, float, f16_widen, f16_narrow>{static_cast<uint16_t*>(data)});
      break;
  }
}

void rope_row(const RopeCache& cache, float* row, int64_t d, int64_t pos) {
  check(d == cache.head_dim(),
        [&] { return fmt::format("rope_row: d ({}) must equal the RopeCache head_dim ({})", d, cache.head_dim()); });
  cache.check_position(pos, "rope_row: pos");
  assert(row != nullptr);
  rotate_pairs(cache.style(), cache.cos(pos), cache.sin(pos), row, cache.rotary_dim() / 2);
}

void rope_angles(const RopeConfig& config, int64_t head_dim, int64_t pos, float* c, float* s) {
  config.validate(head_dim);
  check(pos >= 0 && pos < kMaxRopePosition, [&] { return fmt::format("rope_angles: pos ({}) must be in [0, 2^31)", pos); });
  const int64_t r = config.resolved_rotary_dim(head_dim), half = r / 2;
  for (int64_t i = 0; i < half; ++i) {
    // The same expression, in the same order, as RopeCache::reserve: bitwise equal rows.
    const double inv_freq = std::pow(config.base, -2.0 * static_cast<double>(i) / static_cast<double>(r));
    const double angle = static_cast<double>(pos) * inv_freq;
    c[i] = static_cast<float>(std::cos(angle));
    s[i] = static_cast<float>(std::sin(angle));
  }
}

void rope_row_angles(const RopeConfig& config, int64_t head_dim, const float* c, const float* s, float* row) {
  rotate_pairs(config.style, c, s, row, config.resolved_rotary_dim(head_dim) / 2);
}

}  // namespace attnkit
