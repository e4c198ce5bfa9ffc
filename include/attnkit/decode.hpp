// attnkit/decode.hpp — attention of new tokens against a KV cache: decoding (Nq = 1),
// speculative verification and chunked prefill (Nq > 1), for every cache layout and
// storage format of kv_cache.hpp. Not for: prefill without a cache (attention.hpp).
//
// Semantics. For a sequence holding n tokens, the Nq queries are those of its newest Nq
// tokens (append() and store() them first): query t sits at logical index qi = n - Nq + t
// and sees key i when
//     i <= qi                                   (bottom-right causal)
//     and (window == 0 or qi - i < window or i < sinks).
// `window` counts the keys a query sees including its own (Mistral's sliding_window, the
// rolling cache's capacity): decode window W is the pattern window:W-1,0 of attend(), and
// with sinks S the pattern window:W-1,0,sinks=S; decode equals attend() with that pattern
// on gather()'s K / V. A rolling cache defaults window and sinks to its own. Scores are
// mods(scale * q.k) with the Variant of variant.hpp (scale NaN: 1/sqrt(head_dim); softcap;
// ALiBi over logical indices, |qi - i|), then softmax.
// Queries are given before RoPE when the cache has a RoPE config: they are rotated by the
// position their token's key uses (absolute, or the logical index with in_cache).
//
// Kernel. Work items are (sequence, KV head, chunk of keys); the g = Hq / Hkv query heads of
// a KV head and the Nq tokens form the rows of one packed query tile, so each K / V tile
// is read once per KV head (packed GQA). When there are fewer than 32 items per call,
// each (sequence, KV head) is split along its keys (split-KV) and the partial results are
// merged by their log-sum-exp; the split depends only on the shapes, so the result is the
// same for any thread count. Tiles of 128 keys are read through a tile reader that resolves
// the block table / ring once per run of consecutive slots, then either
//   - computes straight from the stored bytes (AVX-512: bf16 with vdpbf16ps, int8 and
//     int4 codes with vpdpwssd, their scales folded into the queries and probabilities;
//     decode_micro.hpp states the roundings), or
//   - dequantises into an f32 scratch tile for the portable Highway kernels (f32 and f16
//     storage, CPUs without AVX-512 BF16 / VNNI, odd widths, in_cache RoPE).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "attnkit/kv_cache.hpp"
#include "attnkit/tensor.hpp"
#include "attnkit/variant.hpp"

namespace attnkit {

enum class DecodeKernel : uint8_t {
  automatic,  // stored-byte kernels where the CPU and widths allow, else generic
  generic,    // always dequantise into f32 tiles (the portable path)
};
std::string_view decode_kernel_name(DecodeKernel k);
DecodeKernel parse_decode_kernel(std::string_view name);  // "auto", "generic"; throws Error

// The variant's fields (scale, softcap, alibi_slopes: one per query head) plus the mask.
struct DecodeOptions : Variant {
  int64_t window = 0;   // keys seen including the query's own; 0: no window (rolling: the cache's)
  int64_t sinks = 0;    // with a window: keys [0, sinks) stay visible (rolling: the cache's)
  DecodeKernel kernel = DecodeKernel::automatic;
};

// q: [B, Hq, Nq, head_dim] (any dtype; Hq a multiple of kv_heads), seqs: B sequence ids,
// each holding at least Nq tokens with every layer stored. out: [B, Hq, Nq, v_width]
// (any float dtype); lse: [B, Hq, Nq] f32 (natural log; -inf for a row that sees nothing),
// or a default-constructed view (rank 0) when not wanted, as in attend_into(). Throws
// Error naming the argument on any mismatch.
void decode_attention(const KvCache& cache, int64_t layer, std::span<const int64_t> seqs, const TensorView& q,
                      const MutTensorView& out, const DecodeOptions& opts = {}, const MutTensorView& lse = {});

// The oracle: the same semantics computed in double over gather()'s dequantised K / V.
void decode_reference(const KvCache& cache, int64_t layer, std::span<const int64_t> seqs, const TensorView& q,
                      const MutTensorView& out, const DecodeOptions& opts = {}, const MutTensorView& lse = {});

// Bytes of cached K / V (codes and scales) one decode call reads: what its GB/s counts.
int64_t decode_bytes_read(const KvCache& cache, std::span<const int64_t> seqs, int64_t nq,
                          const DecodeOptions& opts = {});

}  // namespace attnkit
