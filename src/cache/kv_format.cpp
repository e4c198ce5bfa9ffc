// The table of KV storage formats (kv_format.hpp): each format's sizes and parameters, and
// its row codecs over a block region (the one place that knows how a region's rows and
// parameters are laid out per format; the arithmetic is kv_quant.hpp's).
#include "cache/kv_format.hpp"

#include <cassert>
#include <cstring>

#include "attnkit/tensor.hpp"
#include "cache/kv_rows.hpp"

namespace attnkit::detail {
namespace {

uint16_t* f16_params(std::byte* p) { return reinterpret_cast<uint16_t*>(p); }

// ---- f32, bf16, f16: values, no parameters ----

void decode_f32(const KvRegion& g, int64_t r, float* out) {
  std::memcpy(out, g.codes + r * g.row_bytes, static_cast<size_t>(g.width) * 4);
}
void encode_f32(const KvRegion& g, int64_t r, const float* x) {
  std::memcpy(g.codes + r * g.row_bytes, x, static_cast<size_t>(g.width) * 4);
}

// 16-bit values through their scalar converters (bf16 or f16).
template <float (*ToFloat)(uint16_t)>
void decode_16(const KvRegion& g, int64_t r, float* out) {
  const auto* x = reinterpret_cast<const uint16_t*>(g.codes + r * g.row_bytes);
  for (int64_t c = 0; c < g.width; ++c) out[c] = ToFloat(x[c]);
}
template <uint16_t (*FromFloat)(float)>
void encode_16(const KvRegion& g, int64_t r, const float* x) {
  auto* y = reinterpret_cast<uint16_t*>(g.codes + r * g.row_bytes);
  for (int64_t c = 0; c < g.width; ++c) y[c] = FromFloat(x[c]);
}

// ---- int8: codes [slots][w], f16 scales [slots] ----

void decode_int8(const KvRegion& g, int64_t r, float* out) {
  dequantize_int8_rows(reinterpret_cast<const int8_t*>(g.codes + r * g.row_bytes), f16_params(g.params) + r, 1,
                       g.width, out, g.width);
}
void encode_int8(const KvRegion& g, int64_t r, const float* x) {
  quantize_int8_row(x, g.width, reinterpret_cast<int8_t*>(g.codes + r * g.row_bytes), f16_params(g.params) + r);
}
void copy_int8_params(const KvRegion& from, const KvRegion& to, int64_t rows) {
  std::memcpy(to.params, from.params, static_cast<size_t>(rows * 2));
}

// ---- int4: keys per group of G slots, scales [w] then zeros [w]; values scales
// [slots][ng] then zeros [slots][ng] ----

void decode_int4(const KvRegion& g, int64_t r, float* out) {
  const auto* q = reinterpret_cast<const uint8_t*>(g.codes + r * g.row_bytes);
  const int64_t w = g.width;
  if (g.key) {
    const uint16_t* scales = f16_params(g.params) + r / g.group * 2 * w;
    dequantize_int4_key_group(q, scales, scales + w, 1, w, out, w);
  } else {
    const int64_t ng = int4_value_groups(w, g.group);
    const uint16_t* scales = f16_params(g.params);
    dequantize_int4_value_rows(q, scales + r * ng, scales + g.slots * ng + r * ng, 1, w, g.group, out, w);
  }
}
void encode_int4_value(const KvRegion& g, int64_t r, const float* x) {
  assert(!g.key);
  const int64_t ng = int4_value_groups(g.width, g.group);
  uint16_t* scales = f16_params(g.params);
  quantize_int4_value_row(x, g.width, g.group, reinterpret_cast<uint8_t*>(g.codes + r * g.row_bytes),
                          scales + r * ng, scales + g.slots * ng + r * ng);
}
void encode_int4_key_group(const KvRegion& g, int64_t r0, const float* x) {
  assert(g.key && r0 % g.group == 0);
  uint16_t* scales = f16_params(g.params) + r0 / g.group * 2 * g.width;
  quantize_int4_key_group(x, g.width, g.group, g.width, reinterpret_cast<uint8_t*>(g.codes + r0 * g.row_bytes),
                          scales, scales + g.width);
}
void copy_int4_params(const KvRegion& from, const KvRegion& to, int64_t rows) {
  if (from.key) {
    std::memcpy(to.params, from.params, static_cast<size_t>(rows / from.group * from.width * 4));
    return;
  }
  const int64_t ng = int4_value_groups(from.width, from.group);
  std::memcpy(to.params, from.params, static_cast<size_t>(rows * ng * 2));  // scales
  std::memcpy(to.params + to.slots * ng * 2, from.params + from.slots * ng * 2,
              static_cast<size_t>(rows * ng * 2));  // zeros
}

}  // namespace

constexpr KvFormat kKvFormatTable[kKvFormatCount] = {
    {KvStorage::f32, "f32", 32, 0, 0, false, decode_f32, encode_f32, nullptr, nullptr},
    {KvStorage::bf16, "bf16", 16, 0, 0, false, decode_16<bf16_to_float>, encode_16<float_to_bf16>, nullptr, nullptr},
    {KvStorage::f16, "f16", 16, 0, 0, false, decode_16<f16_to_float>, encode_16<float_to_f16>, nullptr, nullptr},
    {KvStorage::int8, "int8", 8, 2, 0, false, decode_int8, encode_int8, nullptr, copy_int8_params},
    {KvStorage::int4, "int4", 4, 0, 4, true, decode_int4, encode_int4_value, encode_int4_key_group,
     copy_int4_params},
};

static_assert([] {
  for (size_t i = 0; i < kKvFormatCount; ++i)
    if (static_cast<size_t>(kKvFormatTable[i].storage) != i) return false;
  return true;
}(), "kKvFormatTable is indexed by KvStorage");
static_assert(!kKvFormatTable[static_cast<size_t>(kKvResidualStorage)].quantized(), "the residual holds values");

}  // namespace attnkit::detail
