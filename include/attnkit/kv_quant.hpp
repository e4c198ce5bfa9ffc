// attnkit/kv_quant.hpp — the codecs of quantized KV-cache storage: encode blocks of cached
// K and V into the int8 and int4 byte layouts that kv_size.hpp specifies (a contract: the
// cache allocates exactly those bytes), decode them into f32 tiles for the decode kernel,
// and the byte count of one head's block. Not for: cache management (which tokens are
// quantized, the f16 residual of the newest R tokens, paging) — kv_cache.hpp owns that.
//
// Layouts (one head; w = head width; all codes and f16 bit patterns little-endian arrays):
//   int8    codes [rows][w] int8, scales [rows] f16. x ~= scale * q, q in [-127, 127].
//   int4 K  one group = G consecutive tokens: codes [G][w/2] bytes (token-major), scales [w]
//           and zeros [w] f16 (one per channel). x ~= scale[c] * q + zero[c], q in [0, 15].
//   int4 V  one token: codes [w/2] bytes, scales and zeros [ceil(w/G)] f16, group j covering
//           channels [j*G, min((j+1)*G, w)) (the last group may be shorter).
//   Two int4 codes per byte: channel 2i in the low nibble of byte i, channel 2i+1 in the high.
//
// Rounding. Codes are q = round(x / scale) (int8) or round((x - zero) / scale) (int4),
// ties away from zero, computed in double so q is the exactly rounded integer. Scales are
// max|x| / 127 (int8) and (max - zero) / 15 (int4) rounded UP to f16, int4 zeros are min
// rounded DOWN to f16. Rounding outward keeps every value inside [-127, 127] * scale
// (int8) or [zero, zero + 15 * scale] (int4), so the clamp never fires on valid input and
// the bound below holds without a clamping term; with round-to-nearest the scale can land
// just below max / 127 (int4: the zero just above min), and for an int4 group whose offset
// is large against its range the clamped end then errs by up to ulp_f16(min) / 2, more
// than scale / 2. The price is at most one f16 ulp in the scale (2^-10 relative).
//
// Error bounds (scale, zero: the stored f16 values; x finite and in range):
//   int8:  |x - deq| <= scale / 2, exactly (q * scale is exact in f32). In terms of the
//          row: scale <= max|x| / 127 * (1 + 2^-10) for a normal f16 scale, and
//          scale <= max|x| / 127 + 2^-24 when it is subnormal (max|x| < 127 * 2^-14).
//   int4:  |x - deq| <= scale / 2 * (1 + 2^-40) + 2^-24 * |deq|. The second term is the one
//          f32 rounding of scale * q + zero (the product itself is exact); the 2^-40 covers
//          the double-precision choice of q when x - zero is not exact in double (x tiny
//          against zero). In terms of the group, with ulp_f16(min) <= 2^-10 |min| (or 2^-24):
//          scale <= ((max - min) + ulp_f16(min)) / 15 * (1 + 2^-10) (+ 2^-24 if subnormal).
//   A group with max == min decodes to exactly min when min is an f16 value (scale 0), and
//   within the bound otherwise; an all-zero int8 row has scale 0 and decodes to zeros.
//
// NaN / inf policy. A row (int8, int4 V group) or channel group (int4 K) holding a NaN or
// +-inf, or values beyond what f16 parameters can express (int8: max|x| > 127 * 65504;
// int4: min < -65504 or (max - zero) / 15 > 65504), stores the poison scale kKvQuantPoison
// (an f16 quiet NaN; int4 zero too) and zero codes, and decodes to NaN in every element of
// that row or group — loud, like an f16 cache that overflowed, never a silent wrong value.
// No NaN or inf ever reaches a float -> int conversion.
//
// Preconditions (checked, Error naming the argument): pointers non-null, w (a head's width)
// in [1, kMaxHeadDim], rows >= 0, out_stride >= w, and for int4: w even, G even and in
// [2, kMaxKvGroup].
#pragma once

#include <cstdint>

#include "attnkit/kv_size.hpp"

namespace attnkit {

constexpr int64_t kInt4DefaultGroup = 32;
// f16 quiet NaN: the scale (and int4 zero) of a poisoned row or group.
constexpr uint16_t kKvQuantPoison = 0x7E00;

// ---- int8, symmetric, per token per head ----

// x: [w] -> q: [w], *scale_f16: one f16.
void quantize_int8_row(const float* x, int64_t w, int8_t* q, uint16_t* scale_f16);
// q: [rows][w], scales: [rows] -> out: [rows][out_stride], first w columns written.
// The decode kernel calls this per tile (up to 64 token rows of one head): SIMD, dispatched
// at run time to the best Highway target (chosen once, on first use).
void dequantize_int8_rows(const int8_t* q, const uint16_t* scales, int64_t rows, int64_t w, float* out,
                          int64_t out_stride);

// ---- int4 keys, per channel over a group of G tokens ----

// rows: [G][row_stride] f32, first w columns read -> codes [G][w/2], scales [w], zeros [w].
void quantize_int4_key_group(const float* rows, int64_t row_stride, int64_t G, int64_t w, uint8_t* codes,
                             uint16_t* scales, uint16_t* zeros);
// codes: [rows][w/2] (any run of token rows of ONE group: all G of them, or a tile's share,
// by offsetting codes by t0 * w/2), scales / zeros: [w] of that group -> out [rows][out_stride].
void dequantize_int4_key_group(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros, int64_t rows,
                               int64_t w, float* out, int64_t out_stride);

// ---- int4 values, per token over groups of G channels ----

// ceil(w / G): the (scale, zero) pairs of one int4 value row.
int64_t int4_value_groups(int64_t w, int64_t G);
// x: [w] -> codes [w/2], scales / zeros [int4_value_groups(w, G)].
void quantize_int4_value_row(const float* x, int64_t w, int64_t G, uint8_t* codes, uint16_t* scales,
                             uint16_t* zeros);
// codes: [rows][w/2], scales / zeros: [rows][int4_value_groups(w, G)] -> out [rows][out_stride].
void dequantize_int4_value_rows(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros, int64_t rows,
                                int64_t w, int64_t G, float* out, int64_t out_stride);

// ---- plain-loop references: the oracle of the SIMD decoders (bitwise equal) ----

void dequantize_int8_rows_reference(const int8_t* q, const uint16_t* scales, int64_t rows, int64_t w, float* out,
                                    int64_t out_stride);
void dequantize_int4_key_group_reference(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros,
                                         int64_t rows, int64_t w, float* out, int64_t out_stride);
void dequantize_int4_value_rows_reference(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros,
                                          int64_t rows, int64_t w, int64_t G, float* out, int64_t out_stride);

// ---- bytes of one head's block ----

enum class KvStream : uint8_t { key, value };

struct KvBlockBytes {
  int64_t codes = 0;   // element storage: f32/bf16/f16 values or int8/int4 codes
  int64_t params = 0;  // f16 scales and zeros (kv_size.hpp's "overhead")
  int64_t total() const { return codes + params; }
};

// Exact bytes that `tokens` tokens of one head of width w occupy in `storage`, laid out as
// above. For int4 these are quantized tokens only (the f16 residual is a separate f16
// block): keys need tokens to be a multiple of G (whole groups). Summed over heads and the
// residual, this equals kv_layer_bytes() (tested). Throws Error naming the bad argument,
// or on int64 overflow.
KvBlockBytes kv_block_bytes(KvStorage storage, KvStream stream, int64_t tokens, int64_t w,
                            int64_t G = kInt4DefaultGroup);

}  // namespace attnkit
