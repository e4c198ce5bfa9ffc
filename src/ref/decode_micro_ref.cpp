// Plain-loop references of the decode tile micro-kernels (decode_micro.hpp): the oracle the
// AVX-512 kernels are tested against, and the definition of every rounding they may do.
//
// Accumulation: sums run in f64 (products of bf16 values, of f16 parameters and f32
// operands are exact or nearly so there) and each output is rounded to f32 once; integer
// dot products are exact (int64). So a reference's only deviations from the dequantised
// math are the documented operand roundings (bf16 p, integer q and weights) and that one
// final f32 rounding. The AVX-512 kernels round the same operands bit for bit and differ
// only by f32 summation order.
//
// The integer rounding of every operand is one routine, round_int, in three forms: int16
// (quantize_q16, the int8 pv weights; limit up to 32767), int8 (quantize_q8, the int4 key
// operand, limit 127) and uint8 (the int4 pv weights, limit 255, for operands >= 0). For a
// vector x with m = max |x| (uint8: max(0, max x)), inv = limit / m and scale = m / limit
// (both f32 divisions), xi = nearbyint(x * inv) (f32 product, round half to even). Since
// |x * inv| <= limit * (1 + 2^-23) < limit + 1/2, |xi| <= limit without clamping, and
// |x - scale * xi| <= scale / 2 + 3 * 2^-24 * |x| (to first order in 2^-24); uint8 clamps a
// negative x (outside its contract) to 0.
// Two edge cases keep it total: a vector holding a NaN or an infinity gets scale NaN and
// xi = 0, so whatever it feeds comes out NaN (loud, like the cache's poisoned rows); a
// vector whose max is below 2^-100 (all-zero included) gets scale 0 and xi = 0, since
// limit / m would overflow f32 and such terms vanish next to the running softmax sums,
// whose largest p is 1.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "attnkit/tensor.hpp"
#include "kernels/decode_micro.hpp"

namespace attnkit::decode {
namespace {

// Below this a vector's max counts as zero (avx512_decode.cpp uses the same value).
constexpr float kInt16TinyMax = 0x1p-100f;

// x[i * stride], i < count -> xi[i * stride]; returns the scale (see the file comment).
template <class T>
float round_int(const float* x, int64_t count, int64_t stride, int32_t limit, T* xi) {
  constexpr bool kSigned = std::is_signed_v<T>;
  float m = 0;
  bool finite = true;
  for (int64_t i = 0; i < count; ++i) {
    const float v = x[i * stride];
    if (!(std::fabs(v) <= std::numeric_limits<float>::max()))
      finite = false;  // NaN or inf
    else
      m = std::max(m, kSigned ? std::fabs(v) : v);
  }
  if (!finite || m < kInt16TinyMax) {
    for (int64_t i = 0; i < count; ++i) xi[i * stride] = 0;
    return finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
  }
  const float lim = static_cast<float>(limit);
  const float inv = lim / m;
  for (int64_t i = 0; i < count; ++i) {
    // The clamp fires only below 0 for uint8 (see above); otherwise it keeps the
    // conversion defined.
    const float r = std::clamp(std::nearbyint(x[i * stride] * inv), kSigned ? -lim : 0.0f, lim);
    xi[i * stride] = static_cast<T>(r);
  }
  return m / lim;
}

// Code of channel c of an int4 row: channel 2i in the low nibble of byte i.
int int4_code(const uint8_t* row, int64_t c) { return (row[c / 2] >> (4 * (c % 2))) & 0xF; }

}  // namespace

int32_t q16_limit(int64_t dk, int32_t code_max) {
  assert(dk >= 1 && code_max >= 1);
  const int64_t bound = std::numeric_limits<int32_t>::max() / (int64_t{code_max} * dk);
  return static_cast<int32_t>(std::min<int64_t>(32767, bound));
}

void quantize_q16(const float* q, int64_t rows, int64_t dk, int32_t limit, int16_t* q16, float* qs) {
  for (int64_t r = 0; r < rows; ++r) qs[r] = round_int(q + r * dk, dk, 1, limit, q16 + r * dk);
}

void quantize_q8(const float* q, int64_t rows, int64_t dk, int8_t* q8, float* qs) {
  for (int64_t r = 0; r < rows; ++r) qs[r] = round_int(q + r * dk, dk, 1, 127, q8 + r * dk);
}

// ---- bf16 ----

void scores_bf16_ref(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n, float* s) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* qr = q + r * dk;
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t c = 0; c < dk; ++c) sum += double{bf16_to_float(qr[c])} * bf16_to_float(krows[j][c]);
      s[r * kTileKeys + j] = static_cast<float>(sum);
    }
  }
}

void pv_bf16_ref(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc) {
  std::vector<double> sum(static_cast<size_t>(dv));
  for (int64_t r = 0; r < rows; ++r) {
    float* out = acc + r * dv;
    std::copy(out, out + dv, sum.begin());
    for (int64_t j = 0; j < n; ++j) {
      const double pj = bf16_to_float(float_to_bf16(p[r * kTileKeys + j]));
      for (int64_t c = 0; c < dv; ++c) sum[c] += pj * bf16_to_float(vrows[j][c]);
    }
    for (int64_t c = 0; c < dv; ++c) out[c] = static_cast<float>(sum[c]);
  }
}

// ---- f16 ----

void scores_f16_ref(const float* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n, float* s) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t c = 0; c < dk; ++c) sum += double{q[r * dk + c]} * f16_to_float(krows[j][c]);
      s[r * kTileKeys + j] = static_cast<float>(sum);
    }
}

void pv_f16_ref(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc) {
  std::vector<double> sum(static_cast<size_t>(dv));
  for (int64_t r = 0; r < rows; ++r) {
    float* out = acc + r * dv;
    std::copy(out, out + dv, sum.begin());
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < dv; ++c) sum[c] += double{p[r * kTileKeys + j]} * f16_to_float(vrows[j][c]);
    for (int64_t c = 0; c < dv; ++c) out[c] = static_cast<float>(sum[c]);
  }
}

// ---- int8 ----

void scores_int8_ref(const int8_t* q8, const float* qs, int64_t rows, int64_t dk, const int8_t* const* krows,
                     const float* kscale, int64_t n, float* s) {
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* qr = q8 + r * dk;
    for (int64_t j = 0; j < n; ++j) {
      int64_t dot = 0;
      for (int64_t c = 0; c < dk; ++c) dot += int64_t{qr[c]} * krows[j][c];
      s[r * kTileKeys + j] = static_cast<float>(double{qs[r]} * kscale[j] * static_cast<double>(dot));
    }
  }
}

void pv_int8_ref(const float* p, int64_t rows, const int8_t* const* vrows, const float* vscale, int64_t n, int64_t dv,
                 float* acc) {
  if (n <= 0) return;
  std::vector<float> w(static_cast<size_t>(n));
  std::vector<int16_t> w16(static_cast<size_t>(n));
  std::vector<int64_t> isum(static_cast<size_t>(dv));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < n; ++j) w[j] = p[r * kTileKeys + j] * vscale[j];
    const double ws = round_int(w.data(), n, 1, 32767, w16.data());
    std::fill(isum.begin(), isum.end(), 0);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < dv; ++c) isum[c] += int64_t{w16[j]} * vrows[j][c];
    float* out = acc + r * dv;
    for (int64_t c = 0; c < dv; ++c) out[c] = static_cast<float>(out[c] + ws * static_cast<double>(isum[c]));
  }
}

// ---- int4 ----

void scores_int4_ref(const float* q, int64_t rows, int64_t dk, const uint8_t* const* krows,
                     const uint16_t* const* kscale, const uint16_t* const* kzero, int64_t n, float* s) {
  if (n <= 0) return;
  // The int8 operand and zero term of each row for the current group, recomputed when the
  // group's parameters change (they depend on nothing else). |dot| <= 127 * 15 * dk < 2^31.
  std::vector<float> qk(static_cast<size_t>(dk));
  std::vector<int8_t> q8(static_cast<size_t>(rows * dk));
  std::vector<float> qs(static_cast<size_t>(rows));
  std::vector<double> zterm(static_cast<size_t>(rows));
  const uint16_t* cur_scale = nullptr;
  const uint16_t* cur_zero = nullptr;
  for (int64_t j = 0; j < n; ++j) {
    if (j == 0 || kscale[j] != cur_scale || kzero[j] != cur_zero) {
      cur_scale = kscale[j];
      cur_zero = kzero[j];
      for (int64_t r = 0; r < rows; ++r) {
        const float* qr = q + r * dk;
        double z = 0;
        for (int64_t c = 0; c < dk; ++c) {
          qk[c] = qr[c] * f16_to_float(cur_scale[c]);
          z += double{qr[c]} * f16_to_float(cur_zero[c]);
        }
        qs[r] = round_int(qk.data(), dk, 1, 127, q8.data() + r * dk);
        zterm[r] = z;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int8_t* qr = q8.data() + r * dk;
      int64_t dot = 0;
      for (int64_t c = 0; c < dk; ++c) dot += int64_t{qr[c]} * int4_code(krows[j], c);
      s[r * kTileKeys + j] = static_cast<float>(double{qs[r]} * static_cast<double>(dot) + zterm[r]);
    }
  }
}

void pv_int4_ref(const float* p, int64_t rows, const uint8_t* const* vrows, const uint16_t* const* vscale,
                 const uint16_t* const* vzero, int64_t G, int64_t n, int64_t dv, float* acc) {
  if (n <= 0) return;
  const int64_t groups = (dv + G - 1) / G;
  std::vector<float> w(static_cast<size_t>(n * groups));  // [j][g]
  std::vector<uint8_t> w8(w.size());
  std::vector<double> ws(static_cast<size_t>(groups)), zsum(static_cast<size_t>(groups));
  std::vector<int64_t> isum(static_cast<size_t>(dv));
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = p + r * kTileKeys;
    std::fill(zsum.begin(), zsum.end(), 0.0);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t g = 0; g < groups; ++g) {
        w[j * groups + g] = pr[j] * f16_to_float(vscale[j][g]);
        zsum[g] += double{pr[j]} * f16_to_float(vzero[j][g]);
      }
    }
    for (int64_t g = 0; g < groups; ++g) ws[g] = round_int(w.data() + g, n, groups, 255, w8.data() + g);
    std::fill(isum.begin(), isum.end(), 0);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < dv; ++c) isum[c] += int64_t{w8[j * groups + c / G]} * int4_code(vrows[j], c);
    float* out = acc + r * dv;
    for (int64_t c = 0; c < dv; ++c)
      out[c] = static_cast<float>(out[c] + ws[c / G] * static_cast<double>(isum[c]) + zsum[c / G]);
  }
}

}  // namespace attnkit::decode
