// Internal: the decode kernel's table per storage format. For each format: the stored-byte
// micro-kernels (decode_micro.hpp) that compute a tile's S = Q K^T and O += P V, behind one
// signature; what the queries must be prepared as for them (bf16 rounding, int8 q8
// quantization, or f32 as they are); how a tile's runs of slots hand their per-key
// parameters to them; and how the generic path reads the format as f32 rows. The driver
// (decode.cpp) calls through it once per tile (the generic path: once per run of slots),
// never per key. The formats'
// sizes, parameters and codecs are the cache's table (cache/kv_format.hpp); the bytes a
// decode reads follow from those (decode_bytes_read()). It also holds the checks of the
// guard that keeps NaN / inf in V at a hidden key out of the rows that cannot see it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attnkit/kv_size.hpp"
#include "cache/kv_rows.hpp"
#include "kernels/decode_micro.hpp"

namespace attnkit::decode {

struct DecodeFormat;

// One tile's K / V rows as the kernels take them: a pointer per key (one block-table / ring
// lookup per run of consecutive slots) and the per-key quantization parameters.
struct TileRows {
  int64_t lo = -1, n = 0;  // logical keys [lo, lo + n); lo = -1: not resolved
  bool fast = false;       // stored-byte micro-kernels (else f32 rows for the generic path)
  const DecodeFormat* format = nullptr;  // of the tile's rows (uniform over a tile)
  int64_t group = 0;
  const void* krows[kTileKeys];
  const void* vrows[kTileKeys];
  // Stored-byte path of a format with parameters: rows [j, j + n) are slots [slot, slot + n)
  // of one block, whose regions' parameters start at kparams / vparams. Recorded per run
  // by the reader, turned into the per-key parameters below by the format once per tile.
  struct Run {
    const std::byte *kparams, *vparams;
    int64_t j, slot, n;
  };
  Run runs[kTileKeys];
  int64_t run_count = 0;
  bool params_ready = true;  // false: the format's prepare_params must run before the kernels
  float kscale[kTileKeys], vscale[kTileKeys];  // int8: the runs' f16 scales as f32
  // int4: the key group's scales / zeros, and the value row's.
  const uint16_t *kpar_s[kTileKeys], *kpar_z[kTileKeys], *vpar_s[kTileKeys], *vpar_z[kTileKeys];
};

// A work item's query rows, [rows][dk] each: f32 (always), and the encodings a format's
// encode_queries writes.
struct QueryRows {
  float* f32;
  uint16_t* bf16;   // bf16 tiles: rounded to bf16
  int8_t* q8;       // int8 tiles: quantize_q8's codes
  float* q8_scale;  // and their scales, [rows]
};

// The f32 conversions of the generic path and of int8 scales (SIMD, chosen by the driver).
struct RowConverters {
  void (*bf16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
};

struct DecodeFormat {
  KvStorage storage;
  // The stored-byte micro-kernels (AVX-512, decode_micro.hpp's contracts) of a tile whose
  // rows and parameters are in `t`; null for f32, whose tiles the generic path reads.
  void (*scores)(const QueryRows& q, int64_t rows, int64_t dk, const TileRows& t, float* s, const Ahead& ahead);
  void (*pv)(const float* p, int64_t rows, const TileRows& t, int64_t dv, float* acc, const Ahead& ahead);
  // Prepares q's encoding for `scores` from q.f32; null: the kernels read q.f32.
  void (*encode_queries)(const QueryRows& q, int64_t rows, int64_t dk);
  // For the micro-kernels, once per tile after its runs are recorded: the per-key
  // parameter pointers of t.runs (int4: the key groups' and value rows' scales and zeros)
  // and their prefetch, or (int8) the prefetch alone, leaving t.params_ready false. k / v:
  // the shapes of the runs' regions. Null: the format has no parameters.
  void (*locate_params)(const detail::KvRegion& k, const detail::KvRegion& v, TileRows& t);
  // When the tile is computed, if !t.params_ready (int8: the runs' f16 scales converted to
  // f32; late, so that the prefetch of a tile resolved a step early has landed).
  void (*prepare_params)(const RowConverters& c, TileRows& t);
  // Generic path: slots [slot, slot + n) of a region as f32, out: [n][width]. Null: the
  // rows are f32 already and are read where they lie.
  void (*to_f32)(const RowConverters& c, const detail::KvRegion& region, int64_t slot, int64_t n, float* out);
  // The guard of hidden NaN / inf (decode.cpp), on tiles that are not full, over the rows
  // and parameters the kernels read (the f32 entry: the generic path's f32 rows). Lists in
  // bad the keys j < t.n whose V row holds a NaN or inf and returns their count: bf16 /
  // f16 codes with an all-ones exponent, int8 / int4 a non-finite scale or zero (codes are
  // finite; the codecs store a poisoned row or group as NaN parameters).
  int64_t (*nonfinite_values)(const TileRows& t, int64_t dv, int64_t* bad);
  // Key j's V row as f32, out: [dv].
  void (*value_to_f32)(const TileRows& t, int64_t j, int64_t dv, float* out);
};

extern const DecodeFormat kDecodeFormatTable[detail::kKvFormatCount];  // indexed by KvStorage
inline const DecodeFormat& decode_format(KvStorage s) { return kDecodeFormatTable[static_cast<size_t>(s)]; }
// The entry of the generic path's tiles: f32 rows, f32 queries.
inline const DecodeFormat& generic_format() { return decode_format(KvStorage::f32); }

// Makes the kernels read key j's V as zeros, in every format: its row at zero codes, its
// int8 scale 0, its int4 scales and zeros at zeros (then every term of key j is 0 * 0).
void zero_value(TileRows& t, int64_t j);

// The stored-byte micro-kernels serve a cache of this format at these widths (int4: and
// group G) on this CPU.
bool stored_kernels_fit(KvStorage s, int64_t dk, int64_t dv, int64_t G);

}  // namespace attnkit::decode
