// attnkit/rope.hpp — rotary position embeddings (RoPE, Su et al. 2021) applied in place to
// queries or keys: configuration and validation, a precomputed cos/sin table, the fast
// in-place tensor and row forms, and the plain double-precision reference.
// Not for: frequency-scaling schemes (linear / NTK-by-parts / YaRN / Llama-3.1 "llama3"
// scaling), ALiBi (a score modifier, see attention.hpp), or M-RoPE's multi-axis positions.
// Changing `base` is the only knob; NTK-aware scaling is expressible as a larger base.
//
// Conventions. A head vector x of dimension D has a rotary part x[0, R) and a tail
// x[R, D) that is passed through unchanged (partial rotary, R = rotary_dim <= D, even).
// The rotary part is split into R/2 pairs; pair i turns by the angle
//     theta_i(pos) = pos * inv_freq[i],   inv_freq[i] = base^(-2i / R),   i in [0, R/2).
// The two styles differ only in which channels form pair i:
//   rotate_half (Llama, Mistral, Qwen, GPT-NeoX, phi; HF `rotate_half`):
//     pair i = (x[i], x[i + R/2]). With x1 = x[0, R/2), x2 = x[R/2, R):
//       x' = x * cos + rotate_half(x) * sin,   rotate_half(x) = (-x2, x1),
//     where cos and sin repeat [cos theta_0 .. cos theta_{R/2-1}] over both halves. I.e.
//       x'[i]       = x[i] cos theta_i - x[i + R/2] sin theta_i
//       x'[i + R/2] = x[i + R/2] cos theta_i + x[i] sin theta_i
//   interleaved (GPT-J, Meta's original Llama code, llama.cpp's "normal" rope):
//     pair i = (x[2i], x[2i + 1]), turned as the complex number x[2i] + j x[2i+1]:
//       (x0, x1) -> (x0 cos theta_i - x1 sin theta_i,  x0 sin theta_i + x1 cos theta_i).
// The two are the same rotation up to a permutation of the rotary channels (2i <-> i,
// 2i+1 <-> i + R/2), which is why HF's Llama checkpoints permute W_q and W_k rows.
// Because each pair is a 2-D rotation by an angle linear in pos,
//     <rope(q, m), rope(k, n)> depends on q, k and m - n only,
// and rope preserves the norm of every head vector.
//
// Positions. apply_rope() takes one position per (batch, token): positions[b * N + n]
// for x [B, H, N, D]. Per-sequence positions are what batched decoding, left padding and
// a KV-cache append need (each sequence has its own length); callers whose sequences share
// positions repeat the [N] row B times (B * N int64s, negligible beside x). Every head of
// token (b, n) gets the same position. Positions must lie in [0, 2^31).
//
// Numerics. Angles are computed in double (pos * inv_freq), then cos/sin are rounded to f32
// once, so the table's error does not grow with the position: an f32 angle, as HF computes
// it, is off by up to ~0.005 rad at pos 100000 (measured for R = 128, base 10000). The fast
// path rotates in f32 and rounds to the tensor's dtype once (bf16 and f16 are widened to
// f32, rotated, rounded back).
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "attnkit/tensor.hpp"

namespace attnkit {

enum class RopeStyle : uint8_t {
  rotate_half,  // Llama, Mistral, Qwen, GPT-NeoX, phi: pairs (i, i + R/2)
  interleaved,  // GPT-J, Meta's Llama reference code: pairs (2i, 2i + 1)
};

std::string_view rope_style_name(RopeStyle s);       // "rotate_half", "interleaved"
RopeStyle parse_rope_style(std::string_view name);  // also accepts "neox" / "gptj"; throws Error

// Positions must be below this (the same bound as sequence lengths, shape.hpp).
constexpr int64_t kMaxRopePosition = int64_t{1} << 31;

struct RopeConfig {
  RopeStyle style = RopeStyle::rotate_half;
  // Number of leading channels that rotate; 0 means the whole head (the default).
  // GPT-J: 64 of 256; GPT-NeoX-20B: 24 of 96 (rotary_pct 0.25); phi-2: 32 of 80.
  int64_t rotary_dim = 0;
  double base = 10000.0;  // theta: Llama 2 10000, Llama 3 500000, Qwen2 1e6

  // The rotary dimension for heads of head_dim channels (resolves the 0 default).
  int64_t resolved_rotary_dim(int64_t head_dim) const { return rotary_dim == 0 ? head_dim : rotary_dim; }
  // Throws Error naming the field: head_dim in [1, kMaxHeadDim]; rotary_dim (after the
  // default) even, > 0 and <= head_dim; base finite and > 0.
  void validate(int64_t head_dim) const;
};

// Precomputed cos/sin of every (position, pair) for one config and head dimension, f32,
// laid out [max_pos][R/2] each. Memory: 4 * max_pos * R bytes (cos + sin), e.g. R = 128:
// 4 MiB for 8192 positions, 64 MiB for Llama 3's 131072. Bounded: a position at or beyond
// max_pos() is an Error naming it; reserve() grows the table (computing only the new rows).
// Reads are thread-safe; reserve() must not run concurrently with any use of the cache.
class RopeCache {
 public:
  // Throws Error naming the field (see RopeConfig::validate) or max_pos (in [0, 2^31]).
  RopeCache(const RopeConfig& config, int64_t head_dim, int64_t max_pos);

  // Grows the table to cover positions [0, max_pos); never shrinks. Invalidates pointers
  // returned by cos() / sin().
  void reserve(int64_t max_pos);

  const RopeConfig& config() const { return config_; }
  RopeStyle style() const { return config_.style; }
  int64_t head_dim() const { return head_dim_; }
  int64_t rotary_dim() const { return rotary_dim_; }
  int64_t max_pos() const { return max_pos_; }
  size_t bytes() const { return (cos_.size() + sin_.size()) * sizeof(float); }

  // cos theta_i(pos) and sin theta_i(pos) for i in [0, R/2); pos in [0, max_pos()),
  // asserted, not checked: these are for kernels that validated their positions.
  const float* cos(int64_t pos) const {
    assert(pos >= 0 && pos < max_pos_);
    return cos_.data() + pos * (rotary_dim_ / 2);
  }
  const float* sin(int64_t pos) const {
    assert(pos >= 0 && pos < max_pos_);
    return sin_.data() + pos * (rotary_dim_ / 2);
  }

  // Throws Error "<what> (<pos>) ..." unless 0 <= pos < max_pos(); `what` names the
  // argument, e.g. "positions[b=1, n=7]".
  void check_position(int64_t pos, std::string_view what) const;

 private:
  RopeConfig config_;
  int64_t head_dim_ = 0;
  int64_t rotary_dim_ = 0;
  int64_t max_pos_ = 0;
  std::vector<float> cos_, sin_;  // [max_pos][R/2]
};

// Rotates x in place. x: [B, H, N, D] with D == cache.head_dim(), any dtype, any strides
// (x must not overlap itself); positions: [B, N] row-major, one per (sequence, token),
// may be null when x is empty. Contiguous-row f32 takes the fast row kernel directly;
// other dtypes and strides gather each row's rotary part into f32 (f64 into double),
// rotate and scatter back. Channels [R, D) are never read or written. All positions are
// validated before any element changes, so an Error leaves x untouched.
void apply_rope(const RopeCache& cache, const MutTensorView& x, const int64_t* positions);

// Rotates one contiguous f32 head vector in place: row: [d], d == cache.head_dim(),
// 0 <= pos < cache.max_pos(). For fused kernels (e.g. a KV-cache append rotating a key as
// it is stored). Throws Error naming d or pos; the checks are two compares per row.
void rope_row(const RopeCache& cache, float* row, int64_t d, int64_t pos);

// One position's cos / sin computed directly, without a table: c, s: [R/2], bitwise equal
// to RopeCache's row for pos. For streams whose positions outgrow any table (a rolling KV
// cache a million tokens in). Throws Error naming the field or pos (in [0, 2^31)).
void rope_angles(const RopeConfig& config, int64_t head_dim, int64_t pos, float* c, float* s);
// Rotates a contiguous f32 head vector row: [head_dim] in place by rope_angles' c, s.
void rope_row_angles(const RopeConfig& config, int64_t head_dim, const float* c, const float* s, float* row);

// The oracle: the same rotation computed literally in double from the config (no table),
// reading and writing through the view's get/set. x: [B, H, N, D], positions: [B, N], as
// for apply_rope; positions must be in [0, 2^31). Exact up to double rounding for f64
// tensors; for other dtypes the result is rounded once to the dtype on store.
void rope_reference(const RopeConfig& config, const MutTensorView& x, const int64_t* positions);

}  // namespace attnkit
