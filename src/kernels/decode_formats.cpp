// The decode kernel's table per storage format (decode_formats.hpp): small adapters from
// one tile signature to each format's stored-byte micro-kernels, the query encodings,
// the per-key parameter pointers, the generic path's f32 rows, and the checks of the guard
// of hidden NaN / inf.
#include "kernels/decode_formats.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "attnkit/kv_quant.hpp"
#include "attnkit/shape.hpp"
#include "attnkit/tensor.hpp"
#include "kernels/nonfinite.hpp"

namespace attnkit::decode {
namespace {

using detail::KvRegion;

template <class T>
const T* const* rows_as(const void* const* rows) {
  return reinterpret_cast<const T* const*>(rows);
}

const uint16_t* f16_params(const std::byte* p) { return reinterpret_cast<const uint16_t*>(p); }

// Asks for the cache lines of [p, p + bytes) to be brought into L2.
void prefetch_bytes(const void* p, int64_t bytes) {
  const auto first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63};
  for (uintptr_t line = first; line < reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes); line += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 2);
}

// ---- the micro-kernels, one signature ----

void scores_bf16(const QueryRows& q, int64_t rows, int64_t dk, const TileRows& t, float* s, const Ahead& ahead) {
  scores_bf16_avx512(q.bf16, rows, dk, rows_as<uint16_t>(t.krows), t.n, s, ahead);
}
void pv_bf16(const float* p, int64_t rows, const TileRows& t, int64_t dv, float* acc, const Ahead& ahead) {
  pv_bf16_avx512(p, rows, rows_as<uint16_t>(t.vrows), t.n, dv, acc, ahead);
}
void scores_f16(const QueryRows& q, int64_t rows, int64_t dk, const TileRows& t, float* s, const Ahead& ahead) {
  scores_f16_avx512(q.f32, rows, dk, rows_as<uint16_t>(t.krows), t.n, s, ahead);
}
void pv_f16(const float* p, int64_t rows, const TileRows& t, int64_t dv, float* acc, const Ahead& ahead) {
  pv_f16_avx512(p, rows, rows_as<uint16_t>(t.vrows), t.n, dv, acc, ahead);
}
void scores_int8(const QueryRows& q, int64_t rows, int64_t dk, const TileRows& t, float* s, const Ahead& ahead) {
  scores_int8_avx512(q.q8, q.q8_scale, rows, dk, rows_as<int8_t>(t.krows), t.kscale, t.n, s, ahead);
}
void pv_int8(const float* p, int64_t rows, const TileRows& t, int64_t dv, float* acc, const Ahead& ahead) {
  pv_int8_avx512(p, rows, rows_as<int8_t>(t.vrows), t.vscale, t.n, dv, acc, ahead);
}
void scores_int4(const QueryRows& q, int64_t rows, int64_t dk, const TileRows& t, float* s, const Ahead& ahead) {
  scores_int4_avx512(q.f32, rows, dk, rows_as<uint8_t>(t.krows), t.kpar_s, t.kpar_z, t.n, s, ahead);
}
void pv_int4(const float* p, int64_t rows, const TileRows& t, int64_t dv, float* acc, const Ahead& ahead) {
  pv_int4_avx512(p, rows, rows_as<uint8_t>(t.vrows), t.vpar_s, t.vpar_z, t.group, t.n, dv, acc, ahead);
}

// ---- query encodings ----

void queries_bf16(const QueryRows& q, int64_t rows, int64_t dk) {
  for (int64_t i = 0; i < rows * dk; ++i) q.bf16[i] = float_to_bf16(q.f32[i]);
}
void queries_q8(const QueryRows& q, int64_t rows, int64_t dk) { quantize_q8(q.f32, rows, dk, q.q8, q.q8_scale); }

// ---- per-key parameters ----

// A run's f16 scales are consecutive. They are converted when the tile is computed, not
// now: the next tile is resolved a step early, and its scales, one short stretch per page,
// would miss in cache here; prefetched now, they arrive during this step.
void locate_int8(const KvRegion&, const KvRegion&, TileRows& t) {
  for (int64_t i = 0; i < t.run_count; ++i) {
    const TileRows::Run& run = t.runs[i];
    prefetch_bytes(f16_params(run.kparams) + run.slot, 2 * run.n);
    prefetch_bytes(f16_params(run.vparams) + run.slot, 2 * run.n);
  }
  t.params_ready = false;
}

void prepare_int8(const RowConverters& c, TileRows& t) {
  for (int64_t i = 0; i < t.run_count; ++i) {
    const TileRows::Run& run = t.runs[i];
    c.f16_to_f32(f16_params(run.kparams) + run.slot, t.kscale + run.j, run.n);
    c.f16_to_f32(f16_params(run.vparams) + run.slot, t.vscale + run.j, run.n);
  }
  t.params_ready = true;
}

void locate_int4(const KvRegion& kshape, const KvRegion& vshape, TileRows& t) {
  const int64_t dk = kshape.width, G = kshape.group;
  const int64_t ng = int4_value_groups(vshape.width, vshape.group);
  const auto fill = [&](const uint16_t* base, int64_t step, int64_t count, const uint16_t** out) {
    fill_rows_avx512(base, step * 2, count, reinterpret_cast<const void**>(out));
  };
  for (int64_t i = 0; i < t.run_count; ++i) {
    const TileRows::Run& run = t.runs[i];
    const uint16_t* kp = f16_params(run.kparams);
    const uint16_t* vp = f16_params(run.vparams);
    const int64_t j = run.j, slot = run.slot;
    const int64_t g0 = slot / G, g1 = (slot + run.n - 1) / G;
    // Key group g: its dk scales, then its dk zeros; every key of a group shares them.
    for (int64_t g = g0, x = 0; g <= g1; ++g) {
      const int64_t count = std::min((g + 1) * G, slot + run.n) - (slot + x);
      fill(kp + g * 2 * dk, 0, count, t.kpar_s + j + x);
      fill(kp + g * 2 * dk + dk, 0, count, t.kpar_z + j + x);
      x += count;
    }
    fill(vp + slot * ng, ng, run.n, t.vpar_s + j);
    fill(vp + vshape.slots * ng + slot * ng, ng, run.n, t.vpar_z + j);
    // The kernels read these parameters where they lie: prefetched, as the int8 scales.
    prefetch_bytes(kp + g0 * 2 * dk, (g1 - g0 + 1) * 4 * dk);
    prefetch_bytes(vp + slot * ng, 2 * run.n * ng);
    prefetch_bytes(vp + vshape.slots * ng + slot * ng, 2 * run.n * ng);
  }
}

// ---- the generic path's f32 rows ----

// 16-bit values through the driver's SIMD conversion (bf16 or f16).
template <auto RowConverters::*Convert>
void rows_16(const RowConverters& c, const KvRegion& g, int64_t slot, int64_t n, float* out) {
  const std::byte* row = g.codes + slot * g.row_bytes;
  for (int64_t x = 0; x < n; ++x, row += g.row_bytes, out += g.width)
    (c.*Convert)(reinterpret_cast<const uint16_t*>(row), out, g.width);
}

// Codes through the cache's row decoder (kv_format.hpp).
void rows_codec(const RowConverters&, const KvRegion& g, int64_t slot, int64_t n, float* out) {
  const auto decode = detail::kv_format(g.storage).decode_row;
  for (int64_t x = 0; x < n; ++x, out += g.width) decode(g, slot + x, out);
}

// ---- the guard of hidden NaN / inf: which V rows are not finite, and as f32 ----

// Keys j < t.n for which bad_row(j) holds.
template <class BadRow>
int64_t list_keys(const TileRows& t, int64_t* bad, BadRow&& bad_row) {
  int64_t count = 0;
  for (int64_t j = 0; j < t.n; ++j)
    if (bad_row(j)) bad[count++] = j;
  return count;
}

int64_t nonfinite_f32(const TileRows& t, int64_t dv, int64_t* bad) {
  return list_keys(t, bad, [&](int64_t j) { return nonfinite::any_f32(rows_as<float>(t.vrows)[j], dv); });
}
template <uint16_t Exponent>
int64_t nonfinite_16(const TileRows& t, int64_t dv, int64_t* bad) {
  return list_keys(t, bad, [&](int64_t j) { return nonfinite::any_16(rows_as<uint16_t>(t.vrows)[j], dv, Exponent); });
}
int64_t nonfinite_int8(const TileRows& t, int64_t, int64_t* bad) {
  return list_keys(t, bad, [&](int64_t j) { return !std::isfinite(t.vscale[j]); });
}
int64_t nonfinite_int4(const TileRows& t, int64_t dv, int64_t* bad) {
  const int64_t ng = int4_value_groups(dv, t.group);
  return list_keys(t, bad, [&](int64_t j) {
    return nonfinite::any_16(t.vpar_s[j], ng, nonfinite::kF16Exponent) ||
           nonfinite::any_16(t.vpar_z[j], ng, nonfinite::kF16Exponent);
  });
}

void value_f32(const TileRows& t, int64_t j, int64_t dv, float* out) {
  std::memcpy(out, t.vrows[j], static_cast<size_t>(dv) * 4);
}
template <float (*ToFloat)(uint16_t)>
void value_16(const TileRows& t, int64_t j, int64_t dv, float* out) {
  const uint16_t* x = rows_as<uint16_t>(t.vrows)[j];
  for (int64_t c = 0; c < dv; ++c) out[c] = ToFloat(x[c]);
}
void value_int8(const TileRows& t, int64_t j, int64_t dv, float* out) {
  const int8_t* x = rows_as<int8_t>(t.vrows)[j];
  for (int64_t c = 0; c < dv; ++c) out[c] = t.vscale[j] * static_cast<float>(x[c]);
}
void value_int4(const TileRows& t, int64_t j, int64_t dv, float* out) {
  dequantize_int4_value_rows(rows_as<uint8_t>(t.vrows)[j], t.vpar_s[j], t.vpar_z[j], 1, dv, t.group, out, dv);
}

// Zero codes of a row of any format and width, and zero f16 parameters.
alignas(64) constexpr std::byte kZeros[kMaxHeadDim * 4] = {};

}  // namespace

void zero_value(TileRows& t, int64_t j) {
  t.vrows[j] = kZeros;
  t.vscale[j] = 0;
  t.vpar_s[j] = t.vpar_z[j] = reinterpret_cast<const uint16_t*>(kZeros);
}

constexpr DecodeFormat kDecodeFormatTable[detail::kKvFormatCount] = {
    {KvStorage::f32, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nonfinite_f32, value_f32},
    {KvStorage::bf16, scores_bf16, pv_bf16, queries_bf16, nullptr, nullptr, rows_16<&RowConverters::bf16_to_f32>,
     nonfinite_16<nonfinite::kBf16Exponent>, value_16<bf16_to_float>},
    {KvStorage::f16, scores_f16, pv_f16, nullptr, nullptr, nullptr, rows_16<&RowConverters::f16_to_f32>,
     nonfinite_16<nonfinite::kF16Exponent>, value_16<f16_to_float>},
    {KvStorage::int8, scores_int8, pv_int8, queries_q8, locate_int8, prepare_int8, rows_codec, nonfinite_int8,
     value_int8},
    {KvStorage::int4, scores_int4, pv_int4, nullptr, locate_int4, nullptr, rows_codec, nonfinite_int4, value_int4},
};

static_assert([] {
  for (size_t i = 0; i < detail::kKvFormatCount; ++i)
    if (static_cast<size_t>(kDecodeFormatTable[i].storage) != i) return false;
  return true;
}(), "the decode table is indexed by KvStorage");

bool stored_kernels_fit(KvStorage s, int64_t dk, int64_t dv, int64_t G) {
  return decode_format(s).scores != nullptr && avx512_available() &&
         avx512_supports(dk, dv, detail::kv_format(s).grouped() ? G : 0);
}

}  // namespace attnkit::decode
