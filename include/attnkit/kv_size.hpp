// attnkit/kv_size.hpp — byte-exact KV-cache memory accounting: how many bytes a cache of
// a given model shape, context, batch and storage format holds, with the K / V /
// quantization-overhead breakdown, published model presets, and an MHA / GQA / MQA / MLA /
// SWA comparison. Not for: allocating or filling a cache (kv_cache.hpp will, and must
// allocate exactly the bytes stated here), nor FLOP counts (patterns own those).
//
// Streams. A layer caches a K stream of hk heads of width wk and a V stream of hv heads of
// width wv, per token per sequence:
//   MHA / GQA / MQA: hk = hv = kv_heads, wk = head_dim, wv = v_head_dim (default head_dim).
//   MLA:             one shared "head": hk = 1, wk = mla_latent + mla_rope; no V (hv = 0),
//                    because V (and K's non-RoPE part) are re-derived from the latent.
// Tokens held per sequence: T = context, or min(context, window + sinks) with a rolling
// window (sinks are StreamingLLM-style kept first tokens; they need a window).
//
// Bytes of one layer for one sequence holding T tokens, per storage format:
//   f32 / bf16 / f16 (e = 4 / 2 / 2 bytes):
//     K = T*hk*wk*e,  V = T*hv*wv*e,  overhead = 0.
//   int8 — symmetric, x ~= scale * q with q in [-127, 127], scale = max|x| / 127; one f16
//   scale per token per head, separately for K and for V:
//     K = T*hk*wk,  V = T*hv*wv,  overhead = T*(hk + hv)*2.
//   int4 — KIVI-style asymmetric, x ~= scale * q + zero with q in [0, 15], scale =
//   (max - min) / 15, zero = min, both f16; two codes per byte (even channel in the low
//   nibble), so wk, wv and the group size G (default 32) must be even; f16 residual R
//   (default 128). The newest tokens stay f16; the oldest tokens are quantized in whole
//   groups of G:
//     Q = G * floor(max(T - R, 0) / G)   quantized tokens (at least R tokens stay f16)
//     F = T - Q                          f16 residual tokens, in [min(T, R), R + G - 1]
//   Keys are quantized per channel: each group of G tokens has one scale and one zero per
//   channel. Values are quantized per token: each token's head vector is split into
//   ceil(wv / G) groups of G channels (the last may be shorter), one scale + zero each.
//     K        = hk * (Q*wk/2 + F*wk*2)
//     V        = hv * (Q*wv/2 + F*wv*2)
//     overhead = hk * (Q/G)*wk*4  +  hv * Q*ceil(wv/G)*4
//   For MLA the single latent stream is accounted as K (per-channel groups).
// Totals multiply one layer's bytes by layers and batch. All arithmetic is int64 and
// overflow-checked; sizes are refused with an Error naming the argument.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attnkit {

// Storage format of cached K/V elements. kv_cache.hpp reuses this enum (one concept, one type).
enum class KvStorage : uint8_t { f32, bf16, f16, int8, int4 };

std::string_view kv_storage_name(KvStorage s);
KvStorage parse_kv_storage(std::string_view name);  // "f32", "bf16", "f16", "int8", "int4"; throws Error

// Refused as absurd rather than computed: no real model is near these.
constexpr int64_t kMaxKvLayers = int64_t{1} << 16;
constexpr int64_t kMaxKvHeads = int64_t{1} << 20;
constexpr int64_t kMaxKvBatch = int64_t{1} << 30;
constexpr int64_t kMaxKvGroup = int64_t{1} << 20;

struct KvConfig {
  std::string name;             // informational: a preset's name or "custom"
  int64_t layers = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;         // q_heads % kv_heads == 0; kept for MLA configs (comparison rows)
  int64_t head_dim = 0;         // K head dim (d_qk)
  int64_t v_head_dim = 0;       // 0 means head_dim (DeepSeek-V2's MHA form has 192 / 128)
  int64_t context = 0;          // tokens per sequence
  int64_t batch = 1;            // sequences
  KvStorage storage = KvStorage::f16;
  std::optional<int64_t> window;  // rolling buffer of this many tokens (sliding window)
  int64_t sinks = 0;            // kept first tokens on top of the window
  int64_t mla_latent = 0;       // > 0 selects MLA: latent (kv_lora_rank) dims
  int64_t mla_rope = 0;         // MLA decoupled RoPE key dims (qk_rope_head_dim)
  int64_t group = 32;           // int4 group size G
  int64_t residual = 128;       // int4 f16 residual R (tokens)

  // Throws Error naming the first field that breaks a constraint (see the limits above,
  // head dims and mla_latent + mla_rope <= kMaxHeadDim, context <= kMaxSeqLen, int4 widths even).
  void validate() const;
  bool is_mla() const { return mla_latent > 0; }
  int64_t effective_v_head_dim() const { return v_head_dim > 0 ? v_head_dim : head_dim; }
  int64_t tokens_held() const;  // T above, per sequence
};

// Bytes split by what they hold; `overhead` is int8/int4 scales and zero-points.
struct KvBytes {
  int64_t k = 0;
  int64_t v = 0;
  int64_t overhead = 0;
  int64_t total() const { return k + v + overhead; }  // kv_layer_bytes / kv_size check it fits
};

struct KvSize {
  int64_t tokens_held = 0;       // per sequence
  int64_t quantized_tokens = 0;  // int4: Q above; int8: tokens_held; otherwise 0
  int64_t residual_tokens = 0;   // int4: F above; otherwise 0
  KvBytes per_layer;             // one layer, one sequence
  KvBytes all;                   // all layers, all sequences
  // Steady-state cost of one more cached token in one layer. Exact for f32/bf16/f16/int8;
  // for int4 the cost of a quantized token with its group's scales amortised over G
  // tokens (may be fractional), which excludes the fixed f16 residual.
  double bytes_per_token_per_layer = 0;
};

// One layer, one sequence, `tokens` tokens held (the formulas above). Validates cfg.
KvBytes kv_layer_bytes(const KvConfig& cfg, int64_t tokens);
double kv_bytes_per_token_per_layer(const KvConfig& cfg);
KvSize kv_size(const KvConfig& cfg);
inline int64_t kv_total_bytes(const KvConfig& cfg) { return kv_size(cfg).all.total(); }

// The same model and context under other cache layouts: MHA, GQA with the config's kv
// heads and with 8 and 4 kv heads where they divide q_heads, MQA, MLA (the config's latent
// or 512 + 64), SWA (the config's heads with its window or 4096). Labels name kv heads,
// not group size: "GQA kv=4 (g=8)" has 4 KV heads shared by groups of 8 query heads.
struct KvCompareRow {
  std::string label;
  KvConfig config;
  KvSize size;
  double bytes_per_token = 0;  // all layers, one sequence (steady state, as above)
  double ratio_vs_mha = 0;     // total bytes / the MHA row's total bytes
  bool matches_input = false;  // this row is the layout the input config describes
};
std::vector<KvCompareRow> kv_compare(const KvConfig& cfg);

// Published configs (see kv_size.cpp for the source of each).
struct KvPreset {
  KvConfig config;
  std::string_view source;
};
std::span<const KvPreset> kv_presets();
// Copy of the named preset; throws Error listing the available names when unknown.
KvConfig kv_preset(std::string_view name);

// "1023 B", "1.50 KiB", "2.00 GiB": binary units, two decimals.
std::string format_bytes(double bytes);

}  // namespace attnkit
