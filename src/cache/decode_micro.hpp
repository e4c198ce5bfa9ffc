// Internal interface of the decode kernel's storage-specific tile micro-kernels: the two
// products of one KV tile, S = Q K^T and O += P V, computed straight from the cache's
// stored bytes (bf16 values) instead of
// from a dequantised f32 tile. The decode driver (decode.cpp) resolves paging and ring
// indirection once per tile into per-key row pointers and calls these; everything else
// (masking, online softmax, split-KV merge) is shared by every storage format.
//
// One tile: n <= kTileKeys keys of ONE KV head, against `rows` query rows (the g query
// heads sharing that KV head times the Nq new tokens, packed: every row reuses each K / V
// row load). Key j's stored row starts at krows[j] / vrows[j] (any alignment).
//   s: [rows][kTileKeys] f32 (row stride kTileKeys); only j < n is written.
//   p: [rows][kTileKeys] f32 probabilities (unnormalised, in [0, 1]); only j < n is read.
//   acc: [rows][dv] f32, accumulated into (+=).
// No softmax scale is applied here (the driver scales s).
//
// Two implementations per product: a plain-loop reference (any CPU, any width; the oracle
// of the tests) and an AVX-512 BF16 one (vdpbf16ps) used when avx512_available() and
// avx512_supports(...) hold. Both round the same operands (bf16 queries, given; bf16
// probabilities), so they agree to f32 summation-order error. Only bf16 storage has a
// stored-byte kernel so far; int8 and int4 tiles are dequantised for the generic path.
#pragma once

#include <cstdint>

namespace attnkit::decode {

constexpr int64_t kTileKeys = 64;

// ---- bf16 storage: K and V rows are dk / dv bf16 values ----

// s[r][j] = sum_c q[r][c] * k_j[c]; q: [rows][dk] bf16 (the caller rounds the queries).
void scores_bf16_ref(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n,
                     float* s);
// acc[r][c] += sum_j bf16(p[r][j]) * v_j[c]  (p rounded to bf16, as FlashAttention does).
void pv_bf16_ref(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc);

// ---- AVX-512 versions: same contracts ----

// The CPU has avx512f, avx512bw and avx512bf16 (checked once).
bool avx512_available();
// The widths these kernels handle: dk and dv multiples of 32, at most kMaxHeadDim.
bool avx512_supports(int64_t dk, int64_t dv);

void scores_bf16_avx512(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n,
                        float* s);
void pv_bf16_avx512(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc);

}  // namespace attnkit::decode
