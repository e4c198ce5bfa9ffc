// The SIMD decoders of quantized KV storage (int8 rows, int4 key groups, int4 value rows;
// layouts in kv_quant.hpp), written once with Highway and compiled for every x86 target;
// the best one the CPU supports is chosen at run time. Not for: quantization or argument
// checks (kv_quant.cpp). Every result is bitwise equal to the plain loops in kv_quant.cpp:
// q * scale is exact in f32 (an 8-bit or 4-bit integer times an 11-bit f16 mantissa), so
// int4's q * scale + zero has one rounding whether or not the target fuses the multiply-add.
//
// Nibbles to channel order: see Block32 and Codes4.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cache/kv_quant_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep

#include <hwy/highway.h>

#include <algorithm>

#include "attnkit/shape.hpp"
#include "attnkit/tensor.hpp"
#include "cache/kv_quant_simd.hpp"

HWY_BEFORE_NAMESPACE();
namespace attnkit::kvq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

const char* Target() { return hwy::TargetName(HWY_TARGET); }

// int8 scales are converted a chunk of rows at a time into a stack buffer of this many floats.
constexpr int64_t kChunk = 256;

// dst[i] = f16_to_float(src[i]), bitwise. Highway 1.0.3's PromoteTo from float16_t turns
// inf / NaN into large finite values on targets without F16C, and rescaling a subnormal
// half by 2^112 as a float subnormal breaks under DAZ; here subnormals go through an exact
// int -> float conversion (m * 2^-24 is a normal float) and inf / NaN get the all-ones exponent.
void F16ToF32(const uint16_t* HWY_RESTRICT src, float* HWY_RESTRICT dst, int64_t n) {
  const DF d;
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint16_t, DF> d16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto h = hn::PromoteTo(du, hn::LoadU(d16, src + i));
    const auto sign = hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)));
    const auto exp = hn::And(h, hn::Set(du, 0x7C00u));
    const auto mag = hn::ShiftLeft<13>(hn::And(h, hn::Set(du, 0x7FFFu)));
    const auto normal = hn::Add(mag, hn::Set(du, 112u << 23));  // rebias the exponent 15 -> 127
    const auto special = hn::Or(mag, hn::Set(du, 0x7F800000u));
    const VF sub = hn::Mul(hn::ConvertTo(d, hn::BitCast(di, hn::And(h, hn::Set(du, 0x3FFu)))), hn::Set(d, 0x1p-24f));
    const auto bits = hn::IfThenElse(exp == hn::Zero(du), hn::BitCast(du, sub),
                                     hn::IfThenElse(exp == hn::Set(du, 0x7C00u), special, normal));
    hn::StoreU(hn::BitCast(d, hn::Or(bits, sign)), d, dst + i);
  }
  for (; i < n; ++i) dst[i] = f16_to_float(src[i]);
}

// out[r][i] = q[r][i] * scale[r].
void Int8Rows(const int8_t* q, const uint16_t* scales, int64_t rows, int64_t w, float* out, int64_t out_stride) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  alignas(64) float sc[kChunk];
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    const int64_t nr = std::min(kChunk, rows - r0);
    F16ToF32(scales + r0, sc, nr);
    for (int64_t r = r0; r < r0 + nr; ++r) {
      const int8_t* HWY_RESTRICT qr = q + r * w;
      float* HWY_RESTRICT o = out + r * out_stride;
      const float s = sc[r - r0];
      const VF vs = hn::Set(d, s);
      int64_t i = 0;
      for (; i + N <= w; i += N)
        hn::StoreU(hn::Mul(hn::ConvertTo(d, hn::PromoteTo(di, hn::LoadU(d8, qr + i))), vs), d, o + i);
      for (; i < w; ++i) o[i] = static_cast<float>(qr[i]) * s;
    }
  }
}

// The 4-bit codes of channels [i, i + N) as floats, in channel order, from the N/2 bytes
// at c (channel i even). Each byte b widens to a u32 lane; (b & 15) | (b >> 4) << 16 is the
// byte's two codes as two u16 lanes, little-endian: even channel first. Those N u16 lanes
// widen again to N u32 lanes. Every target but the single-lane one (which has no half
// vector and runs the scalar tails instead) has an even N.
#if HWY_TARGET != HWY_SCALAR
HWY_INLINE VF Codes4(DF d, const uint8_t* HWY_RESTRICT c) {
  const hn::Half<DF> dh;
  const hn::RebindToUnsigned<decltype(dh)> duh;
  const hn::Repartition<uint16_t, decltype(duh)> d16;
  const auto b = hn::PromoteTo(duh, hn::LoadU(hn::Rebind<uint8_t, decltype(dh)>(), c));
  const auto pairs = hn::Or(hn::And(b, hn::Set(duh, 15u)), hn::ShiftLeft<12>(hn::And(b, hn::Set(duh, 0xF0u))));
  const auto codes = hn::PromoteTo(hn::RebindToUnsigned<DF>(), hn::BitCast(d16, pairs));
  return hn::ConvertTo(d, hn::BitCast(hn::RebindToSigned<DF>(), codes));
}

// Channels [i, i + 32) from the 16 bytes at c: split the nibbles of a whole 128-bit block
// and interleave them back into channel order with byte shuffles, then widen bytes to
// floats N at a time. Faster than 32 / N calls of Codes4, which spend a 16-bit widening
// per N channels (AVX-512 on Zen 4, 64 x 128 key tile: 470-530 vs 620-700 ns).
// sf / zf give the scale and zero vectors of channels [j, j + N) of the block.
template <class ScaleAt, class ZeroAt>
HWY_INLINE void Block32(DF d, const uint8_t* HWY_RESTRICT c, float* HWY_RESTRICT o, ScaleAt sf, ZeroAt zf) {
  const hn::Full128<uint8_t> d8;
  const auto v = hn::LoadU(d8, c);
  const auto lo = hn::And(v, hn::Set(d8, uint8_t{15}));
  const auto hi = hn::ShiftRight<4>(v);
  alignas(32) uint8_t buf[32];
  hn::Store(hn::InterleaveLower(d8, lo, hi), d8, buf);
  hn::Store(hn::InterleaveUpper(d8, lo, hi), d8, buf + 16);
  const hn::Rebind<uint8_t, DF> dn;
  const hn::RebindToSigned<DF> di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t j = 0; j < 32; j += N) {
    const VF f = hn::ConvertTo(d, hn::BitCast(di, hn::PromoteTo(hn::RebindToUnsigned<DF>(), hn::LoadU(dn, buf + j))));
    hn::StoreU(hn::MulAdd(f, sf(j), zf(j)), d, o + j);
  }
}
constexpr bool kVectorInt4 = true;
#else
HWY_INLINE VF Codes4(DF, const uint8_t*) { return VF(); }
template <class ScaleAt, class ZeroAt>
HWY_INLINE void Block32(DF, const uint8_t*, float*, ScaleAt, ZeroAt) {}
constexpr bool kVectorInt4 = false;
#endif

// Channel i's code of a row of packed codes (the scalar tails).
HWY_INLINE float Code4(const uint8_t* c, int64_t i) {
  return static_cast<float>(i % 2 == 0 ? c[i / 2] & 15 : c[i / 2] >> 4);
}

// Keys: one (scale, zero) per channel, shared by every row, so they are converted once per
// call (w <= kMaxHeadDim).
void Int4KeyRows(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros, int64_t rows, int64_t w,
                 float* out, int64_t out_stride) {
  const DF d;
  const int64_t N = kVectorInt4 ? static_cast<int64_t>(hn::Lanes(d)) : w + 1;
  const int64_t B = kVectorInt4 ? 32 : w + 1;  // channels per Block32
  alignas(64) float sf[kMaxHeadDim], zf[kMaxHeadDim];
  F16ToF32(scales, sf, w);
  F16ToF32(zeros, zf, w);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* HWY_RESTRICT c = codes + r * (w / 2);
    float* HWY_RESTRICT o = out + r * out_stride;
    int64_t i = 0;
    for (; i + B <= w; i += B)
      Block32(d, c + i / 2, o + i, [&](int64_t j) { return hn::Load(d, sf + i + j); },
              [&](int64_t j) { return hn::Load(d, zf + i + j); });
    for (; i + N <= w; i += N)
      hn::StoreU(hn::MulAdd(Codes4(d, c + i / 2), hn::Load(d, sf + i), hn::Load(d, zf + i)), d, o + i);
    for (; i < w; ++i) o[i] = Code4(c, i) * sf[i] + zf[i];
  }
}

// Values: one (scale, zero) per group of G channels of a row (G is even, so a byte never
// straddles two groups). Parameters are converted for as many whole rows as fit in kParams
// (w <= kMaxHeadDim, so one row's ceil(w / G) <= kMaxHeadDim / 2 always fits).
void Int4ValueRows(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros, int64_t rows, int64_t w,
                   int64_t G, float* out, int64_t out_stride) {
  const DF d;
  const int64_t N = kVectorInt4 ? static_cast<int64_t>(hn::Lanes(d)) : w + 1;
  const int64_t B = kVectorInt4 ? 32 : w + 1;  // channels per Block32
  const int64_t groups = (w + G - 1) / G;
  constexpr int64_t kParams = kMaxHeadDim / 2;
  const int64_t rows_per_chunk = kParams / groups;
  // The common case (G = 32, 64, 128 dividing w): a fixed count of blocks per group and no
  // tails. With G = 32 a group is one block, and the general loops' bookkeeping costs about
  // as much as the block itself (64 x 128 tile, G = 32: 0.62 us, 0.76-1.2 us without it).
  const bool whole_blocks = kVectorInt4 && G % 32 == 0 && w % G == 0;
  alignas(64) float sf[kParams], zf[kParams];
  for (int64_t r0 = 0; r0 < rows; r0 += rows_per_chunk) {
    const int64_t nr = std::min(rows_per_chunk, rows - r0);
    F16ToF32(scales + r0 * groups, sf, nr * groups);
    F16ToF32(zeros + r0 * groups, zf, nr * groups);
    for (int64_t r = 0; r < nr; ++r) {
      const uint8_t* HWY_RESTRICT c = codes + (r0 + r) * (w / 2);
      float* HWY_RESTRICT o = out + (r0 + r) * out_stride;
      const float* s_row = sf + r * groups;
      const float* z_row = zf + r * groups;
      for (int64_t g = 0; g < groups; ++g) {
        const float s = s_row[g], z = z_row[g];
        const VF vs = hn::Set(d, s), vz = hn::Set(d, z);
        auto scale = [&](int64_t) { return vs; };
        auto zero = [&](int64_t) { return vz; };
        if (whole_blocks) {
          for (int64_t i = g * G; i < (g + 1) * G; i += 32) Block32(d, c + i / 2, o + i, scale, zero);
          continue;
        }
        const int64_t end = std::min((g + 1) * G, w);
        int64_t i = g * G;
        for (; i + B <= end; i += B) Block32(d, c + i / 2, o + i, scale, zero);
        for (; i + N <= end; i += N) hn::StoreU(hn::MulAdd(Codes4(d, c + i / 2), vs, vz), d, o + i);
        for (; i < end; ++i) o[i] = Code4(c, i) * s + z;
      }
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::kvq {

HWY_EXPORT(Target);
HWY_EXPORT(Int8Rows);
HWY_EXPORT(Int4KeyRows);
HWY_EXPORT(Int4ValueRows);

KvQuantOps simd_ops() {
  // Highway 1.0.3 has no HWY_DYNAMIC_POINTER: choose the target the way its first
  // HWY_DYNAMIC_DISPATCH would, then read the tables (as kernels/flash_simd.cpp does).
  // CPU detection (cpuid, which traps under a hypervisor) only when Highway has not chosen
  // yet or was reset by DisableTargets / SetSupportedTargetsForTest.
  if (!hwy::GetChosenTarget().IsInitialized()) hwy::GetChosenTarget().Update(hwy::SupportedTargets());
  const size_t t = hwy::GetChosenTarget().GetIndex();
  KvQuantOps ops;
  ops.int8_rows = HWY_DISPATCH_TABLE(Int8Rows)[t];
  ops.int4_key_rows = HWY_DISPATCH_TABLE(Int4KeyRows)[t];
  ops.int4_value_rows = HWY_DISPATCH_TABLE(Int4ValueRows)[t];
  ops.target = HWY_DISPATCH_TABLE(Target)[t]();
  return ops;
}

}  // namespace attnkit::kvq
#endif
