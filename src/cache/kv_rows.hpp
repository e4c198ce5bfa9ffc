// Internal: where one head's rows live inside a KV block, and its rows' encoders and
// decoders through the format's table (kv_format.hpp), shared by KvCache::store / gather
// and the decode kernel's generic tile reader.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attnkit/kv_cache.hpp"
#include "cache/kv_format.hpp"

namespace attnkit::detail {

// One head's K or V region of one block: row r's codes at codes + r * row_bytes.
// Parameters: int8: f16 scale [r] at params; int4 keys: per group g, f16 scales [w] then
// zeros [w] at params + g * 4w; int4 values: f16 scales [slots][ng], then zeros [slots][ng].
struct KvRegion {
  KvStorage storage;
  bool key;
  std::byte* codes;
  std::byte* params;
  int64_t row_bytes, width, slots, group;
};

// Where head `head`'s K (key) or V rows of `layer` lie in any block of a layout: the
// region's shape and its codes' and parameters' places in the layout. Computed once, then
// placed in each block a reader visits.
struct KvRegionPlace {
  KvRegion shape;  // codes / params null
  int64_t codes_offset, codes_bytes, params_offset, params_bytes;
};
KvRegionPlace kv_region_place(const KvBlockLayout& layout, int64_t layer, int64_t head, bool key);

inline KvRegion kv_region_at(const KvRegionPlace& p, const KvBlockStore& store, KvBlockId b) {
  KvRegion r = p.shape;
  // Regions are written through const stores only by KvCache::store, which owns the store.
  r.codes = const_cast<std::byte*>(store.region(b, p.codes_offset, p.codes_bytes));
  r.params = const_cast<std::byte*>(store.region(b, p.params_offset, p.params_bytes));
  return r;
}

// The region of head `head`'s K (key) or V rows of `layer` in block b of the store.
inline KvRegion kv_region(const KvBlockLayout& layout, const KvBlockStore& store, KvBlockId b, int64_t layer,
                          int64_t head, bool key) {
  return kv_region_at(kv_region_place(layout, layer, head, key), store, b);
}

// Dequantises row r into out: [width] f32 (f32 / bf16 / f16 convert exactly).
inline void decode_kv_row(const KvRegion& region, int64_t r, float* out) {
  kv_format(region.storage).decode_row(region, r, out);
}
// Encodes row r from x: [width] f32 (a grouped format's keys go by groups, below).
inline void encode_kv_row(const KvRegion& region, int64_t r, const float* x) {
  kv_format(region.storage).encode_row(region, r, x);
}
// Grouped keys (int4): quantizes rows [r0, r0 + G) (one whole group, r0 % G == 0) from
// x: [G][width].
inline void encode_kv_key_group(const KvRegion& region, int64_t r0, const float* x) {
  kv_format(region.storage).encode_key_group(region, r0, x);
}
// Copies rows [0, rows) (codes and parameters) from one region to another of as many or
// more slots, of the same format and width (a growing block).
void copy_kv_rows(const KvRegion& from, const KvRegion& to, int64_t rows);

}  // namespace attnkit::detail
