// Internal: one table per KV storage format (f32, bf16, f16, int8, int4): its name, its
// sizes, its f16 parameters and its row codecs, in one place, so that the cache, its byte
// accounting and its readers ask the table instead of switching on KvStorage at every
// site (ggml's type-traits idea). The decode kernel's own per-format entries (stored-byte
// micro-kernels, query preparation) are kernels/decode_formats.hpp, built on this one.
// Not for: the codecs' arithmetic (kv_quant.hpp), nor where a head's rows lie in a block
// (kv_rows.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "attnkit/kv_quant.hpp"
#include "attnkit/kv_size.hpp"

namespace attnkit::detail {

struct KvRegion;  // kv_rows.hpp: one head's K or V rows (codes, parameters) in one block

struct KvFormat {
  KvStorage storage;
  std::string_view name;  // kv_storage_name()
  int64_t code_bits;      // one stored element: 32 (f32), 16 (bf16, f16), 8 (int8), 4 (int4)
  // f16 parameters (kv_quant.hpp's layouts), in bytes:
  int64_t row_param_bytes;    // per token row of a head (int8: its scale)
  int64_t group_param_bytes;  // per group (int4, KIVI: a scale and a zero; keys per channel
                              // over G tokens, values per token over G channels)
  bool residual;  // the newest tokens stay in a kKvResidualStorage block, quantized a whole
                  // key group at a time once older than `residual` (int4)

  // Row codecs of a region of this format. decode_row: row r into out [width] f32 (f32 /
  // bf16 / f16 convert exactly). encode_row: row r from x [width] f32; for a grouped format
  // values only, its keys go a group at a time through encode_key_group: rows [r0, r0 + G)
  // (r0 % G == 0) from x [G][width] (null for the other formats).
  void (*decode_row)(const KvRegion& region, int64_t r, float* out);
  void (*encode_row)(const KvRegion& region, int64_t r, const float* x);
  void (*encode_key_group)(const KvRegion& region, int64_t r0, const float* x);
  // The parameters of rows [0, rows) from one region to another of more slots (a growing
  // block; whole key groups); null for a format without parameters.
  void (*copy_params)(const KvRegion& from, const KvRegion& to, int64_t rows);

  constexpr bool quantized() const { return row_param_bytes > 0 || group_param_bytes > 0; }
  constexpr bool grouped() const { return group_param_bytes > 0; }
  // Two codes per byte: widths, and the value groups of G channels, must be even.
  constexpr bool packed() const { return code_bits < 8; }
  constexpr int64_t row_bytes(int64_t w) const { return w * code_bits / 8; }
  // Bytes per element of a float format (0 for a quantized one).
  constexpr int64_t value_bytes() const { return quantized() ? 0 : code_bits / 8; }
  // Parameter bytes that one token row of a head of width w carries alone: int8 its scale,
  // int4 values a scale and zero per group of G channels.
  constexpr int64_t row_params(KvStream stream, int64_t w, int64_t G) const {
    return row_param_bytes + (grouped() && stream == KvStream::value ? group_param_bytes * ((w + G - 1) / G) : 0);
  }
  // Parameter bytes that G consecutive key rows of a head of width w share (int4 keys: a
  // scale and zero per channel); 0 for a format without key groups.
  constexpr int64_t key_group_params(int64_t w) const { return group_param_bytes * w; }
};

// The format of the residual block of a format with `residual`.
inline constexpr KvStorage kKvResidualStorage = KvStorage::f16;

inline constexpr size_t kKvFormatCount = 5;
extern const KvFormat kKvFormatTable[kKvFormatCount];  // indexed by KvStorage

inline const KvFormat& kv_format(KvStorage s) { return kKvFormatTable[static_cast<size_t>(s)]; }
// Every format, in KvStorage order.
inline std::span<const KvFormat> kv_formats() { return kKvFormatTable; }

}  // namespace attnkit::detail
