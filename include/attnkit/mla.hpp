// attnkit/mla.hpp — multi-head latent attention (MLA, DeepSeek-V2, arXiv:2405.04434): its
// two equivalent forms (naive and absorbed), the latent KV cache, the absorbed decode kernel
// that reads each cached latent row once for all heads, the backward by composition, and the
// plain f64 references. Not for: the output projection W_O (an ordinary linear layer after
// MLA: out is per-head [N, H, d_v], reshape to [N, H * d_v] and multiply), norms, YaRN
// RoPE scaling, or MoE; nor paged / rolling latent caches (contiguous only).
//
// The definition, for one sequence of tokens x_j (rows of x, d_model wide), per head h:
//   q_h = x W_Q[:, h, :] = [q_nope_h (d_nope) ; q_r_h (d_r)],  q_r_h <- RoPE(q_r_h, pos_i)
//   c_j = x_j W_DKV                    (d_c: the latent, kv_lora_rank)
//   k_r_j = RoPE(x_j W_KR, pos_j)      (d_r: the decoupled RoPE key, ONE shared by all heads)
//   k_h,j = [W_UK[h] c_j ; k_r_j]      (d_nope + d_r),   v_h,j = W_UV[h] c_j   (d_v)
//   out_h,i = sum_j softmax_j(scale q_h,i . k_h,j) v_h,j over the keys the pattern allows,
//   scale = 1 / sqrt(d_nope + d_r).
// Queries come straight from x (DeepSeek-V2's query low-rank W_DQ / W_UQ is a product of two
// matrices: pass their product as W_Q), and there is no norm on c (DeepSeek-V2's
// kv_a_layernorm would sit between W_DKV and the cache).
//
// The two forms compute the same function:
//   naive     up-project K and V per head, then attention with d_qk = d_nope + d_r != d_v
//             (attend_into, the flash kernel). Cost per token pair: H (d_nope + d_r + d_v).
//   absorbed  fold W_UK into the query and W_UV after the output, since
//             q_nope . (W_UK c) = (W_UK^T q_nope) . c  and  sum_j p_j W_UV c_j = W_UV sum_j p_j c_j:
//               q~_h = [W_UK[h]^T q_nope_h ; q_r_h]       (d_c + d_r)
//               o~_h = attention over K = [c_j ; k_r_j] (d_c + d_r), V = c_j (d_c)  — MQA,
//                      one KV head for every query head, with the same scale
//               out_h = W_UV[h] o~_h
//             V is a view of K's first d_c values (same memory, row stride d_c + d_r), so
//             the cache holds d_c + d_r values per token and a decode step reads one latent
//             row per token for all H heads. Cost per token pair: H (2 d_c + d_r).
//
// Layouts (x W convention, as DeepSeek's checkpoints after transposing their nn.Linear
// weights: kv_b_proj's [H * (d_nope + d_v), d_c] is W_UK and W_UV stacked per head):
//   x [B, N, d_model], out [B, N, H, d_v], positions [B, N] (null: 0 .. N-1 in every row)
//   W_Q [d_model, H, d_nope + d_r], W_DKV [d_model, d_c], W_KR [d_model, d_r],
//   W_UK [H, d_nope, d_c], W_UV [H, d_v, d_c].
// Every view may be f32, bf16, f16 or f64 with any strides; the fast path computes in f32
// (cblas_sgemm for the projections, the flash kernel for attention), the references in f64.
// RoPE is rope.hpp's, over the d_r channels (rotary_dim 0 = all of them). The default style
// is interleaved: DeepSeek-V2's modeling code de-interleaves pairs (2i, 2i + 1) before its
// rotate_half, which gives interleaved RoPE's scores.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "attnkit/kv_cache.hpp"  // kKvInitialTokens, KvStorage
#include "attnkit/kv_size.hpp"
#include "attnkit/pattern.hpp"
#include "attnkit/reference.hpp"
#include "attnkit/rope.hpp"
#include "attnkit/tensor.hpp"

namespace attnkit {

enum class MlaForm : uint8_t { naive, absorbed };
std::string_view mla_form_name(MlaForm f);         // "naive", "absorbed"
MlaForm parse_mla_form(std::string_view name);     // throws Error

// Most heads accepted (DeepSeek-V2 has 128; the bound keeps H * widths far from overflow).
constexpr int64_t kMaxMlaHeads = int64_t{1} << 12;
constexpr int64_t kMaxMlaModel = int64_t{1} << 16;  // d_model

// The sizes of one MLA layer; the defaults are DeepSeek-V2's (config.json: num_heads 128,
// hidden_size 5120, kv_lora_rank 512, qk_rope_head_dim 64, qk_nope_head_dim 128,
// v_head_dim 128, rope_theta 10000).
struct MlaConfig {
  int64_t heads = 128;
  int64_t d_model = 5120;
  int64_t d_c = 512;    // latent (kv_lora_rank)
  int64_t d_r = 64;     // decoupled RoPE dims of q and k (qk_rope_head_dim), even
  int64_t d_nope = 128; // per-head query / key dims without RoPE (qk_nope_head_dim)
  int64_t d_v = 128;    // per-head value dims (v_head_dim)
  RopeConfig rope{RopeStyle::interleaved, 0, 10000.0};
  double scale = NAN;   // NaN: 1 / sqrt(d_nope + d_r); else finite and > 0

  // Throws Error naming the field: heads in [1, kMaxMlaHeads], d_model in [1, kMaxMlaModel],
  // d_c, d_nope, d_v >= 1, d_r >= 2 and even (RoPE turns pairs), d_c + d_r and d_nope + d_r
  // <= kMaxHeadDim, rope valid for d_r, scale NaN or finite > 0.
  void validate() const;
  int64_t d_qk() const { return d_nope + d_r; }         // naive form's query / key width
  int64_t latent_width() const { return d_c + d_r; }    // absorbed form's: one cache row
  double softmax_scale() const { return std::isnan(scale) ? 1.0 / std::sqrt(double(d_qk())) : scale; }
};

// The projections (layouts above). Views only: the caller owns the memory.
struct MlaWeights {
  TensorView w_q;    // [d_model, H, d_nope + d_r]
  TensorView w_dkv;  // [d_model, d_c]
  TensorView w_kr;   // [d_model, d_r]
  TensorView w_uk;   // [H, d_nope, d_c]
  TensorView w_uv;   // [H, d_v, d_c]
  // Throws Error naming the weight and its expected shape for cfg.
  void validate(const MlaConfig& cfg) const;
};

struct MlaOptions {
  MlaForm form = MlaForm::absorbed;
  Pattern pattern;  // over the N tokens of a row of x, as attend()'s (none, causal, window...)
};

// out = MLA(x): x [B, N, d_model] (B >= 1, N >= 0), positions [B, N] int64 (null: 0 .. N-1
// in every row), out [B, N, H, d_v] (any float dtype and strides; computed in f32 and stored
// once). The absorbed form pays in decode, not here: per token pair it does H (2 d_c + d_r)
// attention FLOPs against the naive form's H (d_nope + d_r + d_v). Throws Error naming the
// argument.
void mla_forward(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, const int64_t* positions,
                 const MlaOptions& opts, const MutTensorView& out);

// Gradients of sum(out * d_out); f32 (f64 from mla_backward_reference), shaped like the
// inputs: dx [B, N, d_model], dw_q [d_model, H, d_nope + d_r], dw_dkv [d_model, d_c],
// dw_kr [d_model, d_r], dw_uk [H, d_nope, d_c], dw_uv [H, d_v, d_c].
struct MlaGradients {
  Tensor dx, dw_q, dw_dkv, dw_kr, dw_uk, dw_uv;
};

// The backward by composition: it recomputes the chosen form's forward (projections, RoPE,
// flash attention with its LSE), runs attend_backward_into() on the attention and the
// transposed projections (sgemm) and the inverse rotation (RoPE by -theta) on the rest.
// In the absorbed form the latent's gradient is the sum of dK's first d_c columns and dV
// (V is a view of K). d_out: [B, N, H, d_v].
MlaGradients mla_backward(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, const int64_t* positions,
                          const MlaOptions& opts, const TensorView& d_out);

// ---- The oracles (src/ref/mla_ref.cpp): the definition above in plain loops (naive form:
// K and V up-projected per head), softmax over pattern.allow(). -----------------------------
struct MlaRefOptions {
  // f64: accumulate in double (the oracle). input: the plain implementation in the input
  // precision of the tolerance rule: f32 accumulation, and q, c, k_r, K, V, S, P, out
  // rounded to x's dtype.
  RefPrecision precision = RefPrecision::f64;
  // Rounds the latent c and the rotated k_r to this type before they are used, as a cache
  // stored in it would (bf16 for a bf16 MlaCache); f64 keeps them exact.
  DType latent = DType::f64;
};
void mla_reference(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, const int64_t* positions,
                   const Pattern& pattern, const MutTensorView& out, const MlaRefOptions& ref = {});
// The gradients of the definition, in plain loops, into f64 tensors: RefPrecision::f64
// accumulates in double (the oracle); RefPrecision::input accumulates in f32 (the baseline
// of the tolerance rule for f32 inputs; stages are not rounded to narrower input types).
MlaGradients mla_backward_reference(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x,
                                    const int64_t* positions, const Pattern& pattern, const TensorView& d_out,
                                    RefPrecision precision = RefPrecision::f64);

// ---- The latent cache ------------------------------------------------------------------
struct MlaCacheConfig {
  int64_t layers = 1;
  int64_t sequences = 1;   // independent sequences (a batch), each with its own length
  int64_t d_c = 512;
  int64_t d_r = 64;
  KvStorage storage = KvStorage::bf16;  // f32 or bf16 (a latent row is read whole, unquantized)
  int64_t max_tokens = 0;  // per sequence: allocated once; 0 starts at kKvInitialTokens and doubles

  // Throws Error naming the field: layers in [1, kMaxKvLayers], sequences in [1,
  // kMaxKvBatch], d_c >= 1, d_r >= 0, d_c + d_r <= kMaxHeadDim, storage f32 or bf16,
  // max_tokens in [0, kMaxSeqLen].
  void validate() const;
  int64_t width() const { return d_c + d_r; }
};

// A latent cache of this config described to kv_size.hpp, before one exists: mla_latent =
// d_c, mla_rope = d_r, one head of d_c + d_r, batch = sequences, the given context (what
// MlaCache::kv_config returns). Validates config.
KvConfig mla_cache_kv_config(const MlaCacheConfig& config, int64_t context);

// Per layer, per token, one row [c (d_c) ; k_r (d_r)] in the storage type; nothing else.
// Each sequence owns one block [layer][capacity][d_c + d_r]. Appending is two steps, as for
// KvCache: append(seq, T) makes room for T tokens, then store(seq, layer, rows) writes
// those T tokens of each layer; reads need every layer stored.
// Accounting: bytes_allocated() is every byte of latent storage, layers * sequences *
// capacity * (d_c + d_r) * element size, which is kv_size's MLA figure:
// bytes_allocated() == kv_total_bytes(kv_config(capacity)) whenever every sequence has
// that capacity (always, with max_tokens).
class MlaCache {
 public:
  explicit MlaCache(const MlaCacheConfig& config);

  const MlaCacheConfig& config() const { return config_; }
  // Tokens appended to seq (its next position). Throws Error naming seq when out of range.
  int64_t length(int64_t seq) const;
  int64_t capacity(int64_t seq) const;
  // Makes room for `tokens` more tokens of seq (growing: doubling, copying the rows held);
  // an Error past max_tokens, or when a layer of the previous append was not stored.
  void append(int64_t seq, int64_t tokens);
  // rows: [T, d_c + d_r] (any float dtype and strides), the latent rows of the T tokens of
  // the last append(), T = length - tokens already stored in this layer; rounded to the
  // storage type (round-to-nearest-even).
  void store(int64_t seq, int64_t layer, const TensorView& rows);
  // The absorbed form's K and V over the sequence's tokens, both into the same storage:
  //   keys   [1, 1, n, d_c + d_r]
  //   values [1, 1, n, d_c], row stride d_c + d_r: K's first d_c values, not a copy.
  // Throws Error when the layer is not fully stored.
  TensorView keys(int64_t seq, int64_t layer) const;
  TensorView values(int64_t seq, int64_t layer) const;
  int64_t bytes_allocated() const;
  // This cache described to kv_size.hpp: mla_latent = d_c, mla_rope = d_r, one head of
  // d_c + d_r, batch = sequences, the given context.
  KvConfig kv_config(int64_t context) const;

 private:
  struct Sequence {
    int64_t length = 0, capacity = 0;
    std::vector<int64_t> stored;         // per layer: tokens written
    std::vector<unsigned char> bytes;    // [layer][capacity][width] in the storage type
  };
  void check_seq(int64_t seq) const;
  void check_layer(int64_t layer) const;
  size_t layer_offset(const Sequence& s, int64_t layer) const;  // bytes to the layer's first row
  MlaCacheConfig config_;
  std::vector<Sequence> seqs_;
};

// ---- Absorbed decode ---------------------------------------------------------------------
// The MQA of the absorbed form over one cached sequence of n tokens: q: [Nq, H, d_c + d_r]
// absorbed queries (q~ above, RoPE applied) of the sequence's newest Nq tokens, query t
// seeing keys i <= n - Nq + t (bottom-right causal); o: [Nq, H, d_c] (o~ above), lse:
// [Nq, H] f32 natural log, or rank 0. `scale` is the MLA's (1 / sqrt(d_nope + d_r)), not
// 1 / sqrt(d_c + d_r). Any dtypes and strides for q and o.
// Kernel: the Nq * H query rows are tiled by 128 and the keys split into blocks of 128
// (decode's tile); each block is read once per row tile from the cache (bf16 rows widened
// to f32 in an L2-resident buffer), and S = Q~ K^T, the online-softmax step and O += P V
// (V = the block's first d_c columns) are decode's Highway kernels over its rows.
// Blocks are grouped into chunks whose size depends only on the shapes; chunks run on
// OpenMP threads and their partial (max, sum, O) are merged in chunk order, so the result
// is bitwise identical for any thread count. FLOPs: 2 Nq H n (2 d_c + d_r) (mla_decode_flops);
// bytes read: n (d_c + d_r) element size (mla_decode_bytes_read).
void mla_decode_attention(const MlaCache& cache, int64_t layer, int64_t seq, const TensorView& q, double scale,
                          const MutTensorView& o, const MutTensorView& lse = {});
double mla_decode_flops(int64_t nq, int64_t heads, int64_t n, int64_t d_c, int64_t d_r);
int64_t mla_decode_bytes_read(const MlaCache& cache, int64_t seq);

// One decode (or chunked-prefill) step of a layer: x: [T, d_model] holds the sequence's
// newest T tokens (append(seq, T) first; their positions are length - T .. length - 1).
// Computes their latent rows [c ; RoPE(x W_KR)] and stores them in `layer`, forms the
// absorbed queries, runs mla_decode_attention (causal) and up-projects: out [T, H, d_v].
void mla_decode(const MlaConfig& cfg, const MlaWeights& w, MlaCache& cache, int64_t layer, int64_t seq,
                const TensorView& x, const MutTensorView& out);

}  // namespace attnkit
