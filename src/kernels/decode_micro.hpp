// Internal interface of the decode kernel's storage-specific tile micro-kernels: the two
// products of one KV tile, S = Q K^T and O += P V, computed straight from the cache's
// stored bytes (bf16 or f16 values, or int8 / int4 codes with their scales folded in)
// instead of from a dequantised f32 tile. The decode driver (decode.cpp) resolves paging
// and ring indirection once per tile into per-key row pointers and calls these;
// everything else (masking, online softmax, split-KV merge) is shared by every format.
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
// of the tests) and an AVX-512 one (avx512f/bw/vnni/bf16: vdpbf16ps for bf16, vpdpbusd for
// int8 keys and for int4, vpdpwssd for int8 values, vcvtph2ps and f32 FMAs for f16) used
// when avx512_available() and avx512_supports(...) hold. The AVX-512 kernels may round
// operands as documented per function; the reference computes with the same rounded
// operands so the two agree to f32 summation-order error.
#pragma once

#include <algorithm>
#include <cstdint>

namespace attnkit::decode {

// 128 rather than 64: the per-tile work (weight rounding, the softmax's reductions, the
// reader's lookups) is spread over twice the keys, 5-8 % faster int4 / int8 decode
// measured; 256 measured no faster. The int8 pv's int32 sums stay exact: 128 * 32767 * 127
// < 2^31.
constexpr int64_t kTileKeys = 128;

// ---- operand preparation (done once per call / per tile, not per key) ----

// Largest |q16| allowed for keys of width dk with codes of magnitude <= code_max, so that a
// full row's int32 dot product cannot overflow: min(32767, floor((2^31 - 1) / (code_max * dk))).
int32_t q16_limit(int64_t dk, int32_t code_max);
// q: [rows][dk] f32 -> q16: [rows][dk] int16, qs: [rows] f32 with q ~= qs[r] * q16[r][c],
// qs[r] = max_c |q[r][c]| / limit (0 for an all-zero row), q16 = round-to-nearest.
void quantize_q16(const float* q, int64_t rows, int64_t dk, int32_t limit, int16_t* q16, float* qs);

// ---- bf16 storage: K and V rows are dk / dv bf16 values ----

// s[r][j] = sum_c q[r][c] * k_j[c]; q: [rows][dk] bf16 (the caller rounds the queries).
void scores_bf16_ref(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n,
                     float* s);
// acc[r][c] += sum_j bf16(p[r][j]) * v_j[c]  (p rounded to bf16, as FlashAttention does).
void pv_bf16_ref(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc);

// ---- f16 storage: K and V rows are dk / dv IEEE half values ----

// s[r][j] = sum_c q[r][c] * k_j[c]; q: [rows][dk] f32. No operand is rounded: every f16
// value is exact in f32 (llama.cpp's default cache type, read as stored).
void scores_f16_ref(const float* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n, float* s);
// acc[r][c] += sum_j p[r][j] * v_j[c] (p as it is, f32).
void pv_f16_ref(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc);

// ---- int8 storage: k_j = kscale[j] * codes_j, codes in [-127, 127] ----

// q: [rows][dk] f32 -> q8: [rows][dk] int8, qs: [rows] f32: quantize_q16 with limit 127.
// Queries are rounded to int8, not int16, for the keys' dot products: a byte times a byte
// is what vpdpbusd multiplies 64 of at once (twice vpdpwssd's 32), with no widening of the
// key codes; it adds an error of the size the int8 keys already carry (as llama.cpp's q8_0
// activations do).
void quantize_q8(const float* q, int64_t rows, int64_t dk, int8_t* q8, float* qs);
// s[r][j] = qs[r] * kscale[j] * sum_c q8[r][c] * kcode_j[c] (exact integer dot product).
void scores_int8_ref(const int8_t* q8, const float* qs, int64_t rows, int64_t dk, const int8_t* const* krows,
                     const float* kscale, int64_t n, float* s);
// acc[r][c] += sum_j w[r][j] * vcode_j[c], where w[r][j] = p[r][j] * vscale[j] is rounded
// to int16 per (row, tile): w ~= ws[r] * w16[r][j], ws[r] = max_j w[r][j] / 32767.
void pv_int8_ref(const float* p, int64_t rows, const int8_t* const* vrows, const float* vscale, int64_t n,
                 int64_t dv, float* acc);

// ---- int4 storage (kv_quant.hpp layouts) ----

// Keys: k_j[c] = kscale_j[c] * code_j[c] + kzero_j[c], code in [0, 15], two codes per byte
// (channel 2i low nibble); kscale_j / kzero_j point at the dk f16 parameters of the group
// key j belongs to (consecutive keys usually share them).
// s[r][j] = sum_c q[r][c] * k_j[c], computed as qs sum_c q8[c] code_j[c] + sum_c q[r][c] kzero_j[c]
// with q'[c] = q[r][c] * kscale_j[c] rounded to int8 per (row, group): q' ~= qs * q8,
// qs = max_c |q'[c]| / 127, q8 round-to-nearest in [-127, 127] (quantize_q16's rounding).
void scores_int4_ref(const float* q, int64_t rows, int64_t dk, const uint8_t* const* krows,
                     const uint16_t* const* kscale, const uint16_t* const* kzero, int64_t n, float* s);
// Values: v_j[c] = vscale_j[c / G] * code_j[c] + vzero_j[c / G]; vscale_j / vzero_j point at
// the ceil(dv / G) f16 parameters of key j.
// acc[r][c] += sum_j p[r][j] * v_j[c], computed as ws * sum_j w8 code + sum_j p[r][j] vzero_j,
// with w[r][j][g] = p[r][j] * vscale_j[g] rounded to uint8 per (row, tile, group g):
// w ~= ws[r][g] * w8, ws = max_j w / 255, w8 = round-to-nearest in [0, 255]. The weights are
// >= 0: p >= 0 and the quantizer's scales are >= 0 (a negative weight would count as 0).
void pv_int4_ref(const float* p, int64_t rows, const uint8_t* const* vrows, const uint16_t* const* vscale,
                 const uint16_t* const* vzero, int64_t G, int64_t n, int64_t dv, float* acc);

// ---- AVX-512 versions: same contracts ----

// The K (for scores) or V (for pv) rows of the tile that follows: the kernel prefetches
// them into L2 while it computes this one, so that DRAM latency hides behind the math.
struct Ahead {
  const void* const* rows = nullptr;
  int64_t n = 0;
};

// The schedule of those prefetches: n rows handed out in proportion to `work` units, so
// that after d units rows [0, floor(d * n / work)) are out (all n once d reaches work).
// One division per step: a credit loop (a subtraction per row) measured 8 % slower int4
// tiles hot in cache.
class EvenShare {
 public:
  EvenShare(int64_t n, int64_t work) : n_(n), work_(work) {}
  int64_t next() const { return next_; }
  // Adds `units` of work done; returns the new end of the rows handed out.
  int64_t advance(int64_t units) {
    done_ = std::min(done_ + units, work_);
    next_ = work_ > 0 ? done_ * n_ / work_ : n_;
    return next_;
  }

 private:
  int64_t n_, work_;
  int64_t done_ = 0, next_ = 0;
};

// The CPU has avx512f, avx512bw, avx512vnni and avx512bf16 (checked once).
bool avx512_available();
// The widths these kernels handle: dk and dv multiples of 32, dk, dv <= 1024 (kMaxHeadDim),
// and for int4 values G a multiple of 16.
bool avx512_supports(int64_t dk, int64_t dv, int64_t G);

// out[x] = base + x * stride bytes for x < n: a run's per-key row or parameter pointers,
// eight to a store (the driver writes up to six of them per key and tile; one at a time,
// they were 7 % of an int4 decode step). stride 0 repeats base (a key group's parameters).
void fill_rows_avx512(const void* base, int64_t stride, int64_t n, const void** out);

void scores_bf16_avx512(const uint16_t* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n,
                        float* s, const Ahead& ahead = {});
void pv_bf16_avx512(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc,
                    const Ahead& ahead = {});
void scores_f16_avx512(const float* q, int64_t rows, int64_t dk, const uint16_t* const* krows, int64_t n, float* s,
                       const Ahead& ahead = {});
void pv_f16_avx512(const float* p, int64_t rows, const uint16_t* const* vrows, int64_t n, int64_t dv, float* acc,
                   const Ahead& ahead = {});
void scores_int8_avx512(const int8_t* q8, const float* qs, int64_t rows, int64_t dk, const int8_t* const* krows,
                        const float* kscale, int64_t n, float* s, const Ahead& ahead = {});
void pv_int8_avx512(const float* p, int64_t rows, const int8_t* const* vrows, const float* vscale, int64_t n,
                    int64_t dv, float* acc, const Ahead& ahead = {});
void scores_int4_avx512(const float* q, int64_t rows, int64_t dk, const uint8_t* const* krows,
                        const uint16_t* const* kscale, const uint16_t* const* kzero, int64_t n, float* s,
                        const Ahead& ahead = {});
void pv_int4_avx512(const float* p, int64_t rows, const uint8_t* const* vrows, const uint16_t* const* vscale,
                    const uint16_t* const* vzero, int64_t G, int64_t n, int64_t dv, float* acc,
                    const Ahead& ahead = {});

}  // namespace attnkit::decode
